"""The service layer over a real SQLite file: every (state, action) pair end to end,
N-CREATE and N-SET checks, final-state requirements, events, the Transaction UID lock
and the claim race (threads, and separate processes on the same database file).
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import threading
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from sqlalchemy.exc import DBAPIError

from tests.integration import _race_worker
from worklist import errors, matching
from worklist.events import EventType, RecordingPublisher
from worklist.sample import code_item, final_state_attributes, performer_item, sample_workitem
from worklist.service import Actor, WorklistService, now_dt
from worklist.store import open_store
from worklist.values import UPS_PUSH, Protocol

ACTOR = Actor(Protocol.UPS_RS, "tester")
TX_KEY = "00081195"


class Clock:
    """A clock that moves one second on every reading."""

    def __init__(self) -> None:
        self.t = dt.datetime(2026, 11, 22, 9, 0, 0, tzinfo=dt.timezone.utc)

    def __call__(self) -> dt.datetime:
        self.t += dt.timedelta(seconds=1)
        return self.t


@pytest.fixture
def db_url(database_url: str) -> str:
    """Each test on the embedded SQLite file and on a real PostgreSQL (conftest)."""
    return database_url


@pytest.fixture
def store(db_url: str):
    s = open_store(db_url)
    yield s
    s.engine.dispose()


@pytest.fixture
def events() -> RecordingPublisher:
    return RecordingPublisher()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def service(store, events, clock) -> WorklistService:
    return WorklistService(store, events=events, clock=clock)


def make(**attrs) -> Dataset:
    ds = Dataset()
    for kw, value in attrs.items():
        setattr(ds, kw, value)
    return ds


def create(service: WorklistService, **kwargs) -> str:
    return service.create(sample_workitem(**kwargs), generate_uid(), ACTOR).uid


def claim(service: WorklistService, uid: str) -> str:
    tx = generate_uid()
    assert service.change_state(uid, "IN PROGRESS", tx, ACTOR) is None
    return tx


def in_state(service: WorklistService, state: str) -> tuple[str, str | None]:
    """A new workitem in ``state`` and its recorded Transaction UID."""
    uid = create(service)
    if state == "SCHEDULED":
        return uid, None
    tx = claim(service, uid)
    if state == "COMPLETED":
        service.update(uid, final_state_attributes(), tx, ACTOR)
        assert service.change_state(uid, "COMPLETED", tx, ACTOR) is None
    elif state == "CANCELED":
        assert service.change_state(uid, "CANCELED", tx, ACTOR) is None
    assert service.state_of(uid) == state
    return uid, tx


def stored_json(service: WorklistService, uid: str) -> dict:
    return json.loads(service.retrieve_json(uid))


def value(obj: dict, keyword_tag: str):
    return (obj.get(keyword_tag) or {}).get("Value", [None])[0]


# -- every (state, action) pair, end to end -------------------------------------------
S, P, C, X = "SCHEDULED", "IN PROGRESS", "COMPLETED", "CANCELED"
# (state, action) -> ("ok", state after) | ("warn", status) | ("fail", error, status)
END_TO_END = {
    (S, "IN PROGRESS"): ("ok", P),
    (P, "IN PROGRESS"): ("fail", errors.AlreadyInProgress, 0xC302),
    (C, "IN PROGRESS"): ("fail", errors.MayNoLongerBeUpdated, 0xC300),
    (X, "IN PROGRESS"): ("fail", errors.MayNoLongerBeUpdated, 0xC300),
    (S, "COMPLETED"): ("fail", errors.NotInProgress, 0xC310),
    (P, "COMPLETED"): ("ok", C),
    (C, "COMPLETED"): ("warn", 0xB306),
    (X, "COMPLETED"): ("fail", errors.MayNoLongerBeUpdated, 0xC300),
    (S, "CANCELED"): ("fail", errors.NotInProgress, 0xC310),
    (P, "CANCELED"): ("ok", X),
    (C, "CANCELED"): ("fail", errors.MayNoLongerBeUpdated, 0xC300),
    (X, "CANCELED"): ("warn", 0xB304),
    (S, "SCHEDULED"): ("fail", errors.MayOnlyBecomeScheduledViaCreate, 0xC303),
    (P, "SCHEDULED"): ("fail", errors.MayOnlyBecomeScheduledViaCreate, 0xC303),
    (C, "SCHEDULED"): ("fail", errors.MayOnlyBecomeScheduledViaCreate, 0xC303),
    (X, "SCHEDULED"): ("fail", errors.MayOnlyBecomeScheduledViaCreate, 0xC303),
    (S, "REQUEST CANCEL"): ("ok", X),
    (P, "REQUEST CANCEL"): ("ok", P),
    (C, "REQUEST CANCEL"): ("fail", errors.AlreadyCompleted, 0xC311),
    (X, "REQUEST CANCEL"): ("warn", 0xB304),
    (S, "UPDATE"): ("ok", S),
    (P, "UPDATE"): ("ok", P),
    (C, "UPDATE"): ("fail", errors.MayNoLongerBeUpdated, 0xC300),
    (X, "UPDATE"): ("fail", errors.MayNoLongerBeUpdated, 0xC300),
}


def test_end_to_end_table_covers_every_pair():
    assert len(END_TO_END) == 24
    assert {s for s, _ in END_TO_END} == {S, P, C, X}
    assert {a for _, a in END_TO_END} == {"IN PROGRESS", "COMPLETED", "CANCELED", "SCHEDULED",
                                          "REQUEST CANCEL", "UPDATE"}


def _perform(service, uid, tx, state, action):
    if action == "IN PROGRESS":
        return service.change_state(uid, action, generate_uid(), ACTOR)
    if action in ("COMPLETED", "CANCELED", "SCHEDULED"):
        if state == P and action == "COMPLETED":
            service.update(uid, final_state_attributes(), tx, ACTOR)
        return service.change_state(uid, action, tx or generate_uid(), ACTOR)
    if action == "REQUEST CANCEL":
        return service.request_cancel(uid, None, ACTOR)
    return service.update(uid, make(ProcedureStepLabel="Relabelled"), tx, ACTOR)


@pytest.mark.parametrize(("state", "action"), list(END_TO_END), ids=lambda x: x)
def test_every_pair_end_to_end(service, events, state, action):
    uid, tx = in_state(service, state)
    before = service.retrieve_json(uid)
    expected = END_TO_END[(state, action)]
    events.events.clear()
    if expected[0] == "fail":
        with pytest.raises(errors.UPSError) as info:
            _perform(service, uid, tx, state, action)
        assert type(info.value) is expected[1]
        assert int(info.value.status) == expected[2]
        assert service.retrieve_json(uid) == before  # untouched, byte for byte
        assert service.state_of(uid) == state
        assert events.events == []
        return
    result = _perform(service, uid, tx, state, action)
    if expected[0] == "warn":
        assert result is not None and int(result.status) == expected[1]
        assert "already in the requested state" in result.text
        assert service.retrieve_json(uid) == before
        assert events.events == []
        return
    assert result is None
    assert service.state_of(uid) == expected[1]
    assert value(stored_json(service, uid), "00741000") == expected[1]
    if action == "UPDATE":
        assert value(stored_json(service, uid), "00741204") == "Relabelled"


@pytest.mark.parametrize("action", ["COMPLETED", "CANCELED", "UPDATE"])
@pytest.mark.parametrize("supplied", ["wrong", "missing"])
def test_in_progress_needs_the_recorded_transaction_uid(service, action, supplied):
    uid, tx = in_state(service, P)
    if action == "COMPLETED":
        service.update(uid, final_state_attributes(), tx, ACTOR)
    before = service.retrieve_json(uid)
    given = generate_uid() if supplied == "wrong" else None
    with pytest.raises(errors.WrongTransactionUID) as info:
        if action == "UPDATE":
            service.update(uid, make(ProcedureStepLabel="x"), given, ACTOR)
        else:
            service.change_state(uid, action, given, ACTOR)
    assert int(info.value.status) == 0xC301
    assert info.value.warning == ("The Transaction UID is incorrect." if supplied == "wrong"
                                  else "The Transaction UID is missing.")
    assert service.retrieve_json(uid) == before
    assert service.state_of(uid) == P


def test_claim_without_transaction_uid_is_refused(service):
    uid = create(service)
    with pytest.raises(errors.InvalidArgumentValue) as info:
        service.change_state(uid, "IN PROGRESS", None, ACTOR)
    assert int(info.value.status) == 0x0115
    assert service.state_of(uid) == S


def test_claim_with_an_invalid_transaction_uid_is_refused(service):
    uid = create(service)
    with pytest.raises(errors.InvalidAttributeValue):
        service.change_state(uid, "IN PROGRESS", "1.02.3", ACTOR)
    assert service.state_of(uid) == S


@pytest.mark.parametrize("state", ["DONE", "in progress", "UPDATE", "REQUEST CANCEL", ""])
def test_change_state_to_something_that_is_no_state(service, state):
    uid = create(service)
    with pytest.raises(errors.InvalidArgumentValue):
        service.change_state(uid, state, generate_uid(), ACTOR)


@pytest.mark.parametrize("op", ["retrieve", "update", "change_state", "request_cancel"])
def test_unknown_workitem_is_c307(service, op):
    uid = generate_uid()
    with pytest.raises(errors.NoSuchWorkitem) as info:
        if op == "retrieve":
            service.retrieve(uid)
        elif op == "update":
            service.update(uid, make(ProcedureStepLabel="x"), None, ACTOR)
        elif op == "change_state":
            service.change_state(uid, "IN PROGRESS", generate_uid(), ACTOR)
        else:
            service.request_cancel(uid, None, ACTOR)
    assert int(info.value.status) == 0xC307 and info.value.http_status == 404


def test_the_recorded_uid_is_the_claimants(service):
    uid = create(service)
    tx = claim(service, uid)
    service.update(uid, make(ProcedureStepLabel="mine"), tx, ACTOR)
    with pytest.raises(errors.WrongTransactionUID):
        service.update(uid, make(ProcedureStepLabel="theirs"), generate_uid(), ACTOR)


def test_transaction_uid_in_the_update_body(service):
    uid = create(service)
    tx = claim(service, uid)
    # In the dataset only (DIMSE N-SET style): accepted, never stored.
    service.update(uid, make(TransactionUID=tx, ProcedureStepLabel="a"), None, ACTOR)
    assert value(stored_json(service, uid), "00741204") == "a"
    assert TX_KEY not in stored_json(service, uid)
    # Equal to the request's: accepted; different: refused.
    service.update(uid, make(TransactionUID=tx, ProcedureStepLabel="b"), tx, ACTOR)
    with pytest.raises(errors.InvalidRequest):
        service.update(uid, make(TransactionUID=generate_uid(), ProcedureStepLabel="c"), tx,
                       ACTOR)
    assert value(stored_json(service, uid), "00741204") == "b"


def test_update_of_a_scheduled_workitem_with_a_transaction_uid_is_c310(service):
    uid = create(service)
    before = service.retrieve_json(uid)
    with pytest.raises(errors.NotInProgress) as info:
        service.update(uid, make(ProcedureStepLabel="x"), generate_uid(), ACTOR)
    assert int(info.value.status) == 0xC310
    assert service.retrieve_json(uid) == before


# -- Request Cancellation (PS3.4 CC.2.2.3) --------------------------------------------
def test_request_cancel_of_a_scheduled_workitem_cancels_it(service, events, clock):
    uid = create(service)
    events.events.clear()
    assert service.request_cancel(uid, None, ACTOR) is None
    assert service.state_of(uid) == X
    ds = service.retrieve(uid)
    assert ds.ProcedureStepState == X
    progress = ds.ProcedureStepProgressInformationSequence[0]
    # Filled by the SCP: the cancellation time and the default reason DCM 110513.
    assert progress.ProcedureStepCancellationDateTime == now_dt(lambda: clock.t)
    reason = progress.ProcedureStepDiscontinuationReasonCodeSequence[0]
    assert (reason.CodeValue, reason.CodingSchemeDesignator) == ("110513", "DCM")
    assert reason.CodeMeaning
    # UPS State Report for IN PROGRESS and then CANCELED (through IN PROGRESS).
    reports = [e for e in events.events if e.event_type is EventType.UPS_STATE_REPORT]
    assert [value(e.attributes, "00741000") for e in reports] == [P, X]
    assert value(reports[-1].attributes, "0074100E")["00080100"]["Value"] == ["110513"]
    assert all(e.uid == uid for e in events.events)
    hist = service.history(uid)
    assert [h["action"] for h in hist] == ["CREATE", "REQUEST CANCEL"]
    assert hist[-1]["state_after"] == X
    # A canceled workitem is final: no claim any more.
    with pytest.raises(errors.MayNoLongerBeUpdated):
        service.change_state(uid, "IN PROGRESS", generate_uid(), ACTOR)


def test_request_cancel_uses_the_given_reason(service):
    uid = create(service)
    info = make(ReasonForCancellation="Duplicate order",
                ProcedureStepDiscontinuationReasonCodeSequence=[
                    code_item("110514", "DCM", "Incorrect worklist entry selected")],
                ContactURI="mailto:pacs@example.org", ContactDisplayName="PACS admin")
    service.request_cancel(uid, info, ACTOR)
    item = service.retrieve(uid).ProcedureStepProgressInformationSequence[0]
    assert item.ReasonForCancellation == "Duplicate order"
    assert item.ProcedureStepDiscontinuationReasonCodeSequence[0].CodeValue == "110514"
    assert len(item.ProcedureStepDiscontinuationReasonCodeSequence) == 1
    contact = item.ProcedureStepCommunicationsURISequence[0]
    assert contact.ContactURI == "mailto:pacs@example.org"
    assert contact.ContactDisplayName == "PACS admin"


def test_request_cancel_of_an_in_progress_workitem_is_recorded(service, store, events):
    uid, tx = in_state(service, P)
    before = service.retrieve_json(uid)
    events.events.clear()
    info = make(ReasonForCancellation="Patient left")
    assert service.request_cancel(uid, info, Actor(Protocol.DIMSE, "WATCHER")) is None
    # Still IN PROGRESS and still the performer's: only the request is recorded.
    assert service.state_of(uid) == P
    assert service.retrieve_json(uid) == before
    with store.transaction() as conn:
        row = store.get(conn, uid)
    assert row.cancel_requested is True
    assert row.transaction_uid == tx
    hist = service.history(uid)
    assert hist[-1]["action"] == "REQUEST CANCEL"
    assert hist[-1]["actor"] == "WATCHER" and hist[-1]["protocol"] == "DIMSE"
    assert (hist[-1]["state_before"], hist[-1]["state_after"]) == (P, P)
    [event] = events.events
    assert event.event_type is EventType.UPS_CANCEL_REQUESTED and event.uid == uid
    assert value(event.attributes, "00741238") == "Patient left"   # Reason For Cancellation
    assert value(event.attributes, "00741236") == "WATCHER"        # Requesting AE
    # The performer can still finish its work, or cancel it itself.
    service.update(uid, final_state_attributes(), tx, ACTOR)
    service.change_state(uid, "COMPLETED", tx, ACTOR)
    assert service.state_of(uid) == C


def test_request_cancel_refuses_other_attributes(service):
    uid = create(service)
    with pytest.raises(errors.InvalidArgumentValue) as info:
        service.request_cancel(uid, make(PatientID="X"), ACTOR)
    assert int(info.value.status) == 0x0115
    assert "PatientID" in info.value.message
    assert service.state_of(uid) == S


# -- final-state requirements (PS3.4 CC.2.5.1.1) ------------------------------------
def test_complete_without_the_performed_procedure_is_c304(service):
    uid, tx = in_state(service, P)
    before = service.retrieve_json(uid)
    with pytest.raises(errors.FinalStateRequirementsNotMet) as info:
        service.change_state(uid, "COMPLETED", tx, ACTOR)
    assert int(info.value.status) == 0xC304
    assert info.value.attribute == "UnifiedProcedureStepPerformedProcedureSequence"
    assert "UnifiedProcedureStepPerformedProcedureSequence" in info.value.message
    assert service.state_of(uid) == P
    assert service.retrieve_json(uid) == before


@pytest.mark.parametrize("missing", ["PerformedProcedureStepEndDateTime",
                                     "PerformedProcedureStepStartDateTime",
                                     "PerformedWorkitemCodeSequence",
                                     "PerformedStationNameCodeSequence"])
def test_complete_names_the_missing_attribute(service, missing):
    uid, tx = in_state(service, P)
    attrs = final_state_attributes()
    del attrs.UnifiedProcedureStepPerformedProcedureSequence[0][missing]
    service.update(uid, attrs, tx, ACTOR)
    with pytest.raises(errors.FinalStateRequirementsNotMet) as info:
        service.change_state(uid, "COMPLETED", tx, ACTOR)
    assert info.value.attribute == ("UnifiedProcedureStepPerformedProcedureSequence[1] > "
                                    + missing)
    assert service.state_of(uid) == P


def test_complete_succeeds_with_the_final_state_attributes(service):
    uid, tx = in_state(service, P)
    service.update(uid, final_state_attributes(), tx, ACTOR)
    assert service.change_state(uid, "COMPLETED", tx, ACTOR) is None
    ds = service.retrieve(uid)
    assert ds.ProcedureStepState == C
    performed = ds.UnifiedProcedureStepPerformedProcedureSequence[0]
    assert performed.PerformedProcedureStepEndDateTime == "20261122103000"


def test_cancel_without_defaults_is_c304(store, events, clock):
    service = WorklistService(store, events=events, clock=clock, fill_cancel_defaults=False)
    uid, tx = in_state(service, P)
    with pytest.raises(errors.FinalStateRequirementsNotMet) as info:
        service.change_state(uid, "CANCELED", tx, ACTOR)
    assert info.value.attribute == "ProcedureStepProgressInformationSequence"
    assert service.state_of(uid) == P
    progress = make(ProcedureStepProgressInformationSequence=[make(
        ProcedureStepCancellationDateTime="20261122100000",
        ProcedureStepDiscontinuationReasonCodeSequence=[code_item("110514", "DCM", "x")])])
    service.update(uid, progress, tx, ACTOR)
    assert service.change_state(uid, "CANCELED", tx, ACTOR) is None
    item = service.retrieve(uid).ProcedureStepProgressInformationSequence[0]
    assert item.ProcedureStepCancellationDateTime == "20261122100000"


def test_cancel_by_the_performer_fills_the_defaults(service, clock):
    uid, tx = in_state(service, P)
    service.change_state(uid, "CANCELED", tx, ACTOR)
    item = service.retrieve(uid).ProcedureStepProgressInformationSequence[0]
    assert item.ProcedureStepCancellationDateTime == now_dt(lambda: clock.t)
    assert item.ProcedureStepDiscontinuationReasonCodeSequence[0].CodeValue == "110513"
    assert service.history(uid)[-1]["changes"]["filled"] == [
        "ProcedureStepCancellationDateTime", "ProcedureStepDiscontinuationReasonCodeSequence"]


# -- N-CREATE (PS3.4 CC.2.5, Table CC.2.5-3) ------------------------------------------
def _refused_create(service, ds, error, status, uid: str | None = "new"):
    uid = generate_uid() if uid == "new" else uid
    with pytest.raises(errors.UPSError) as info:
        service.create(ds, uid, ACTOR)
    assert type(info.value) is error
    assert int(info.value.status) == status
    if uid:
        with pytest.raises(errors.NoSuchWorkitem):
            service.retrieve(uid)
    with service.store.transaction() as conn:
        assert service.store.count(conn) == 0  # nothing stored
    return info.value


def test_create_stores_the_dataset(service, events, clock):
    ds = sample_workitem(performer="reader1", worklist_label="Liver")
    uid = generate_uid()
    result = service.create(ds, uid, ACTOR)
    assert result.uid == uid and result.warning is None
    stored = service.retrieve(uid)
    assert stored.SOPInstanceUID == uid
    assert stored.SOPClassUID == UPS_PUSH
    assert stored.ProcedureStepState == S
    assert stored.WorklistLabel == "Liver"
    assert stored.PatientName == "Doe^Jane"
    assert stored.ScheduledHumanPerformersSequence[0].HumanPerformerName == "Reader1"
    assert "TransactionUID" not in stored
    assert service.state_of(uid) == S
    [hist] = service.history(uid)
    assert (hist["action"], hist["actor"], hist["protocol"]) == ("CREATE", "tester", "UPS-RS")
    assert hist["state_after"] == S


def test_create_takes_the_uid_from_the_dataset(service):
    ds = sample_workitem(with_uid=True)
    assert service.create(ds, None, ACTOR).uid == ds.SOPInstanceUID
    assert service.state_of(ds.SOPInstanceUID) == S


def test_create_without_any_uid(service):
    for uid in ("", None):
        exc = _refused_create(service, sample_workitem(), errors.MissingAttribute, 0x0120, uid)
        assert exc.attribute == "SOPInstanceUID"


def test_create_with_differing_uids(service):
    ds = sample_workitem(with_uid=True)
    exc = _refused_create(service, ds, errors.InvalidAttributeValue, 0x0106)
    assert exc.attribute == "SOPInstanceUID"
    with pytest.raises(errors.NoSuchWorkitem):
        service.retrieve(ds.SOPInstanceUID)


@pytest.mark.parametrize("uid", ["1.02.3", "1.2.abc", "1." + "2" * 70])
def test_create_with_an_invalid_uid(service, uid):
    with pytest.raises(errors.InvalidAttributeValue):
        service.create(sample_workitem(), uid, ACTOR)


def test_create_with_another_sop_class(service):
    ds = sample_workitem()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    _refused_create(service, ds, errors.InvalidAttributeValue, 0x0106)


@pytest.mark.parametrize("keyword", ["ProcedureStepLabel", "ScheduledProcedureStepPriority",
                                     "ScheduledProcedureStepStartDateTime",
                                     "InputReadinessState"])
def test_create_type1_missing_is_0120(service, keyword):
    ds = sample_workitem()
    delattr(ds, keyword)
    exc = _refused_create(service, ds, errors.MissingAttribute, 0x0120)
    assert exc.attribute == keyword and keyword in exc.message


@pytest.mark.parametrize("keyword", ["ProcedureStepLabel", "ScheduledProcedureStepPriority",
                                     "ScheduledProcedureStepStartDateTime",
                                     "InputReadinessState"])
def test_create_type1_empty_is_0121(service, keyword):
    ds = sample_workitem()
    setattr(ds, keyword, "")
    exc = _refused_create(service, ds, errors.MissingAttributeValue, 0x0121)
    assert exc.attribute == keyword


@pytest.mark.parametrize("keyword", ["PatientName", "PatientBirthDate",
                                     "ScheduledWorkitemCodeSequence", "InputInformationSequence",
                                     "WorklistLabel",
                                     "ProcedureStepProgressInformationSequence",
                                     "UnifiedProcedureStepPerformedProcedureSequence"])
def test_create_type2_missing_is_0120(service, keyword):
    ds = sample_workitem()
    delattr(ds, keyword)
    exc = _refused_create(service, ds, errors.MissingAttribute, 0x0120)
    assert exc.attribute == keyword


def test_create_type1_in_an_item_missing(service):
    ds = sample_workitem(performer="reader1")
    del ds.ScheduledHumanPerformersSequence[0].HumanPerformerOrganization
    exc = _refused_create(service, ds, errors.MissingAttribute, 0x0120)
    assert exc.attribute == "ScheduledHumanPerformersSequence[1] > HumanPerformerOrganization"


def test_create_progress_information_with_content_is_0105(service):
    ds = sample_workitem()
    ds.ProcedureStepProgressInformationSequence = [make(ProcedureStepProgress=50)]
    exc = _refused_create(service, ds, errors.NoSuchAttribute, 0x0105)
    assert exc.attribute == "ProcedureStepProgressInformationSequence[1] > ProcedureStepProgress"


def test_create_performed_procedure_with_content_is_0105(service):
    ds = sample_workitem()
    ds.UnifiedProcedureStepPerformedProcedureSequence = \
        final_state_attributes().UnifiedProcedureStepPerformedProcedureSequence
    _refused_create(service, ds, errors.NoSuchAttribute, 0x0105)


@pytest.mark.parametrize("state", ["IN PROGRESS", "COMPLETED", "CANCELED", "PENDING"])
def test_create_in_another_state_is_c309(service, state):
    ds = sample_workitem()
    ds.ProcedureStepState = state
    _refused_create(service, ds, errors.NotScheduledAtCreate, 0xC309)


def test_create_without_state(service):
    ds = sample_workitem()
    del ds.ProcedureStepState
    _refused_create(service, ds, errors.MissingAttribute, 0x0120)


def test_create_with_a_transaction_uid_is_refused(service):
    ds = sample_workitem()
    ds.TransactionUID = generate_uid()
    exc = _refused_create(service, ds, errors.InvalidAttributeValue, 0x0106)
    assert exc.attribute == "TransactionUID"


def test_create_with_an_empty_transaction_uid_stores_none(service):
    ds = sample_workitem()
    assert ds.TransactionUID == ""
    assert "TransactionUID" not in service.retrieve(service.create(ds, generate_uid(), ACTOR).uid)


def test_create_without_the_transaction_uid_attribute(service):
    # Table CC.2.5-3 makes Transaction UID Type 2 at N-CREATE (present, empty), but
    # PS3.18 11.4 clients leave it out: absent and empty both mean "not claimed".
    ds = sample_workitem()
    del ds.TransactionUID
    uid = service.create(ds, "1.2.826.0.1.3680043.10.1.42", ACTOR).uid
    assert service.state_of(uid) == "SCHEDULED"
    assert "00081195" not in json.loads(service.retrieve_json(uid))


def test_output_information_sequence_is_type2_in_nset(service):
    uid, tx = in_state(service, P)
    attrs = final_state_attributes()
    del attrs.UnifiedProcedureStepPerformedProcedureSequence[0].OutputInformationSequence
    before = service.retrieve_json(uid)
    with pytest.raises(errors.MissingAttribute) as info:
        service.update(uid, attrs, tx, ACTOR)
    assert info.value.attribute == ("UnifiedProcedureStepPerformedProcedureSequence[1] > "
                                    "OutputInformationSequence")
    assert service.retrieve_json(uid) == before


@pytest.mark.parametrize(("keyword", "bad"), [("ScheduledProcedureStepPriority", "URGENT"),
                                              ("InputReadinessState", "MAYBE")])
def test_create_with_a_value_outside_the_enumeration(service, keyword, bad):
    ds = sample_workitem()
    setattr(ds, keyword, bad)
    _refused_create(service, ds, errors.InvalidAttributeValue, 0x0106)


@pytest.mark.parametrize("keyword", ["PatientID", "WorklistLabel", "StudyInstanceUID",
                                     "ScheduledProcedureStepStartDateTime"])
def test_create_with_two_values_in_a_single_valued_attribute(service, keyword):
    # PS3.6 VM 1.  (The store indexes the one value; a second would be found by Python
    # matching but not by SQL.)
    ds = sample_workitem().to_json_dict()
    first = ds[{"PatientID": "00100020", "WorklistLabel": "00741202",
                "StudyInstanceUID": "0020000D",
                "ScheduledProcedureStepStartDateTime": "00404005"}[keyword]]
    first["Value"] = first["Value"] * 2
    exc = _refused_create(service, ds, errors.InvalidAttributeValue, 0x0106)
    assert keyword in exc.message and "VM 1" in exc.message


def test_two_values_in_a_single_valued_item_attribute(service):
    ds = sample_workitem(performer="reader1").to_json_dict()
    ds["00404034"]["Value"][0]["00404036"]["Value"] = ["Lab A", "Lab B"]
    exc = _refused_create(service, ds, errors.InvalidAttributeValue, 0x0106)
    assert "ScheduledHumanPerformersSequence[1] > HumanPerformerOrganization" in exc.message
    uid = create(service)
    before = service.retrieve_json(uid)
    with pytest.raises(errors.InvalidAttributeValue):
        service.update(uid, {"00741204": {"vr": "LO", "Value": ["a", "b"]}}, None, ACTOR)
    assert service.retrieve_json(uid) == before


def test_worklist_label_filled_with_the_default(store):
    service = WorklistService(store, default_worklist_label="ANNOTATION")
    uid = create(service, worklist_label="")
    assert service.retrieve(uid).WorklistLabel == "ANNOTATION"
    # and it is indexed, so a search by it finds the workitem
    result = service.search(matching.parse_identifier(make(WorklistLabel="ANNOTATION")))
    assert [json.loads(t)["00080018"]["Value"][0] for t in result.items] == [uid]


def test_worklist_label_given_is_kept(service):
    assert service.retrieve(create(service, worklist_label="Liver")).WorklistLabel == "Liver"


def test_modification_datetime_is_set_by_the_server(service, clock):
    ds = sample_workitem()
    ds.ScheduledProcedureStepModificationDateTime = "19990101000000"
    uid = service.create(ds, generate_uid(), ACTOR).uid
    created = service.retrieve(uid).ScheduledProcedureStepModificationDateTime
    assert created == now_dt(lambda: clock.t) and created.startswith("20261122")
    service.update(uid, make(ProcedureStepLabel="x",
                             ScheduledProcedureStepModificationDateTime="19990101000000"),
                   None, ACTOR)
    updated = service.retrieve(uid).ScheduledProcedureStepModificationDateTime
    assert updated == now_dt(lambda: clock.t)
    assert updated > created
    tx = claim(service, uid)
    claimed = service.retrieve(uid).ScheduledProcedureStepModificationDateTime
    assert claimed > updated
    service.update(uid, make(ProcedureStepLabel="y"), tx, ACTOR)
    assert service.retrieve(uid).ScheduledProcedureStepModificationDateTime > claimed


def test_duplicate_uid_is_0111(service):
    uid = create(service)
    before = service.retrieve_json(uid)
    with pytest.raises(errors.DuplicateWorkitem) as info:
        service.create(sample_workitem(label="other"), uid, ACTOR)
    assert int(info.value.status) == 0x0111 and info.value.http_status == 409
    assert service.retrieve_json(uid) == before
    assert len(service.history(uid)) == 1


def test_create_accepts_dicom_json_too(service):
    uid = generate_uid()
    service.create(sample_workitem().to_json_dict(), uid, ACTOR)
    assert service.retrieve(uid).ProcedureStepLabel == "Segment liver lesions"


def test_create_does_not_change_the_callers_dataset(service):
    ds = sample_workitem(worklist_label="")
    copy = ds.to_json_dict()
    service.create(ds, generate_uid(), ACTOR)
    assert ds.to_json_dict() == copy


# -- N-SET (PS3.4 CC.2.6) -------------------------------------------------------------
@pytest.mark.parametrize(("changes", "error", "status", "attribute"), [
    (dict(ProcedureStepState="COMPLETED"), errors.NoSuchAttribute, 0x0105, "ProcedureStepState"),
    (dict(PatientName="Roe^Richard"), errors.NoSuchAttribute, 0x0105, "PatientName"),
    (dict(PatientID="OTHER"), errors.NoSuchAttribute, 0x0105, "PatientID"),
    (dict(PatientBirthDate="19700101"), errors.NoSuchAttribute, 0x0105, "PatientBirthDate"),
    (dict(SOPInstanceUID="1.2.3.4"), errors.NoSuchAttribute, 0x0105, "SOPInstanceUID"),
    (dict(SOPClassUID="1.2.840.10008.5.1.4.1.1.2"), errors.NoSuchAttribute, 0x0105,
     "SOPClassUID"),
    (dict(ProcedureStepLabel=""), errors.MissingAttributeValue, 0x0121, "ProcedureStepLabel"),
    (dict(ScheduledProcedureStepPriority=""), errors.MissingAttributeValue, 0x0121,
     "ScheduledProcedureStepPriority"),
    (dict(ScheduledProcedureStepStartDateTime=""), errors.MissingAttributeValue, 0x0121,
     "ScheduledProcedureStepStartDateTime"),
    (dict(ScheduledProcedureStepPriority="URGENT"), errors.InvalidAttributeValue, 0x0106, None),
])
def test_update_refusals(service, events, changes, error, status, attribute):
    uid = create(service)
    before = service.retrieve_json(uid)
    events.events.clear()
    # Mixed with an allowed change: the whole update is refused (atomic, CC.2.6.2).
    with pytest.raises(errors.UPSError) as info:
        service.update(uid, make(WorklistLabel="Changed", **changes), None, ACTOR)
    assert type(info.value) is error
    assert int(info.value.status) == status
    if attribute:
        assert info.value.attribute == attribute
    assert service.retrieve_json(uid) == before
    assert events.events == []
    assert [h["action"] for h in service.history(uid)] == ["CREATE"]
    # the indexed columns are untouched too
    assert service.search(matching.parse_identifier(make(WorklistLabel="Changed"))).items == []


def test_update_with_the_same_sop_instance_uid_is_allowed(service):
    uid = create(service)
    service.update(uid, make(SOPInstanceUID=uid, ProcedureStepLabel="x"), None, ACTOR)
    assert service.retrieve(uid).ProcedureStepLabel == "x"


def test_update_of_a_final_workitem_leaves_it_byte_identical(service):
    for state in (C, X):
        uid, tx = in_state(service, state)
        before = service.retrieve_json(uid)
        with pytest.raises(errors.MayNoLongerBeUpdated):
            service.update(uid, make(ProcedureStepLabel="late"), tx, ACTOR)
        assert service.retrieve_json(uid) == before


def test_sequences_are_replaced_whole(service):
    uid = create(service, performer="reader1")
    tx = claim(service, uid)
    service.update(uid, make(ScheduledHumanPerformersSequence=[
        performer_item("reader2", "Reader Two"), performer_item("reader3", "Reader Three")],
        ScheduledWorkitemCodeSequence=[code_item("SR", "DCM", "Report")]), tx, ACTOR)
    ds = service.retrieve(uid)
    assert [p.HumanPerformerName for p in ds.ScheduledHumanPerformersSequence] == [
        "Reader Two", "Reader Three"]
    assert [c.CodeValue for c in ds.ScheduledWorkitemCodeSequence] == ["SR"]

    def found(**item):
        q = matching.parse_identifier(make(ScheduledHumanPerformersSequence=[make(**item)]))
        return len(service.search(q).items)

    # the side tables follow: the old performer is gone, the new ones are indexed
    assert found(HumanPerformerName="Reader1") == 0
    assert found(HumanPerformerName="Reader Three") == 1
    assert found(HumanPerformerCodeSequence=[make(CodeValue="reader2")]) == 1
    # an empty sequence removes every item
    service.update(uid, make(ScheduledHumanPerformersSequence=[]), tx, ACTOR)
    assert len(service.retrieve(uid).ScheduledHumanPerformersSequence) == 0
    assert found(HumanPerformerName="Reader Three") == 0


def test_update_keeps_the_attributes_it_does_not_name(service):
    uid = create(service, patient_id="P77")
    before = stored_json(service, uid)
    service.update(uid, make(ProcedureStepLabel="Relabelled"), None, ACTOR)
    after = stored_json(service, uid)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert changed == {"00741204", "00404010"}  # the label and the modification date-time


def test_update_refills_an_emptied_worklist_label(service):
    uid = create(service, worklist_label="Liver")
    service.update(uid, make(WorklistLabel=""), None, ACTOR)
    assert service.retrieve(uid).WorklistLabel == "default"


def test_update_history_records_before_and_after(service):
    uid = create(service, label="Old")
    service.update(uid, make(ProcedureStepLabel="New"), None, Actor(Protocol.DIMSE, "SCU1"))
    entry = service.history(uid)[-1]
    assert entry["action"] == "UPDATE" and entry["actor"] == "SCU1"
    assert entry["changes"]["set"]["00741204"]["Value"] == ["New"]
    assert entry["changes"]["before"]["00741204"]["Value"] == ["Old"]


def test_history_is_append_only(service, store):
    uid = create(service)
    tx = claim(service, uid)
    service.update(uid, make(ProcedureStepLabel="x"), tx, ACTOR)
    assert [h["action"] for h in service.history(uid)] == ["CREATE", "CHANGE STATE", "UPDATE"]
    for sql in ("UPDATE history SET actor = 'someone else'", "DELETE FROM history"):
        with pytest.raises(DBAPIError, match="append-only"):
            with store.engine.begin() as conn:
                conn.exec_driver_sql(sql)
    assert [h["actor"] for h in service.history(uid)] == ["tester"] * 3


# -- the Transaction UID is never returned (PS3.4 CC.2.7.3, CC.2.8.3) -----------------
def test_transaction_uid_never_in_retrieve_or_search(service):
    uids = [create(service, worklist_label="TX") for _ in range(3)]
    txs = [claim(service, u) for u in uids[:2]]
    service.update(uids[0], make(ProcedureStepLabel="x", TransactionUID=txs[0]), txs[0], ACTOR)
    service.update(uids[1], final_state_attributes(), txs[1], ACTOR)
    service.change_state(uids[1], "COMPLETED", txs[1], ACTOR)
    texts = [service.retrieve_json(u) for u in uids]
    for q in (make(WorklistLabel="TX"), make(WorklistLabel="TX", PatientName="*"),
              make(WorklistLabel="TX", CommentsOnTheScheduledProcedureStep="")):
        texts += service.search(matching.parse_identifier(q), limit=10).items
    texts += list(service.iter_search(matching.parse_identifier(make(WorklistLabel="TX"))))
    assert len(texts) == 3 + 9 + 3
    for text in texts:
        assert TX_KEY not in json.loads(text)
        for tx in txs:
            assert tx not in text
    for u in uids:
        assert "TransactionUID" not in service.retrieve(u)


def test_transaction_uid_cannot_be_a_search_key():
    with pytest.raises(errors.InvalidRequest):
        matching.parse_identifier(make(TransactionUID=""))


# -- events (PS3.4 CC.2.4.3) ---------------------------------------------------------
def test_events_of_creation(service, events):
    uid = create(service)
    [report] = events.events
    assert report.event_type is EventType.UPS_STATE_REPORT and report.created
    assert report.uid == uid and report.worklist_label == "default"
    assert value(report.attributes, "00741000") == S
    assert value(report.attributes, "00404041") == "READY"
    events.events.clear()
    uid = create(service, performer="reader1", worklist_label="Liver")
    assert [e.event_type for e in events.events] == [EventType.UPS_STATE_REPORT,
                                                      EventType.UPS_ASSIGNED]
    assigned = events.events[1]
    assert assigned.uid == uid and assigned.worklist_label == "Liver"
    performer = assigned.attributes["00404034"]["Value"][0]
    assert performer["00404009"]["Value"][0]["00080100"]["Value"] == ["reader1"]


def test_events_of_state_changes(service, events):
    uid = create(service)
    events.events.clear()
    tx = claim(service, uid)
    service.update(uid, final_state_attributes(), tx, ACTOR)
    service.change_state(uid, "COMPLETED", tx, ACTOR)
    reports = [e for e in events.events if e.event_type is EventType.UPS_STATE_REPORT]
    assert [value(e.attributes, "00741000") for e in reports] == [P, C]
    assert not any(e.created for e in events.events)
    assert all(e.uid == uid for e in events.events)


def test_events_of_updates(service, events):
    uid = create(service, worklist_label="Liver")
    tx = claim(service, uid)
    events.events.clear()
    # Input readiness change: a State Report carrying the new readiness.
    service.update(uid, make(InputReadinessState="INCOMPLETE"), tx, ACTOR)
    [event] = events.events
    assert event.event_type is EventType.UPS_STATE_REPORT
    assert value(event.attributes, "00404041") == "INCOMPLETE"
    assert value(event.attributes, "00741000") == P
    events.events.clear()
    # Performers set: UPS Assigned.
    service.update(uid, make(ScheduledHumanPerformersSequence=[
        performer_item("reader9", "Reader Nine")]), tx, ACTOR)
    [event] = events.events
    assert event.event_type is EventType.UPS_ASSIGNED
    assert event.attributes["00404034"]["Value"][0]["00404037"]["Value"] == [
        {"Alphabetic": "Reader Nine"}]
    events.events.clear()
    # Progress information: a Progress Report.
    service.update(uid, make(ProcedureStepProgressInformationSequence=[make(
        ProcedureStepProgress=40, ProcedureStepProgressDescription="Half way")]), tx, ACTOR)
    [event] = events.events
    assert event.event_type is EventType.UPS_PROGRESS_REPORT
    item = event.attributes["00741002"]["Value"][0]
    assert item["00741004"]["Value"] == [40]
    assert item["00741006"]["Value"] == ["Half way"]
    assert event.worklist_label == "Liver"
    events.events.clear()
    # Anything else: no event.
    service.update(uid, make(ProcedureStepLabel="quiet"), tx, ACTOR)
    assert events.events == []


def test_a_failing_publisher_does_not_undo_the_change(store):
    class Broken:
        def publish(self, events):
            raise RuntimeError("subscriber gone")

    service = WorklistService(store, events=Broken())
    uid = create(service)
    claim(service, uid)
    assert service.state_of(uid) == P


# -- the claim race (PS3.4 CC.2.1.2: exactly one performer wins) -----------------------
def test_sixteen_threads_race_to_claim(service):
    uid = create(service)
    n = 16
    barrier = threading.Barrier(n)
    outcomes: list[tuple[str, object]] = []
    lock = threading.Lock()

    def claimant() -> None:
        tx = generate_uid()
        barrier.wait(timeout=30)
        try:
            service.change_state(uid, "IN PROGRESS", tx, Actor(Protocol.DIMSE, "T"))
            result = ("won", tx)
        except errors.UPSError as exc:
            result = (type(exc).__name__, int(exc.status))
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=claimant) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(outcomes) == n
    winners = [o for o in outcomes if o[0] == "won"]
    assert len(winners) == 1
    assert sorted(o for o in outcomes if o[0] != "won") == [("AlreadyInProgress", 0xC302)] * 15
    # The winner's Transaction UID is the one recorded.
    tx = winners[0][1]
    service.update(uid, final_state_attributes(), tx, ACTOR)
    assert service.change_state(uid, "COMPLETED", tx, ACTOR) is None
    history = service.history(uid)
    assert [h["action"] for h in history].count("CHANGE STATE") == 2  # claim + complete


def test_processes_race_to_claim(service, db_url):
    """Two processes (spawned, each with its own engine), four claimant threads each,
    all released together on each of several workitems of one SQLite file."""
    uids = [create(service) for _ in range(5)]
    ctx = multiprocessing.get_context("spawn")
    processes, threads = 2, 4
    n = processes * threads
    barrier = ctx.Barrier(n)
    results = ctx.Queue()
    procs = [ctx.Process(target=_race_worker.claim_all,
                         args=(db_url, uids, f"proc{i}", barrier, results, threads))
             for i in range(processes)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in range(n * len(uids))]
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    for uid in uids:
        mine = [o for o in outcomes if o[1] == uid]
        assert len(mine) == n
        assert {o[0].split(".")[0] for o in mine} == {"proc0", "proc1"}
        winners = [o for o in mine if o[2] == "won"]
        assert len(winners) == 1, mine
        assert sorted(o[2:] for o in mine if o[2] != "won") == [("AlreadyInProgress",
                                                                 0xC302)] * (n - 1)
        # The recorded Transaction UID is the winning claimant's.
        tx = winners[0][3]
        with pytest.raises(errors.WrongTransactionUID):
            service.update(uid, make(ProcedureStepLabel="x"), generate_uid(), ACTOR)
        service.update(uid, make(ProcedureStepLabel="done by " + winners[0][0]), tx, ACTOR)
        assert service.state_of(uid) == P


# -- the page cache ------------------------------------------------------------------
def test_cached_pages_follow_every_change(tmp_path):
    """A page is served from the cache only while the database is unchanged: a change
    by this service, or by another process's connection to the same file, is seen by
    the very next search."""
    url = "sqlite:///" + str(tmp_path / "shared.db")
    ours, theirs = WorklistService(open_store(url)), WorklistService(open_store(url))
    query = matching.parse_identifier(make(WorklistLabel="CACHE", ProcedureStepState="SCHEDULED"))
    uids = [ours.create(sample_workitem(worklist_label="CACHE", with_uid=True), None, ACTOR).uid
            for _ in range(3)]
    first = ours.search(query, limit=2)
    assert ours.search(query, limit=2) == first and ours.pages.hits >= 1
    claim(theirs, uids[0])                      # another connection changes the data
    after = ours.search(query, limit=2)
    assert uids[0] not in "".join(after.items) and after.remaining == 0
    claim(ours, uids[1])                        # and so does this service
    assert [json.loads(t)["00080018"]["Value"][0] for t in ours.search(query).items] == \
        [uids[2]]
    assert ours.pages.misses >= 3


def test_postgres_pages_are_not_cached(postgres):
    svc = WorklistService(open_store(postgres.new_database()))
    query = matching.parse_identifier(make(WorklistLabel="X"))
    svc.search(query)
    svc.search(query)
    assert svc.store.version() is None and svc.pages.hits == 0
