"""The DIMSE adapter over real sockets: every UPS operation and status, the association
policy, bad input, interoperability with pynetdicom's findscu and DCMTK's echoscu, and a
claim race.  The server runs in this process on a free port, on a temporary SQLite file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import config, dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.dimse_messages import N_CREATE_RQ
from pynetdicom.dimse_primitives import N_CREATE

from dimse import DimseServer, start_dimse
from dimse.server import is_loopback
from worklist import errors
from worklist.config import Settings
from worklist.sample import final_state_attributes, sample_workitem
from worklist.service import WorklistService
from worklist.store import open_store
from worklist.values import (UPS_EVENT, UPS_PULL, UPS_PUSH, UPS_QUERY, UPS_WATCH,
                             VERIFICATION)

CONTEXTS = (VERIFICATION, UPS_PUSH, UPS_PULL, UPS_WATCH, UPS_EVENT, UPS_QUERY)
SCU = "TESTSCU"
TIMEOUT = 10


# -- fixtures and helpers ------------------------------------------------------------
@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> WorklistService:
    path = tmp_path_factory.mktemp("dimse") / "worklist.db"
    return WorklistService(open_store(f"sqlite:///{path}"))


def _settings(**overrides: Any) -> Settings:
    base = dict(acse_timeout=TIMEOUT, dimse_timeout=TIMEOUT, network_timeout=TIMEOUT)
    base.update(overrides)
    return Settings(**base)


@pytest.fixture(scope="module")
def server(service: WorklistService) -> Iterator[DimseServer]:
    srv = start_dimse(service, _settings(), port=0)
    yield srv
    srv.stop()


def _nodelay(event: Any) -> None:
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _ae(aet: str = SCU, transfer_syntaxes: list[str] | None = None) -> AE:
    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = TIMEOUT
    for uid in CONTEXTS:
        if transfer_syntaxes:
            ae.add_requested_context(uid, transfer_syntaxes)
        else:
            ae.add_requested_context(uid)
    return ae


def _associate(port: int, *, aet: str = SCU, called: str = "WORKLIST",
               host: str = "127.0.0.1", transfer_syntaxes: list[str] | None = None) -> Any:
    return _ae(aet, transfer_syntaxes).associate(host, port, ae_title=called,
                                                 evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)])


@contextlib.contextmanager
def scu(port: int, **kwargs: Any) -> Iterator[Any]:
    assoc = _associate(port, **kwargs)
    assert assoc.is_established
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def code(rsp: Dataset) -> int:
    return int(rsp.Status)


def assert_status(rsp: Dataset, expected: int) -> None:
    """The status, and for anything but success a non-empty Error Comment."""
    assert code(rsp) == expected, (f"0x{code(rsp):04X} != 0x{expected:04X}: "
                                   f"{rsp.get('ErrorComment', '')}")
    if expected != 0x0000:
        assert str(rsp.get("ErrorComment", "")).strip(), "no Error Comment"


def create(assoc: Any, ds: Dataset | None = None, *, meta_uid: str | None = None,
           **sample: Any) -> tuple[Dataset, str]:
    uid = generate_uid()
    status, _ = assoc.send_n_create(ds if ds is not None else sample_workitem(**sample),
                                    UPS_PUSH, uid, meta_uid=meta_uid)
    return status, uid


def change_state(assoc: Any, uid: str, state: str | None, tx: str | None) -> Dataset:
    info = Dataset()
    if state is not None:
        info.ProcedureStepState = state
    if tx is not None:
        info.TransactionUID = tx
    status, _ = assoc.send_n_action(info, 1, UPS_PUSH, uid, meta_uid=UPS_PULL)
    return status


def n_set(assoc: Any, uid: str, ds: Dataset, tx: str | None = None) -> Dataset:
    if tx is not None:
        ds.TransactionUID = tx
    status, _ = assoc.send_n_set(ds, UPS_PUSH, uid, meta_uid=UPS_PULL)
    return status


def claimed(assoc: Any) -> tuple[str, str]:
    status, uid = create(assoc)
    assert_status(status, 0)
    tx = generate_uid()
    assert_status(change_state(assoc, uid, "IN PROGRESS", tx), 0)
    return uid, tx


def completed(assoc: Any) -> tuple[str, str]:
    uid, tx = claimed(assoc)
    assert_status(n_set(assoc, uid, final_state_attributes(), tx), 0)
    assert_status(change_state(assoc, uid, "COMPLETED", tx), 0)
    return uid, tx


def _invalid(ds: Dataset, tag: int, vr: str, value: str) -> None:
    """Put a value pydicom would refuse to write (as a faulty peer would)."""
    ds.add(DataElement(tag, vr, value, validation_mode=config.IGNORE))


def find(assoc: Any, identifier: Dataset, model: str = UPS_PULL) -> tuple[list[Dataset], Dataset]:
    matches, final = [], None
    for status, ident in assoc.send_c_find(identifier, model):
        if status.Status in (0xFF00, 0xFF01):
            matches.append(ident)
        else:
            final = status
    assert final is not None
    return matches, final


def echo_ok(port: int) -> None:
    with scu(port) as assoc:
        assert_status(assoc.send_c_echo(), 0)


def send_raw_n_create(assoc: Any, attribute_list: bytes) -> Dataset:
    """An N-CREATE whose Attribute List is the given bytes, as no toolkit would send."""
    req = N_CREATE()
    req.MessageID = 99
    req.AffectedSOPClassUID = UPS_PUSH
    req.AffectedSOPInstanceUID = generate_uid()
    req.AttributeList = BytesIO(attribute_list)
    cx = next(c for c in assoc.accepted_contexts if c.abstract_syntax == UPS_PUSH)
    # As pynetdicom's own send_* do: pause the requestor's reactor, or it takes the reply.
    assoc._reactor_checkpoint.clear()
    while not assoc._is_paused:
        time.sleep(0.0001)
    try:
        assoc.dimse.send_msg(req, cx.context_id)
        _, rsp = assoc.dimse.get_msg(block=True)
    finally:
        assoc._reactor_checkpoint.set()
    assert rsp is not None, "no reply"
    status = Dataset()
    status.Status = rsp.Status
    if rsp.ErrorComment:
        status.ErrorComment = rsp.ErrorComment
    return status


# -- Verification and association policy -------------------------------------------
def test_echo_and_policy_from_settings(server: DimseServer) -> None:
    echo_ok(server.port)
    assert server.ae.require_called_aet is True
    assert (server.ae.acse_timeout, server.ae.dimse_timeout, server.ae.network_timeout) == \
        (TIMEOUT, TIMEOUT, TIMEOUT)
    assert server.ae.maximum_associations == Settings().max_associations


def test_tcp_nodelay_on_accepted_sockets(server: DimseServer) -> None:
    with scu(server.port):
        accepted = [a for a in server.server.active_associations if a.is_established]
        assert accepted
        for assoc in accepted:
            sock = assoc.dul.socket.socket
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0


def _rejection(assoc: Any) -> tuple[int, int, int]:
    rj = assoc.acceptor.primitive
    return rj.result, rj.result_source, rj.diagnostic


def test_called_ae_title_is_checked(server: DimseServer) -> None:
    assoc = _associate(server.port, called="NOTME")
    assert assoc.is_rejected
    assert _rejection(assoc) == (0x01, 0x01, 0x07)  # called AE title not recognised
    echo_ok(server.port)


def test_calling_ae_titles_restricted(service: WorklistService) -> None:
    with start_dimse(service, _settings(allowed_calling_aets=["GOODSCU"]), port=0) as srv:
        assoc = _associate(srv.port, aet="BADSCU")
        assert assoc.is_rejected
        assert _rejection(assoc) == (0x01, 0x01, 0x03)  # calling AE title not recognised
        with scu(srv.port, aet="GOODSCU") as assoc:
            assert_status(assoc.send_c_echo(), 0)


def test_maximum_associations(service: WorklistService) -> None:
    with start_dimse(service, _settings(max_associations=1), port=0) as srv:
        with scu(srv.port):
            second = _associate(srv.port)
            assert second.is_rejected
            assert _rejection(second) == (0x02, 0x03, 0x02)  # transient, local limit exceeded
        time.sleep(0.2)
        echo_ok(srv.port)


def _non_loopback_address() -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1: nothing is sent
            address = s.getsockname()[0]
        except OSError:
            return None
    return None if is_loopback(address) else address


@pytest.mark.parametrize("address, expected", [
    ("127.0.0.1", True), ("127.10.0.3", True), ("::1", True), ("::ffff:127.0.0.1", True),
    ("10.0.0.5", False), ("192.168.1.2", False), ("2001:db8::1", False), ("bogus", False),
])
def test_is_loopback(address: str, expected: bool) -> None:
    assert is_loopback(address) is expected


def test_remote_peers_rejected_unless_allowed(service: WorklistService) -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    with start_dimse(service, _settings(http_host="0.0.0.0"), port=0) as srv:
        assoc = _associate(srv.port, host=address)
        assert assoc.is_rejected and not assoc.is_established
        assert _rejection(assoc) == (0x01, 0x01, 0x01)  # permanent, service user, no reason
        echo_ok(srv.port)  # loopback still welcome
    with start_dimse(service, _settings(http_host="0.0.0.0", dimse_allow_remote=True),
                     port=0) as srv:
        with scu(srv.port, host=address) as assoc:
            assert_status(assoc.send_c_echo(), 0)


# -- N-CREATE ---------------------------------------------------------------------------
def test_create_get_and_history(server: DimseServer, service: WorklistService) -> None:
    with scu(server.port) as assoc:
        status, uid = create(assoc, patient_name="Doe^John")
        assert_status(status, 0)
        status, ds = assoc.send_n_get([], UPS_PUSH, uid, meta_uid=UPS_PULL)
        assert_status(status, 0)
        assert ds.SOPInstanceUID == uid and ds.SOPClassUID == UPS_PUSH
        assert ds.ProcedureStepState == "SCHEDULED" and ds.PatientName == "Doe^John"
        assert "TransactionUID" not in ds
    history = service.history(uid)
    assert [(h["action"], h["actor"], h["protocol"]) for h in history] == \
        [("CREATE", SCU, "DIMSE")]


def test_create_duplicate_is_0111(server: DimseServer) -> None:
    with scu(server.port) as assoc:
        ds = sample_workitem()
        uid = generate_uid()
        assert_status(assoc.send_n_create(ds, UPS_PUSH, uid)[0], 0)
        assert_status(assoc.send_n_create(sample_workitem(), UPS_PUSH, uid)[0], 0x0111)


def test_create_not_scheduled_is_c309(server: DimseServer) -> None:
    ds = sample_workitem()
    ds.ProcedureStepState = "IN PROGRESS"
    with scu(server.port) as assoc:
        assert_status(create(assoc, ds)[0], 0xC309)


def test_create_without_affected_sop_instance_uid_is_0120(server: DimseServer,
                                                          service: WorklistService) -> None:
    with scu(server.port) as assoc:
        status, _ = assoc.send_n_create(sample_workitem(with_uid=True), UPS_PUSH, None)
    assert_status(status, 0x0120)
    assert "Affected SOP Instance UID" in status.ErrorComment


def test_create_missing_type1_attribute_is_0120(server: DimseServer,
                                                service: WorklistService) -> None:
    ds = sample_workitem()
    del ds.ProcedureStepLabel
    with scu(server.port) as assoc:
        status, uid = create(assoc, ds)
    assert_status(status, 0x0120)
    assert "ProcedureStepLabel" in status.ErrorComment
    with pytest.raises(errors.NoSuchWorkitem):
        service.retrieve(uid)


def test_create_empty_type1_attribute_is_0121(server: DimseServer) -> None:
    ds = sample_workitem()
    ds.ScheduledProcedureStepPriority = ""
    with scu(server.port) as assoc:
        assert_status(create(assoc, ds)[0], 0x0121)


def test_create_unparsable_value_is_0106(server: DimseServer, service: WorklistService) -> None:
    ds = sample_workitem()
    _invalid(ds, 0x00404005, "DT", "20261340120000")  # Scheduled Procedure Step Start DateTime
    with scu(server.port) as assoc:
        status, uid = create(assoc, ds)
        assert_status(status, 0x0106)
        assert "0040,4005" in status.ErrorComment or "StartDateTime" in status.ErrorComment
        assert_status(assoc.send_c_echo(), 0)
    with pytest.raises(errors.NoSuchWorkitem):
        service.retrieve(uid)


def test_create_wrong_vr_is_0106(server: DimseServer) -> None:
    ds = sample_workitem()
    del ds.ProcedureStepLabel
    ds.add_new(0x00741204, "US", 7)  # Procedure Step Label is LO
    with scu(server.port, transfer_syntaxes=[ExplicitVRLittleEndian]) as assoc:
        status, _ = create(assoc, ds)
        assert_status(status, 0x0106)
        assert "VR US" in status.ErrorComment
        assert_status(assoc.send_c_echo(), 0)


def test_undecodable_dataset_is_0106_and_association_survives(server: DimseServer) -> None:
    with scu(server.port) as assoc:
        # (0010,0010) with a length far beyond the data, then garbage.
        status = send_raw_n_create(assoc, b"\x10\x00\x10\x00\xf0\xff\xff\x7f" + b"\xff" * 13)
        assert_status(status, 0x0106)
        assert_status(assoc.send_c_echo(), 0)
    echo_ok(server.port)


def test_create_on_any_ups_context(server: DimseServer) -> None:
    with scu(server.port) as assoc:
        for context in (UPS_PULL, UPS_WATCH, UPS_QUERY, UPS_EVENT):
            assert_status(create(assoc, meta_uid=context)[0], 0)


def test_sop_class_other_than_push_or_context_is_0118(server: DimseServer) -> None:
    with scu(server.port) as assoc:
        status, uid = create(assoc)
        # The context's own class is tolerated (older SCUs) ...
        assert_status(assoc.send_n_get([], UPS_PULL, uid, meta_uid=UPS_PULL)[0], 0)
        # ... any other class is not.
        assert_status(assoc.send_n_get([], UPS_WATCH, uid, meta_uid=UPS_PULL)[0], 0x0118)


# -- N-GET ----------------------------------------------------------------------------
def test_get_never_returns_transaction_uid(server: DimseServer) -> None:
    with scu(server.port) as assoc:
        uid, _ = claimed(assoc)
        status, ds = assoc.send_n_get([], UPS_PUSH, uid, meta_uid=UPS_PULL)
        assert_status(status, 0)
        assert "TransactionUID" not in ds and ds.ProcedureStepState == "IN PROGRESS"
        status, ds = assoc.send_n_get([0x00081195, 0x00741000, 0x00404011], UPS_PUSH, uid,
                                      meta_uid=UPS_WATCH)
        assert_status(status, 0)
        assert set(ds.dir()) == {"ProcedureStepState", "ExpectedCompletionDateTime"}
        assert ds.ExpectedCompletionDateTime in ("", None)  # absent: zero-length


def test_get_unknown_instance_is_c307(server: DimseServer) -> None:
    with scu(server.port) as assoc:
        assert_status(assoc.send_n_get([], UPS_PUSH, generate_uid(), meta_uid=UPS_PULL)[0],
                      0xC307)


# -- N-SET ----------------------------------------------------------------------------
def test_set_statuses(server: DimseServer, service: WorklistService) -> None:
    label = Dataset()
    label.ProcedureStepLabel = "Outline the kidneys"
    with scu(server.port) as assoc:
        status, uid = create(assoc)
        assert_status(n_set(assoc, uid, Dataset(label)), 0)           # SCHEDULED, no lock
        assert service.retrieve(uid).ProcedureStepLabel == "Outline the kidneys"
        assert_status(n_set(assoc, uid, Dataset(label), generate_uid()), 0xC310)
        patient = Dataset()
        patient.PatientName = "Other^Patient"                          # not allowed in N-SET
        assert_status(n_set(assoc, uid, patient), 0x0105)
        bad = Dataset()
        _invalid(bad, 0x00404005, "DT", "20269999")
        assert_status(n_set(assoc, uid, bad), 0x0106)
        tx = generate_uid()
        assert_status(change_state(assoc, uid, "IN PROGRESS", tx), 0)
        assert_status(n_set(assoc, uid, Dataset(label)), 0xC301)      # no Transaction UID
        assert_status(n_set(assoc, uid, Dataset(label), generate_uid()), 0xC301)
        assert_status(n_set(assoc, uid, final_state_attributes(), tx), 0)
        assert_status(change_state(assoc, uid, "COMPLETED", tx), 0)
        assert_status(n_set(assoc, uid, Dataset(label), tx), 0xC300)
        assert_status(n_set(assoc, generate_uid(), Dataset(label)), 0xC307)
    actions = [(h["action"], h["actor"], h["protocol"]) for h in service.history(uid)]
    assert actions == [("CREATE", SCU, "DIMSE"), ("UPDATE", SCU, "DIMSE"),
                       ("CHANGE STATE", SCU, "DIMSE"), ("UPDATE", SCU, "DIMSE"),
                       ("CHANGE STATE", SCU, "DIMSE")]


# -- N-ACTION type 1: Change UPS State ---------------------------------------------------
def test_change_state_statuses(server: DimseServer, service: WorklistService) -> None:
    with scu(server.port) as assoc:
        status, uid = create(assoc)
        tx = generate_uid()
        assert_status(change_state(assoc, uid, "COMPLETED", tx), 0xC310)  # not claimed
        assert_status(change_state(assoc, uid, "SCHEDULED", tx), 0xC303)
        assert_status(change_state(assoc, uid, "IN PROGRESS", None), 0x0115)
        assert_status(change_state(assoc, uid, None, tx), 0x0115)
        assert_status(change_state(assoc, uid, "DONE", tx), 0x0115)
        assert_status(change_state(assoc, uid, "IN PROGRESS", tx), 0)
        assert_status(change_state(assoc, uid, "IN PROGRESS", generate_uid()), 0xC302)
        assert_status(change_state(assoc, uid, "COMPLETED", generate_uid()), 0xC301)
        assert_status(change_state(assoc, uid, "COMPLETED", tx), 0xC304)  # final state
        assert service.state_of(uid) == "IN PROGRESS"
        assert_status(n_set(assoc, uid, final_state_attributes(), tx), 0)
        assert_status(change_state(assoc, uid, "COMPLETED", tx), 0)
        assert_status(change_state(assoc, uid, "COMPLETED", tx), 0xB306)
        assert_status(change_state(assoc, uid, "CANCELED", tx), 0xC300)
        assert_status(change_state(assoc, generate_uid(), "IN PROGRESS", tx), 0xC307)

        uid2, tx2 = claimed(assoc)
        assert_status(change_state(assoc, uid2, "CANCELED", tx2), 0)
        assert_status(change_state(assoc, uid2, "CANCELED", tx2), 0xB304)
        assert service.state_of(uid2) == "CANCELED"


# -- N-ACTION type 2: Request UPS Cancel, and types 3-5 -----------------------------------
def test_request_cancel_statuses(server: DimseServer, service: WorklistService) -> None:
    reason = Dataset()
    reason.ReasonForCancellation = "Wrong patient"
    with scu(server.port) as assoc:
        status, uid = create(assoc)
        rsp, _ = assoc.send_n_action(reason, 2, UPS_PUSH, uid, meta_uid=UPS_WATCH)
        assert_status(rsp, 0)
        assert service.state_of(uid) == "CANCELED"
        assert_status(assoc.send_n_action(None, 2, UPS_PUSH, uid)[0], 0xB304)
        done, _ = completed(assoc)
        assert_status(assoc.send_n_action(None, 2, UPS_PUSH, done)[0], 0xC311)
        running, _ = claimed(assoc)
        assert_status(assoc.send_n_action(reason, 2, UPS_PUSH, running)[0], 0)
        assert service.state_of(running) == "IN PROGRESS"
        assert_status(assoc.send_n_action(None, 2, UPS_PUSH, generate_uid())[0], 0xC307)


@pytest.mark.parametrize("action,expected", [(3, 0xC308), (4, 0x0000), (5, 0x0000)])
def test_subscription_actions_without_peers(server: DimseServer, action: int,
                                            expected: int) -> None:
    # No peer is configured here: a subscribe is refused (C308, the Receiving AE has no
    # known address); unsubscribe / suspend of nothing change nothing (PS3.4 CC.2.3.1).
    # The subscription tests proper are in test_subscriptions_dimse.py.
    info = Dataset()
    info.ReceivingAE = SCU
    info.DeletionLock = "FALSE"
    with scu(server.port) as assoc:
        status, _ = assoc.send_n_action(info, action, UPS_PUSH, "1.2.840.10008.5.1.4.34.5",
                                        meta_uid=UPS_WATCH)
    assert_status(status, expected)


def test_unknown_action_type_is_0123(server: DimseServer) -> None:
    with scu(server.port) as assoc:
        status, uid = create(assoc)
        assert_status(assoc.send_n_action(None, 9, UPS_PUSH, uid)[0], 0x0123)


# -- C-FIND -------------------------------------------------------------------------
def _identifier(label: str) -> Dataset:
    q = Dataset()
    q.WorklistLabel = label
    q.SOPInstanceUID = ""
    q.ProcedureStepState = ""
    q.PatientName = ""
    q.ExpectedCompletionDateTime = ""
    item = Dataset()
    item.CodeValue = ""
    q.ScheduledWorkitemCodeSequence = [item]
    q.ReferencedRequestSequence = [Dataset()]
    return q


@pytest.mark.parametrize("model", [UPS_PULL, UPS_WATCH, UPS_QUERY])
def test_find_on_pull_watch_and_query(server: DimseServer, model: str) -> None:
    label = "find-" + model.rsplit(".", 1)[1]
    with scu(server.port) as assoc:
        uids = {create(assoc, worklist_label=label)[1] for _ in range(3)}
        uid, _ = claimed(assoc)  # another label: not found
        matches, final = find(assoc, _identifier(label), model)
    assert_status(final, 0)
    assert {m.SOPInstanceUID for m in matches} == uids
    for m in matches:
        assert "TransactionUID" not in m and "QueryRetrieveLevel" not in m
        assert set(m.dir()) == {"WorklistLabel", "SOPInstanceUID", "ProcedureStepState",
                                "PatientName", "ExpectedCompletionDateTime",
                                "ScheduledWorkitemCodeSequence", "ReferencedRequestSequence"}
        assert m.ProcedureStepState == "SCHEDULED" and not m.ExpectedCompletionDateTime
        # An item with keys returns those keys; an empty item returns the whole items.
        assert m.ScheduledWorkitemCodeSequence[0].dir() == ["CodeValue"]
        assert m.ReferencedRequestSequence[0].AccessionNumber == "ACC0001"


def test_find_returns_specific_character_set(server: DimseServer) -> None:
    ds = sample_workitem(worklist_label="find-charset", patient_name="Müller^Jörg")
    ds.SpecificCharacterSet = "ISO_IR 100"  # sent in Latin-1; stored as Unicode
    with scu(server.port) as assoc:
        assert_status(create(assoc, ds)[0], 0)
        matches, final = find(assoc, _identifier("find-charset"))
    assert_status(final, 0)
    assert len(matches) == 1
    assert matches[0].SpecificCharacterSet == "ISO_IR 192"
    assert matches[0].PatientName == "Müller^Jörg"


def test_find_on_push_context_and_without_matches(server: DimseServer) -> None:
    with scu(server.port) as assoc:
        matches, final = find(assoc, _identifier("no-such-label"), UPS_PUSH)
    assert_status(final, 0)
    assert matches == []


def test_find_bad_identifier_is_a900(server: DimseServer) -> None:
    q = _identifier("x")
    q.TransactionUID = ""
    with scu(server.port) as assoc:
        matches, final = find(assoc, q)
        assert_status(final, 0xA900)
        q = _identifier("x")
        _invalid(q, 0x00404005, "DT", "20261301-")  # not a date-time range
        matches, final = find(assoc, q)
        assert_status(final, 0xA900)
        assert_status(assoc.send_c_echo(), 0)


def test_find_cancel_is_fe00(server: DimseServer, service: WorklistService) -> None:
    from worklist.service import Actor
    from worklist.values import Protocol
    actor = Actor(Protocol.INTERNAL, "setup")
    # Enough matches that the C-CANCEL arrives long before the last one is sent, even on
    # a loaded machine (each Pending response costs pynetdicom about 1.5 ms).
    for _ in range(600):
        service.create(sample_workitem(worklist_label="find-cancel"), generate_uid(), actor)
    with scu(server.port) as assoc:
        received, final = 0, None
        for status, _ in assoc.send_c_find(_identifier("find-cancel"), UPS_PULL, msg_id=7):
            if status.Status == 0xFF00:
                received += 1
                if received == 1:
                    assoc.send_c_cancel(7, query_model=UPS_PULL)
            else:
                final = status
        assert final is not None and final.Status == 0xFE00
        assert 1 <= received < 600
        assert_status(assoc.send_c_echo(), 0)


def _rich_workitem() -> Dataset:
    ds = sample_workitem(with_uid=True, performer="reader1")
    ds.update(final_state_attributes())
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Yamada^Tarou=山田^太郎=やまだ^たろう"
    ds.OtherPatientNames = ["A^B", "Ç^D"]
    progress = Dataset()
    progress.ProcedureStepProgress = "33.5"
    ds.ProcedureStepProgressInformationSequence = [progress]
    ds.add_new(0x00280010, "US", 512)
    ds.add_new(0x00209165, "AT", [0x00100010, 0x00741000])
    ds.add_new(0x00189219, "FD", [1.5, 2.25])
    ds.add_new(0x00081190, "UR", "http://example.org/x")
    ds.CommentsOnTheScheduledProcedureStep = "odd"
    return ds


@pytest.mark.parametrize("implicit", [True, False])
@pytest.mark.parametrize("make", [sample_workitem, _rich_workitem])
def test_json_encoder_writes_what_pydicom_writes(implicit: bool, make: Any) -> None:
    from pynetdicom.dsutils import encode

    from dimse.encoding import encode_json
    from worklist.dicomjson import dataset_to_json_dict
    obj = dataset_to_json_dict(make())
    assert encode_json(obj, implicit) == encode(Dataset.from_json(obj), implicit, True)


# -- interoperability: separate processes --------------------------------------------
def test_pynetdicom_findscu_lists_workitems(server: DimseServer, tmp_path: Path) -> None:
    with scu(server.port) as assoc:
        uids = {create(assoc, worklist_label="findscu")[1] for _ in range(2)}
    cmd = [sys.executable, "-m", "pynetdicom", "findscu", "-U", "-aet", "FINDSCU",
           "-aec", "WORKLIST", "127.0.0.1", str(server.port), "-k", "WorklistLabel=findscu",
           "-k", "ProcedureStepState=SCHEDULED", "-k", "SOPInstanceUID=", "-w"]
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    found = {dcmread(p).SOPInstanceUID for p in sorted(tmp_path.glob("rsp*"))}
    assert found == uids


def _dcmtk_echoscu() -> str | None:
    """DCMTK's echoscu (the venv's bin/ may hold pynetdicom's echoscu first on PATH)."""
    for directory in os.environ.get("PATH", "").split(os.pathsep) + ["/usr/bin"]:
        candidate = shutil.which("echoscu", path=directory)
        if not candidate:
            continue
        out = subprocess.run([candidate, "--version"], capture_output=True, text=True)
        if "dcmtk" in (out.stdout + out.stderr).lower():
            return candidate
    return None


