"""N-CREATE, N-SET, N-GET and N-ACTION of the UPS SOP Classes, translated to the core.

Each handler decodes the request, calls one :class:`~worklist.service.WorklistService`
method as ``Actor(Protocol.DIMSE, calling AE title)`` and turns the result into a
DIMSE status; every error becomes a status in :func:`dimse.replies.guarded`.

Context policy (PS3.4 CC.3.1): every N-* request names the UPS **Push** SOP Class
whatever presentation context it travels on.  Each operation is accepted on *any*
negotiated UPS context (Push, Pull, Watch, Event or Query), not only on the contexts
whose Table CC.2-x lists it: the operation, not the context, decides what happens, and
SCUs that open only a Pull context for everything keep working.  For tolerance with
older toolkits that name the context's own SOP Class instead of Push (pynetdicom before
1.5.2, fo-dicom #1322), that class is accepted too; any other is 0x0118.
"""

from __future__ import annotations

from enum import IntEnum
from typing import Any

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset

from worklist import errors
from worklist.service import Actor, WorklistService
from worklist.status import Status
from worklist.values import UPS_PUSH, Protocol

from .decode import decode_dataset
from .replies import guarded, reply, warning_reply

__all__ = ["UPSHandlers", "ActionType", "actor_of", "select_attributes"]

_NO_SUCH_SOP_CLASS = Status.NO_SUCH_SOP_CLASS
_UNRECOGNIZED_OPERATION = Status.UNRECOGNIZED_OPERATION
_TRANSACTION_UID = 0x00081195


class ActionType(IntEnum):
    """Action Type ID (0000,1008) of the UPS N-ACTIONs (PS3.4 Tables CC.2.1-1..CC.2.3-3)."""

    CHANGE_STATE = 1
    """1: Change UPS State (PS3.4 CC.2.1)."""
    REQUEST_CANCEL = 2
    """2: Request UPS Cancel (PS3.4 CC.2.2)."""
    SUBSCRIBE = 3
    """3: Subscribe to Receive UPS Event Reports (PS3.4 CC.2.3)."""
    UNSUBSCRIBE = 4
    """4: Unsubscribe from Receiving UPS Event Reports."""
    SUSPEND_GLOBAL = 5
    """5: Suspend Global Subscription."""


def actor_of(event: Any) -> Actor:
    """The requester, recorded in the workitem history: its calling AE title."""
    return Actor(Protocol.DIMSE, str(event.assoc.requestor.ae_title).strip())


def _check_sop_class(uid: Any, event: Any) -> Dataset | None:
    """``None`` when ``uid`` is acceptable (see the module docstring), else a reply."""
    uid = str(uid or "")
    if uid in (UPS_PUSH, str(event.context.abstract_syntax)):
        return None
    return reply(_NO_SUCH_SOP_CLASS, f"SOP Class must be UPS Push {UPS_PUSH} (PS3.4 CC.3.1)")


def _instance_uid(value: Any, what: str) -> str:
    uid = str(value or "").strip()
    if not uid:
        raise errors.MissingAttribute(f"{what} is missing", attribute=what)
    return uid


def select_attributes(ds: Dataset, tags: list[int]) -> tuple[Dataset, list[int]]:
    """N-GET: the attributes ``tags`` of ``ds`` (all of them when ``tags`` is empty),
    never the Transaction UID (PS3.4 CC.2.7.3), with Specific Character Set whenever
    the workitem has one.  A requested attribute the workitem lacks is returned
    zero-length; tags unknown to the data dictionary are left out and returned."""
    out = Dataset()
    unknown: list[int] = []
    if "SpecificCharacterSet" in ds:
        out.SpecificCharacterSet = ds.SpecificCharacterSet
    if not tags:
        for elem in ds:
            if elem.tag != _TRANSACTION_UID:
                out.add(elem)
        return out, unknown
    for tag in tags:
        if tag == _TRANSACTION_UID:
            continue
        if tag in ds:
            out.add(ds[tag])
            continue
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            unknown.append(tag)
            continue
        out.add_new(tag, vr.split(" or ")[0], None)
    return out, unknown


