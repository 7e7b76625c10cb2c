"""The service layer: every operation on workitems, whatever path it comes by.

DIMSE, UPS-RS, routing rules and command-line actions all call these functions, so
each validates the same way, is recorded in the same append-only history, and emits
the same events.  Each call is one unit of work: it commits whole or not at all.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from . import errors, iod, matching
from .dicomjson import (CheckedJson, attribute_name, check_json, check_uid, dataset_to_json_dict,
                        dumps, first, has_value, put, sorted_json, tag_key, values)
from .cache import PageCache
from .delivery import EventHub
from .errors import Warning
from .events import EventPublisher, EventType, NullPublisher, UPSEvent
from .orthanc import ImageStore, output_references
from .results import ResultOperations
from .statemachine import Action, decide
from .status import Status
from .store import RawJson, Store, WorkitemRow, index_fields
from .subscriptions import SubscriptionOperations, recipients, write_outbox
from .values import UPS_PUSH, ProcedureStepStateValues as State, Protocol

__all__ = ["Actor", "WorklistService", "SearchResult", "CreateResult", "now_dt"]

log = logging.getLogger("worklist.service")

Json = dict[str, Any]
_CAS_RETRIES = 20
# PS3.16 CID 9300 / DCM 110513, the default reason when a cancellation gives none.
DEFAULT_DISCONTINUATION_REASON = ("110513", "DCM", "Discontinued for unspecified reason")
_K = tag_key


@dataclass(frozen=True)
class Actor:
    """Who asks: the protocol and the calling AE title or user name."""

    protocol: Protocol
    name: str

    @classmethod
    def internal(cls, name: str = "worklist") -> Actor:
        return cls(Protocol.INTERNAL, name)

    @property
    def ae_title(self) -> str:
        """What the Requesting AE (0074,1236) of a cancel request says (PS3.4 CC.2.4.2):
        the calling AE over DIMSE; over UPS-RS, which has no AE title, the user name or,
        for a loopback client, its address; at most 16 characters, no backslash."""
        name = self.name.removeprefix("loopback:").replace("\\", "/")
        return "".join(ch for ch in name if ch.isprintable())[:16].strip() or "UNKNOWN"


@dataclass(frozen=True)
class CreateResult:
    uid: str
    warning: Warning | None = None


@dataclass(frozen=True)
class SearchResult:
    items: list[str]
    """The matching workitems as DICOM JSON objects (text), never with a Transaction UID."""
    remaining: int
    """How many more matches lie beyond this page."""


def now_dt(clock: Callable[[], _dt.datetime]) -> str:
    """The current time as a DICOM DT with its UTC offset."""
    t = clock()
    return t.strftime("%Y%m%d%H%M%S.%f") + t.strftime("%z")


def _utc_now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc)


def _as_json(ds: Dataset | Json) -> Json:
    """The request's dataset as a checked DICOM JSON object (a copy)."""
    if isinstance(ds, Dataset):
        return check_json(dataset_to_json_dict(ds))
    if isinstance(ds, CheckedJson):
        return ds  # fresh from parse_json for this request: ours to change
    return check_json(json.loads(json.dumps(ds)))


def _encode(ds: Json) -> str:
    text = dumps(sorted_json(ds))
    if not text.isascii() and first(ds, "SpecificCharacterSet") != "ISO_IR 192":
        # Values are Unicode in JSON; say so for DIMSE peers (PS3.5 6.1.2.5.3).
        put(ds, "SpecificCharacterSet", "CS", "ISO_IR 192")
        text = dumps(sorted_json(ds))
    return text