def test_dcmtk_echoscu(server: DimseServer) -> None:
    echoscu = _dcmtk_echoscu()
    if echoscu is None:
        pytest.skip("DCMTK's echoscu is not installed (apt-get install dcmtk)")
    ok = subprocess.run([echoscu, "-aet", "DCMTKSCU", "-aec", "WORKLIST", "127.0.0.1",
                         str(server.port)], capture_output=True, text=True, timeout=30)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    wrong = subprocess.run([echoscu, "-aet", "DCMTKSCU", "-aec", "SOMEONE", "127.0.0.1",
                            str(server.port)], capture_output=True, text=True, timeout=30)
    assert wrong.returncode != 0
    assert "reject" in (wrong.stdout + wrong.stderr).lower()


# -- robustness -----------------------------------------------------------------------
def test_abort_in_the_middle_of_a_request(server: DimseServer,
                                          service: WorklistService) -> None:
    """The command of an N-CREATE arrives, its dataset never does: the peer aborts."""
    assoc = _associate(server.port)
    assert assoc.is_established
    uid = generate_uid()
    req = N_CREATE()
    req.MessageID = 5
    req.AffectedSOPClassUID = UPS_PUSH
    req.AffectedSOPInstanceUID = uid
    ds = sample_workitem()
    from pynetdicom.dsutils import encode
    req.AttributeList = BytesIO(encode(ds, True, True))
    msg = N_CREATE_RQ()
    msg.primitive_to_message(req)
    cx = next(c for c in assoc.accepted_contexts if c.abstract_syntax == UPS_PUSH)
    fragments = list(msg.encode_msg(cx.context_id, 16382))
    assert len(fragments) >= 2  # command, then data set
    assoc.dul.send_pdu(fragments[0])
    time.sleep(0.1)
    assoc.abort()
    echo_ok(server.port)
    with pytest.raises(errors.NoSuchWorkitem):
        service.retrieve(uid)