class UPSHandlers:
    """The N-* event handlers over one service."""

    def __init__(self, service: WorklistService) -> None:
        self.service = service

    # -- N-CREATE (PS3.4 CC.2.5) ---------------------------------------------------
    @guarded("N-CREATE")
    def n_create(self, event: Any) -> tuple[Any, Dataset | None]:
        refused = _check_sop_class(event.request.AffectedSOPClassUID, event)
        if refused is not None:
            return refused, None
        # PS3.4 CC.2.5.1: the SCU gives the UPS Instance UID as Affected SOP Instance UID.
        uid = _instance_uid(event.request.AffectedSOPInstanceUID,
                            "Affected SOP Instance UID (0000,1000)")
        ds = decode_dataset(lambda: event.attribute_list, "Attribute List")
        result = self.service.create(ds, uid, actor_of(event))
        return warning_reply(result.warning), None

    # -- N-SET (PS3.4 CC.2.6) ------------------------------------------------------
    @guarded("N-SET")
    def n_set(self, event: Any) -> tuple[Any, Dataset | None]:
        refused = _check_sop_class(event.request.RequestedSOPClassUID, event)
        if refused is not None:
            return refused, None
        uid = _instance_uid(event.request.RequestedSOPInstanceUID,
                            "Requested SOP Instance UID (0000,1001)")
        ds = decode_dataset(lambda: event.modification_list, "Modification List")
        # PS3.4 CC.2.6.2: the Transaction UID travels in the dataset; the core reads it there.
        warning = self.service.update(uid, ds, None, actor_of(event))
        return warning_reply(warning), None

    # -- N-GET (PS3.4 CC.2.7) ------------------------------------------------------
    @guarded("N-GET")
    def n_get(self, event: Any) -> tuple[Any, Dataset | None]:
        refused = _check_sop_class(event.request.RequestedSOPClassUID, event)
        if refused is not None:
            return refused, None
        uid = _instance_uid(event.request.RequestedSOPInstanceUID,
                            "Requested SOP Instance UID (0000,1001)")
        try:
            tags = [int(t) for t in event.attribute_identifiers]
        except Exception as exc:
            raise errors.InvalidAttributeValue(
                f"The Attribute Identifier List cannot be decoded: {exc}") from None
        out, unknown = select_attributes(self.service.retrieve(uid), tags)
        if unknown:
            names = ", ".join(f"({t >> 16:04X},{t & 0xFFFF:04X})" for t in unknown)
            # PS3.4 Table CC.2.7-1: 0x0001, requested optional attributes not supported.
            return reply(Status.OPTIONAL_ATTRIBUTES_NOT_SUPPORTED,
                         f"Not returned (unknown attributes): {names}"), out
        return int(Status.SUCCESS), out

    # -- N-ACTION (PS3.4 CC.2.1, CC.2.2, CC.2.3) -----------------------------------
    @guarded("N-ACTION")
    def n_action(self, event: Any) -> tuple[Any, Dataset | None]:
        refused = _check_sop_class(event.request.RequestedSOPClassUID, event)
        if refused is not None:
            return refused, None
        action = event.action_type
        if action in (ActionType.SUBSCRIBE, ActionType.UNSUBSCRIBE,
                      ActionType.SUSPEND_GLOBAL):
            return self._subscription(event, action)
        if action not in (ActionType.CHANGE_STATE, ActionType.REQUEST_CANCEL):
            return reply(Status.NO_SUCH_ACTION,
                         f"No such Action Type ID {action}: UPS has 1 to 5"), None
        uid = _instance_uid(event.request.RequestedSOPInstanceUID,
                            "Requested SOP Instance UID (0000,1001)")
        info = decode_dataset(lambda: event.action_information, "Action Information")
        if action == ActionType.REQUEST_CANCEL:
            warning = self.service.request_cancel(uid, info, actor_of(event))
            return warning_reply(warning), None
        # PS3.4 Table CC.2.1-1: Procedure Step State and Transaction UID are both 1/1.
        state = str(info.get("ProcedureStepState", "") or "").strip()
        transaction_uid = str(info.get("TransactionUID", "") or "").strip()
        if not state:
            raise errors.InvalidArgumentValue(
                "Procedure Step State is missing from the Action Information",
                attribute="ProcedureStepState")
        if not transaction_uid:
            raise errors.InvalidArgumentValue(
                "Transaction UID is missing from the Action Information",
                attribute="TransactionUID")
        warning = self.service.change_state(uid, state, transaction_uid, actor_of(event))
        return warning_reply(warning), None

    def _subscription(self, event: Any, action: int) -> tuple[Any, Dataset | None]:
        """N-ACTION 3, 4, 5 (PS3.4 CC.2.3, Tables CC.2.3-1..3): the target is a workitem
        or the well-known global (filtered) subscription UID."""
        uid = _instance_uid(event.request.RequestedSOPInstanceUID,
                            "Requested SOP Instance UID (0000,1001)")
        info = decode_dataset(lambda: event.action_information, "Action Information")
        if info is None:
            info = Dataset()
        elem = info.get((0x0074, 0x1234))
        if elem is not None and elem.VM > 1:  # a backslash in the value: VM is 1
            raise errors.InvalidArgumentValue("Receiving AE (0074,1234) must be one AE title",
                                              attribute="ReceivingAE")
        receiving_ae = str(elem.value or "") if elem is not None else ""
        if not receiving_ae.strip():
            raise errors.InvalidArgumentValue("Receiving AE (0074,1234) is missing from the "
                                              "Action Information", attribute="ReceivingAE")
        actor = actor_of(event)
        if action == ActionType.SUBSCRIBE:
            lock_text = str(info.get("DeletionLock", "") or "").strip().upper()
            if lock_text not in ("TRUE", "FALSE"):
                raise errors.InvalidArgumentValue(
                    "Deletion Lock (0074,1230) must be TRUE or FALSE", attribute="DeletionLock")
            # Table CC.2.3-1: the Matching Keys (filtered global only) travel as the other
            # attributes of the Action Information, as in a C-FIND identifier.
            keys = Dataset()
            for elem in info:
                if elem.tag not in (0x00741234, 0x00741230, 0x00080005):
                    keys.add(elem)
            warning = self.service.subscribe(uid, receiving_ae, lock_text == "TRUE",
                                             keys if len(keys) else None, actor)
            return warning_reply(warning), None
        try:
            if action == ActionType.UNSUBSCRIBE:
                self.service.unsubscribe(uid, receiving_ae, actor)
            else:
                self.service.suspend_global(uid, receiving_ae, actor)
        except errors.NoSuchSubscription:
            # PS3.4 CC.2.3.1: in "Not Subscribed" the request changes nothing; the
            # state table lists no failure for it.
            pass
        return int(Status.SUCCESS), None

    # -- N-EVENT-REPORT ------------------------------------------------------------
    def n_event_report(self, event: Any) -> tuple[Any, Dataset | None]:
        """The worklist sends UPS events; it does not receive them."""
        return reply(_UNRECOGNIZED_OPERATION,
                     "This SCP sends UPS event reports; it does not accept them"), None