class WorklistService(SubscriptionOperations, ResultOperations):
    """The UPS operations over one store (subscriptions: :mod:`worklist.subscriptions`;
    result checks and the result index: :mod:`worklist.results`)."""

    def __init__(self, store: Store, *, events: EventPublisher | None = None,
                 default_worklist_label: str = "default",
                 clock: Callable[[], _dt.datetime] = _utc_now,
                 fill_cancel_defaults: bool = True,
                 image_store: ImageStore | None = None,
                 page_cache_bytes: int = 32 << 20,
                 known_ae: Callable[[str], bool] | None = None,
                 grant_deletion_locks: bool = True) -> None:
        self.store = store
        self.known_ae = known_ae or (lambda ae: False)
        """Whether events can reach ``ae`` over DIMSE (its address is configured)."""
        self.grant_deletion_locks = grant_deletion_locks
        self.hub = EventHub(self)
        """Wakes the event channels when the outbox has grown (worklist.delivery)."""
        self.image_store = image_store  # issue 5: outputs verified at completion
        self.events = events or NullPublisher()
        self.default_worklist_label = default_worklist_label
        self.clock = clock
        self.fill_cancel_defaults = fill_cancel_defaults
        self.pages = PageCache(max_bytes=page_cache_bytes)

    # -- helpers -----------------------------------------------------------------
    def _now(self) -> str:
        return now_dt(self.clock)

    def _load(self, conn: Any, uid: str) -> WorkitemRow:
        row = self.store.get(conn, uid)
        if row is None:
            if self.store.is_tombstoned(conn, uid):
                raise errors.WorkitemGone(f"Workitem {uid} existed but has been deleted after "
                                          "its retention period")
            raise errors.NoSuchWorkitem(f"No workitem with UID {uid} is managed here")
        return row

    def _emit(self, conn: Any, events: list[UPSEvent]) -> None:
        """Write ``events`` to the outbox in the transaction of their change, each with
        its recipients as the subscriptions stand now (worklist.subscriptions)."""
        if not events:
            return
        seen: dict[str, tuple[int | None, Json | None]] = {}

        def loader(uid: str) -> Callable[[], tuple[int | None, Json | None]]:
            def load() -> tuple[int | None, Json | None]:
                if uid not in seen:  # the workitem as this transaction leaves it
                    row = self.store.get(conn, uid)
                    seen[uid] = ((row.id, json.loads(row.dataset)) if row is not None
                                 else (None, None))
                return seen[uid]
            return load

        to: dict[str, list[str]] = {}  # one lookup per workitem, not per event
        for event in events:
            if event.uid not in to:
                to[event.uid] = recipients(conn, event.uid, loader(event.uid))
        rows = [(event, to[event.uid]) for event in events]
        # The outbox time is the wall clock, not self.clock: it records when the event
        # was written, and must not take a tick from the clock of the change.
        write_outbox(conn, now_dt(_utc_now), rows)

    def _publish(self, events: list[UPSEvent]) -> None:
        if not events:
            return
        self.hub.wake()
        try:
            self.events.publish(events)
        except Exception:  # delivery never fails the committed change
            log.exception("event publisher failed")

    def _history(self, conn: Any, row_uid: str, actor: Actor, action: str, before: str | None,
                 after: str | None, changes: dict[str, Any], now: str) -> None:
        self.store.append_history(conn, uid=row_uid, at=now, actor=actor.name,
                                  protocol=actor.protocol.value, action=action,
                                  state_before=before, state_after=after, changes=changes)

    # -- create (N-CREATE, PS3.4 CC.2.5; UPS-RS Create, PS3.18 11.4) ------------------
    def create(self, ds: Dataset | Json, uid: str | None, actor: Actor) -> CreateResult:
        """Create a SCHEDULED workitem.  ``uid`` comes from the command or URL; when
        absent, the dataset's SOP Instance UID is used."""
        ds = _as_json(ds)
        body_uid = str(first(ds, "SOPInstanceUID") or "") or None
        if uid and body_uid and uid != body_uid:
            raise errors.InvalidAttributeValue(
                f"The SOP Instance UID in the dataset ({body_uid}) differs from the workitem "
                f"UID of the request ({uid})", attribute="SOPInstanceUID")
        uid = uid or body_uid
        if not uid:
            raise errors.MissingAttribute("The workitem UID is missing: give it in the request "
                                          "(?workitem=UID) or as SOP Instance UID in the dataset",
                                          attribute="SOPInstanceUID")
        check_uid(uid, "Workitem UID")
        sop_class = str(first(ds, "SOPClassUID") or "")
        if sop_class and sop_class != UPS_PUSH:
            raise errors.InvalidAttributeValue(
                f"SOP Class UID is {sop_class}; every workitem is a UPS Push instance "
                f"({UPS_PUSH}, PS3.4 CC.3.1)", attribute="SOPClassUID")
        iod.check_create(ds)
        now = self._now()
        ds.pop(_K("TransactionUID"), None)  # empty at creation; never stored in the dataset
        put(ds, "SOPClassUID", "UI", UPS_PUSH)
        put(ds, "SOPInstanceUID", "UI", uid)
        # PS3.4 Table CC.2.5-3: Worklist Label is 2/1, the SCP fills it when empty.
        if not has_value(ds, "WorklistLabel"):
            put(ds, "WorklistLabel", "LO", self.default_worklist_label)
        put(ds, "ScheduledProcedureStepModificationDateTime", "DT", now)
        text = _encode(ds)
        fields = index_fields(ds)
        with self.store.transaction(write=True) as conn:
            if self.store.is_tombstoned(conn, uid):
                raise errors.DuplicateWorkitem(f"Workitem UID {uid} was used by a deleted "
                                               "workitem and may not be reused")
            self.store.insert(conn, uid, State.SCHEDULED.value, fields, text, now)
            self._history(conn, uid, actor, "CREATE", None, State.SCHEDULED.value,
                          RawJson('{"dataset":' + text + "}"), now)
            label = fields.columns["worklist_label"]
            events = [UPSEvent(EventType.UPS_STATE_REPORT, uid, _state_report(ds), label,
                               created=True)]
            assigned = _assigned(ds)
            if assigned is not None:
                events.append(UPSEvent(EventType.UPS_ASSIGNED, uid, assigned, label))
            self._emit(conn, events)
        self._publish(events)
        return CreateResult(uid)

    # -- retrieve (N-GET, PS3.4 CC.2.7; UPS-RS Retrieve, PS3.18 11.5) ---------------
    def retrieve_json(self, uid: str) -> str:
        """The whole workitem as DICOM JSON text, without the Transaction UID."""
        with self.store.transaction() as conn:
            return self._load(conn, uid).dataset

    def retrieve(self, uid: str) -> Dataset:
        """The whole workitem as a Dataset, without the Transaction UID."""
        return Dataset.from_json(self.retrieve_json(uid))

    def state_of(self, uid: str) -> str:
        with self.store.transaction() as conn:
            return self._load(conn, uid).state

    def history(self, uid: str) -> list[dict[str, Any]]:
        """The append-only history of a workitem, oldest first."""
        with self.store.transaction() as conn:
            rows = self.store.history(conn, uid)
            if not rows:
                self._load(conn, uid)
            return rows

    # -- the compare-and-set loop shared by every change -----------------------------
    def _mutate(self, uid: str, step: Callable[[Any, WorkitemRow, str], Any]) -> Any:
        """Run ``step(conn, row, now)`` in a write transaction, re-reading the row when
        another writer moved it first (PostgreSQL; SQLite writers are serialised)."""
        for _ in range(_CAS_RETRIES):
            with self.store.transaction(write=True) as conn:
                row = self._load(conn, uid)
                result = step(conn, row, self._now())
                if result is not _RETRY:
                    if isinstance(result, tuple):
                        self._emit(conn, result[1])
                    break
        else:
            raise errors.ProcessingFailure(f"Workitem {uid} is being changed by many clients at "
                                           "once; try again")
        events = result[1] if isinstance(result, tuple) else []
        self._publish(events)
        return result[0] if isinstance(result, tuple) else result

    # -- update (N-SET, PS3.4 CC.2.6; UPS-RS Update, PS3.18 11.6) --------------------
    def update(self, uid: str, changes: Dataset | Json, transaction_uid: str | None,
               actor: Actor) -> Warning | None:
        """Set attributes; sequences are replaced whole (PS3.4 CC.2.6.2)."""
        changes = _as_json(changes)
        if _K("TransactionUID") in changes:
            body_value = str(first(changes, "TransactionUID") or "") or None
            del changes[_K("TransactionUID")]
            if transaction_uid and body_value and body_value != transaction_uid:
                raise errors.InvalidRequest("The Transaction UID in the dataset differs from the "
                                            "one given with the request")
            transaction_uid = transaction_uid or body_value
        iod.check_update(changes)
        changes.pop(_K("ScheduledProcedureStepModificationDateTime"), None)

        def step(conn: Any, row: WorkitemRow, now: str) -> Any:
            decide(row.state, Action.UPDATE, transaction_uid, row.transaction_uid)
            ds = json.loads(row.dataset)
            for kw in ("SOPClassUID", "SOPInstanceUID"):
                if _K(kw) in changes and values(changes, kw) != values(ds, kw):
                    raise errors.NoSuchAttribute(f"{kw} cannot be changed by an update",
                                                 attribute=kw)
            before = {key: ds.get(key) for key in changes}
            ds.update(changes)
            if not has_value(ds, "WorklistLabel"):
                put(ds, "WorklistLabel", "LO", self.default_worklist_label)
            put(ds, "ScheduledProcedureStepModificationDateTime", "DT", now)
            text = _encode(ds)
            fields = index_fields(ds)
            if not self.store.compare_and_set(conn, row, state=row.state,
                                              transaction_uid=row.transaction_uid, dataset=text,
                                              fields=fields, now=now):
                return _RETRY
            self._history(conn, uid, actor, "UPDATE", row.state, row.state,
                          {"set": changes, "before": before}, now)
            return None, _update_events(uid, changes, ds, fields)

        return self._mutate(uid, step)

    # -- change state (N-ACTION 1, PS3.4 CC.2.1; UPS-RS Change State, PS3.18 11.7) ---
    def change_state(self, uid: str, state: str, transaction_uid: str | None,
                     actor: Actor) -> Warning | None:
        """Claim (IN PROGRESS), complete or cancel a workitem."""
        try:
            action = Action(state)
        except ValueError:
            raise errors.InvalidArgumentValue(
                f"'{state}' is not a Procedure Step State: use IN PROGRESS, COMPLETED or "
                "CANCELED", attribute="ProcedureStepState") from None
        if action in (Action.UPDATE, Action.REQUEST_CANCEL):
            raise errors.InvalidArgumentValue(f"'{state}' is not a Procedure Step State")
        if transaction_uid:
            check_uid(transaction_uid, "Transaction UID")
        # issue 5 point 5: outputs verified in the image store before COMPLETED (begin)
        verified = (self._verify_outputs(uid, transaction_uid)
                    if action is Action.COMPLETED and self.image_store is not None else None)
        # (end)
        # issue 6 points 5-6: SEG/SR outputs read (metadata, outside any write transaction),
        # checked and indexed in the transaction that completes the workitem
        fetched = self._fetch_results(uid) if verified is not None else None

        def step(conn: Any, row: WorkitemRow, now: str) -> Any:
            outcome = decide(row.state, action, transaction_uid, row.transaction_uid)
            if outcome.warning is not None:
                return _warning(outcome.warning), []
            assert outcome.next_state is not None
            ds = json.loads(row.dataset)
            filled = None
            if outcome.next_state is State.CANCELED and self.fill_cancel_defaults:
                filled = _fill_cancel(ds, now)
            if outcome.check_final_state:
                iod.check_final_state(ds, outcome.next_state.value)
            if verified is not None:  # issue 5: outputs changed since verified? check again
                self._check_outputs(ds, verified)
            records = self._check_results(conn, uid, ds, fetched) if fetched is not None else []
            put(ds, "ProcedureStepState", "CS", outcome.next_state.value)
            put(ds, "ScheduledProcedureStepModificationDateTime", "DT", now)
            new_tx = transaction_uid if action is Action.IN_PROGRESS else row.transaction_uid
            if not self.store.compare_and_set(conn, row, state=outcome.next_state.value,
                                              transaction_uid=new_tx, dataset=_encode(ds),
                                              fields=None, now=now):
                return _RETRY
            if records:  # issue 6: indexed if and only if the workitem completes
                self._index_results(conn, uid, ds, records, now)
            changes: dict[str, Any] = {"ProcedureStepState": outcome.next_state.value}
            if filled:
                changes["filled"] = filled
            self._history(conn, uid, actor, "CHANGE STATE", row.state,
                          outcome.next_state.value, changes, now)
            return None, [UPSEvent(EventType.UPS_STATE_REPORT, uid, _state_report(ds),
                                   first(ds, "WorklistLabel"))]

        return self._mutate(uid, step)

    # -- issue 5 point 5: outputs verified at completion (begin) ------------------------
    def _verify_outputs(self, uid: str, transaction_uid: str | None) -> set[str]:
        """Before a change to COMPLETED: every instance in the Output Information
        Sequence must be in the image store, else C304 naming the missing UIDs; an
        unreachable store gives ServiceUnavailable (0110 / 503, retryable).  The store is
        asked outside any write transaction; the state checks come first so a wrong
        Transaction UID still gets its own answer (C301, C310...)."""
        with self.store.transaction() as conn:
            row = self._load(conn, uid)
        outcome = decide(row.state, Action.COMPLETED, transaction_uid, row.transaction_uid)
        if outcome.warning is not None or outcome.next_state is None:
            return set()
        ds = json.loads(row.dataset)
        if outcome.check_final_state:
            iod.check_final_state(ds, outcome.next_state.value)
        return self._check_outputs(ds, set())

    def _check_outputs(self, ds: Json, verified: set[str]) -> set[str]:
        refs = [r for r in output_references(ds) if r[2] not in verified]
        if not refs:
            return verified
        assert self.image_store is not None
        missing = self.image_store.missing_instances(refs)
        if missing:
            raise errors.FinalStateRequirementsNotMet(
                "The Output Information Sequence references instances that are not in the "
                f"image store: {', '.join(missing)}",
                attribute="OutputInformationSequence")
        return verified | {r[2] for r in refs}
    # -- (end) ------------------------------------------------------------------------

    # -- request cancel (N-ACTION 2, PS3.4 CC.2.2; UPS-RS 11.8) ----------------------
    def request_cancel(self, uid: str, info: Dataset | Json | None,
                       actor: Actor) -> Warning | None:
        """Ask for cancellation.  Success means "request accepted" (PS3.4 CC.2.2.3)."""
        info = _as_json(info or {})
        allowed = {_K(k) for k in ("ReasonForCancellation",
                                   "ProcedureStepDiscontinuationReasonCodeSequence",
                                   "ContactURI", "ContactDisplayName", "SpecificCharacterSet")}
        extra = [k for k in info if k not in allowed]
        if extra:
            raise errors.InvalidArgumentValue(
                f"A cancellation request may carry only Reason For Cancellation, Procedure "
                f"Step Discontinuation Reason Code Sequence, Contact URI and Contact Display "
                f"Name, not {', '.join(attribute_name(int(k, 16)) for k in extra)}",
                attribute=extra[0])

        def step(conn: Any, row: WorkitemRow, now: str) -> Any:
            outcome = decide(row.state, Action.REQUEST_CANCEL, None, row.transaction_uid)
            if outcome.warning is not None:
                return _warning(outcome.warning), []
            if outcome.next_state is None:
                # IN PROGRESS: record the request; its performer is told by event.
                if not self.store.compare_and_set(conn, row, state=row.state,
                                                  transaction_uid=row.transaction_uid,
                                                  dataset=None, fields=None, now=now,
                                                  cancel_requested=True):
                    return _RETRY
                self._history(conn, uid, actor, "REQUEST CANCEL", row.state, row.state,
                              {"request": info}, now)
                attrs = dict(info)
                put(attrs, "RequestingAE", "AE", actor.ae_title)
                return None, [UPSEvent(EventType.UPS_CANCEL_REQUESTED, uid, sorted_json(attrs),
                                       None)]
            # SCHEDULED: PS3.4 CC.2.2.3, the SCP cancels it itself, through IN PROGRESS.
            ds = json.loads(row.dataset)
            _fill_cancel(ds, now, info)
            iod.check_final_state(ds, State.CANCELED.value)
            put(ds, "ProcedureStepState", "CS", State.CANCELED.value)
            put(ds, "ScheduledProcedureStepModificationDateTime", "DT", now)
            if not self.store.compare_and_set(conn, row, state=State.CANCELED.value,
                                              transaction_uid=None, dataset=_encode(ds),
                                              fields=None, now=now, cancel_requested=True):
                return _RETRY
            self._history(conn, uid, actor, "REQUEST CANCEL", row.state, State.CANCELED.value,
                          {"request": info}, now)
            label = first(ds, "WorklistLabel")
            in_progress = dict(ds)
            put(in_progress, "ProcedureStepState", "CS", State.IN_PROGRESS.value)
            return None, [UPSEvent(EventType.UPS_STATE_REPORT, uid, _state_report(in_progress),
                                   label),
                          UPSEvent(EventType.UPS_STATE_REPORT, uid, _state_report(ds), label)]

        return self._mutate(uid, step)

    # -- search (C-FIND, PS3.4 CC.2.8; UPS-RS Search, PS3.18 11.9) ------------------
    def search(self, query: matching.Query, *, offset: int = 0, limit: int = 100) -> SearchResult:
        """One page of matches in creation order and how many more there are.  A page
        read while the database has not changed since is served from the page cache."""
        def compute() -> SearchResult:
            with self.store.transaction() as conn:
                items, remaining = self.store.search(conn, query, offset=offset, limit=limit)
            return SearchResult(items, remaining)

        return self.pages.get_or_compute((query, offset, limit), self.store.version(), compute,
                                         lambda r: sum(map(len, r.items)))

    def iter_search(self, query: matching.Query, *, first_batch: int = 16,
                    batch: int = 500) -> Iterator[str]:
        """Every match as DICOM JSON text, in creation order, in one pass (C-FIND).

        Each batch is its own short read transaction, so a long C-FIND never holds the
        database; keyset paging means a change between batches skips or repeats nothing.
        """
        after, size = 0, first_batch
        while True:
            with self.store.transaction() as conn:
                items, after_next = self.store.scan(conn, query, after_id=after, batch=size)
            yield from items
            if after_next is None:
                return
            after, size = after_next, batch