def test_connection_dropped_in_the_middle_of_a_pdu(server: DimseServer) -> None:
    assoc = _associate(server.port)
    assert assoc.is_established
    raw = assoc.dul.socket.socket
    # A P-DATA-TF announcing 4000 bytes, of which 20 arrive before the connection dies.
    raw.sendall(b"\x04\x00" + (4000).to_bytes(4, "big") + b"\x00" * 20)
    raw.shutdown(socket.SHUT_RDWR)
    assoc.abort()
    echo_ok(server.port)


class _Broken(WorklistService):
    def retrieve(self, uid: str) -> Dataset:
        raise RuntimeError("disk on fire")


def test_unexpected_exception_is_0110_and_logged(service: WorklistService,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    broken = _Broken(service.store)
    with start_dimse(broken, _settings(), port=0) as srv, scu(srv.port) as assoc:
        status, _ = assoc.send_n_get([], UPS_PUSH, generate_uid(), meta_uid=UPS_PULL)
        assert_status(status, 0x0110)
        assert "disk on fire" in status.ErrorComment
        assert_status(assoc.send_c_echo(), 0)
    assert any("N-GET failed unexpectedly" in r.getMessage() for r in caplog.records)


def test_eight_associations_race_to_claim(server: DimseServer,
                                          service: WorklistService) -> None:
    with scu(server.port) as assoc:
        status, uid = create(assoc)
        assert_status(status, 0)
    barrier = threading.Barrier(8)
    results: list[int] = []
    lock = threading.Lock()

    def claim(i: int) -> None:
        with scu(server.port, aet=f"RACER{i}") as assoc:
            barrier.wait()
            rsp = change_state(assoc, uid, "IN PROGRESS", generate_uid())
            with lock:
                results.append(code(rsp))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [0x0000] + [0xC302] * 7
    claims = [h for h in service.history(uid) if h["action"] == "CHANGE STATE"]
    assert len(claims) == 1 and claims[0]["actor"].startswith("RACER")


# -- across protocols: one database, DIMSE and UPS-RS ---------------------------------
@pytest.fixture(scope="module")
def rs(service: WorklistService) -> Iterator[Any]:
    """The UPS-RS application on the same service, served by uvicorn on a free port."""
    import httpx
    import uvicorn

    from dicomweb.app import create_app
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(service), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="off")
    http = uvicorn.Server(config)
    thread = threading.Thread(target=http.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not http.started and time.monotonic() < deadline:
        time.sleep(0.02)
    assert http.started, "uvicorn did not start"
    with httpx.Client(base_url=f"http://127.0.0.1:{port}",
                      headers={"Accept": "application/dicom+json"}, timeout=10) as client:
        yield client
    http.should_exit = True
    thread.join(10)


def test_create_over_dimse_find_over_ups_rs(server: DimseServer, rs: Any) -> None:
    with scu(server.port) as assoc:
        status, uid = create(assoc, worklist_label="cross-find")
    assert_status(status, 0)
    found = rs.get("/dicom-web/workitems", params={"WorklistLabel": "cross-find"})
    assert found.status_code == 200, found.text
    items = found.json()
    assert [i["00080018"]["Value"][0] for i in items] == [uid]
    assert all("00081195" not in i for i in items)


def test_claim_over_ups_rs_update_and_complete_over_dimse(server: DimseServer, rs: Any,
                                                          service: WorklistService) -> None:
    with scu(server.port) as assoc:
        status, uid = create(assoc, worklist_label="cross-claim")
    assert_status(status, 0)
    tx = generate_uid()
    body = [{"00741000": {"vr": "CS", "Value": ["IN PROGRESS"]},
             "00081195": {"vr": "UI", "Value": [tx]}}]
    claim = rs.put(f"/dicom-web/workitems/{uid}/state", json=body,
                   headers={"Content-Type": "application/dicom+json"})
    assert claim.status_code == 200, claim.text
    with scu(server.port) as assoc:
        assert_status(n_set(assoc, uid, final_state_attributes(), generate_uid()), 0xC301)
        assert_status(n_set(assoc, uid, final_state_attributes(), tx), 0)
        assert_status(change_state(assoc, uid, "COMPLETED", tx), 0)
    done = rs.get(f"/dicom-web/workitems/{uid}")
    assert done.json()[0]["00741000"]["Value"] == ["COMPLETED"]
    assert [(h["protocol"], h["action"]) for h in service.history(uid)] == [
        ("DIMSE", "CREATE"), ("UPS-RS", "CHANGE STATE"), ("DIMSE", "UPDATE"),
        ("DIMSE", "CHANGE STATE")]