_RETRY = object()


def _warning(status: Status) -> Warning:
    return Warning(status, {
        Status.ALREADY_COMPLETED: "The UPS is already in the requested state of COMPLETED.",
        Status.ALREADY_CANCELED: "The UPS is already in the requested state of CANCELED.",
    }[status])


def _code_item(value: str, scheme: str, meaning: str) -> Json:
    item: Json = {}
    put(item, "CodeValue", "SH", value)
    put(item, "CodingSchemeDesignator", "SH", scheme)
    put(item, "CodeMeaning", "LO", meaning)
    return item


def _fill_cancel(ds: Json, now: str, info: Json | None = None) -> list[str]:
    """PS3.4 CC.2.5.1.1 Final State "X" attributes of a CANCELED UPS, filled when absent
    (documented: Cancellation DateTime = now, reason DCM 110513 unless one was given)."""
    filled = []
    items = values(ds, "ProcedureStepProgressInformationSequence")
    if not items:
        items = [{}]
        put(ds, "ProcedureStepProgressInformationSequence", "SQ", *items)
    item = items[0]
    if info:
        for kw in ("ReasonForCancellation", "ProcedureStepDiscontinuationReasonCodeSequence"):
            if has_value(info, kw):
                item[_K(kw)] = info[_K(kw)]
        if has_value(info, "ContactURI"):
            contact = {_K("ContactURI"): info[_K("ContactURI")]}
            if has_value(info, "ContactDisplayName"):
                contact[_K("ContactDisplayName")] = info[_K("ContactDisplayName")]
            put(item, "ProcedureStepCommunicationsURISequence", "SQ", sorted_json(contact))
    if not has_value(item, "ProcedureStepCancellationDateTime"):
        put(item, "ProcedureStepCancellationDateTime", "DT", now)
        filled.append("ProcedureStepCancellationDateTime")
    if not has_value(item, "ProcedureStepDiscontinuationReasonCodeSequence"):
        put(item, "ProcedureStepDiscontinuationReasonCodeSequence", "SQ",
            _code_item(*DEFAULT_DISCONTINUATION_REASON))
        filled.append("ProcedureStepDiscontinuationReasonCodeSequence")
    items[0] = sorted_json(item)
    return filled


def _state_report(ds: Json) -> Json:
    """PS3.4 Table CC.2.4-1, UPS State Report attributes."""
    report: Json = {}
    put(report, "ProcedureStepState", "CS", *values(ds, "ProcedureStepState"))
    put(report, "InputReadinessState", "CS", *values(ds, "InputReadinessState"))
    progress = values(ds, "ProcedureStepProgressInformationSequence")
    if first(ds, "ProcedureStepState") == State.CANCELED.value and progress:
        for kw in ("ReasonForCancellation", "ProcedureStepDiscontinuationReasonCodeSequence"):
            if _K(kw) in progress[0]:
                report[_K(kw)] = progress[0][_K(kw)]
    return sorted_json(report)


def _assigned(ds: Json) -> Json | None:
    """PS3.4 CC.2.4.3 UPS Assigned: when a station or human performer is scheduled."""
    out = {_K(kw): ds[_K(kw)] for kw in ("ScheduledStationNameCodeSequence",
                                          "ScheduledHumanPerformersSequence")
           if has_value(ds, kw)}
    return sorted_json(out) if out else None


def _update_events(uid: str, changes: Json, ds: Json, fields: Any) -> list[UPSEvent]:
    label = fields.columns["worklist_label"]
    events = []
    if _K("InputReadinessState") in changes:
        events.append(UPSEvent(EventType.UPS_STATE_REPORT, uid, _state_report(ds), label))
    if _K("ProcedureStepProgressInformationSequence") in changes:
        key = _K("ProcedureStepProgressInformationSequence")
        events.append(UPSEvent(EventType.UPS_PROGRESS_REPORT, uid, {key: ds[key]}, label))
    if _K("ScheduledHumanPerformersSequence") in changes or \
            _K("ScheduledStationNameCodeSequence") in changes:
        assigned = _assigned(ds)
        if assigned is not None:
            events.append(UPSEvent(EventType.UPS_ASSIGNED, uid, assigned, label))
    return events
