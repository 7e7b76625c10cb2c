"""UPS-RS Push/Pull transactions over real sockets (PS3.18 11.4-11.8), on SQLite and
PostgreSQL: Create, Retrieve, Update, Change State, Request Cancellation, and every
(state, action) pair of the state table.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Server
from worklist.dicomjson import dataset_to_json_dict
from worklist.sample import final_state_attributes, sample_workitem_json

from .upsrs_helpers import (DATABASES, DICOM_JSON, assert_error, assert_ok, bring_to,
                            change_state, claim, create, dataset, history, module_server,
                            new_uid, retrieve, state_body, tag, update)

TX = tag("TransactionUID")
STATE = tag("ProcedureStepState")


@pytest.fixture(scope="module", params=DATABASES)
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per database for the whole module (overrides conftest's ``server``;
    conftest's ``client`` talks to it)."""
    yield from module_server(request, tmp_path_factory)


def post_workitem(client: httpx.Client, body: Any, params: Any = None) -> httpx.Response:
    return client.post("/workitems", params=params, json=body,
                       headers={"Content-Type": DICOM_JSON, "Accept": DICOM_JSON})


# -- Create (PS3.18 11.4) ----------------------------------------------------------------
def _created(client: httpx.Client, r: httpx.Response, uid: str) -> None:
    assert_ok(r, 201)
    location = f"{str(client.base_url).rstrip('/')}/workitems/{uid}"
    assert r.headers["location"] == location
    assert r.headers["content-location"] == location
    ds = retrieve(client, uid)
    assert ds[tag("SOPInstanceUID")]["Value"] == [uid]
    assert ds[STATE]["Value"] == ["SCHEDULED"]


@pytest.mark.parametrize("body_as", ["object", "array of one"])
@pytest.mark.parametrize("uid_in", ["?workitem=UID", "bare ?UID", "SOP Instance UID in body"])
def test_create(client: httpx.Client, uid_in: str, body_as: str) -> None:
    uid = new_uid()
    body = sample_workitem_json()
    if uid_in == "?workitem=UID":
        url = f"/workitems?workitem={uid}"
    elif uid_in == "bare ?UID":
        url = f"/workitems?{uid}"
    else:
        url = "/workitems"
        body[tag("SOPInstanceUID")] = {"vr": "UI", "Value": [uid]}
    r = client.post(url, json=[body] if body_as == "array of one" else body,
                    headers={"Content-Type": DICOM_JSON})
    _created(client, r, uid)


def test_create_fills_worklist_label_and_modification_datetime(client: httpx.Client) -> None:
    body = sample_workitem_json()
    body[tag("WorklistLabel")] = {"vr": "LO"}  # Type 2/1: the server fills it
    uid = create(client, body)
    ds = retrieve(client, uid)
    assert ds[tag("WorklistLabel")]["Value"] == ["default"]
    assert ds[tag("ScheduledProcedureStepModificationDateTime")]["Value"][0]
    assert TX not in ds


def test_create_duplicate_is_409(client: httpx.Client) -> None:
    uid = create(client)
    before = client.get(f"/workitems/{uid}").content
    body = sample_workitem_json(label="another")
    assert_error(post_workitem(client, body, {"workitem": uid}), 409, dimse=0x0111,
                 mentions=(uid,))
    assert client.get(f"/workitems/{uid}").content == before


def _without(keyword: str) -> dict[str, Any]:
    body = sample_workitem_json()
    del body[tag(keyword)]
    return body


def _with(keyword: str, vr: str, *values: Any) -> dict[str, Any]:
    body = sample_workitem_json()
    body[tag(keyword)] = {"vr": vr, "Value": list(values)} if values else {"vr": vr}
    return body


def _request_item_without_accession() -> dict[str, Any]:
    body = sample_workitem_json()
    del body[tag("ReferencedRequestSequence")]["Value"][0][tag("AccessionNumber")]
    return body


def _progress_at_creation() -> dict[str, Any]:
    body = sample_workitem_json()
    body[tag("ProcedureStepProgressInformationSequence")]["Value"] = [
        {tag("ProcedureStepProgress"): {"vr": "DS", "Value": [50]}}]
    return body


# Each violation of the N-CREATE column of PS3.4 Table CC.2.5-3 (and of PS3.4 CC.2.5.3):
# (body, DIMSE status, what the message must name)
CREATE_VIOLATIONS = {
    "Type 1 absent": (lambda: _without("ScheduledProcedureStepPriority"), 0x0120,
                      "ScheduledProcedureStepPriority"),
    "Type 1 empty": (lambda: _with("ProcedureStepLabel", "LO"), 0x0121, "ProcedureStepLabel"),
    "Type 1 in an item absent": (
        lambda: _with("ScheduledWorkitemCodeSequence", "SQ",
                      {tag("CodeValue"): {"vr": "SH", "Value": ["SEG"]},
                       tag("CodingSchemeDesignator"): {"vr": "SH", "Value": ["99WORKLIST"]}}),
        0x0120, "ScheduledWorkitemCodeSequence[1] > CodeMeaning"),
    "Type 2 absent": (lambda: _without("PatientName"), 0x0120, "PatientName"),
    "Type 2 in an item absent": (_request_item_without_accession, 0x0120,
                                 "ReferencedRequestSequence[1] > AccessionNumber"),
    "not allowed at creation": (_progress_at_creation, 0x0105,
                                "ProcedureStepProgressInformationSequence[1] > "
                                "ProcedureStepProgress"),
    "enumerated value": (lambda: _with("ScheduledProcedureStepPriority", "CS", "URGENT"),
                         0x0106, "ScheduledProcedureStepPriority"),
    "state absent": (lambda: _without("ProcedureStepState"), 0x0120, "Procedure Step State"),
    "state not SCHEDULED": (lambda: _with("ProcedureStepState", "CS", "IN PROGRESS"), 0xC309,
                            "SCHEDULED"),
    "Transaction UID with a value": (lambda: _with("TransactionUID", "UI", "1.2.3"), 0x0106,
                                     "Transaction UID"),
    "wrong VR": (lambda: _with("PatientID", "SH", "P1"), 0x0106, "PatientID"),
    "invalid date-time": (lambda: _with("ScheduledProcedureStepStartDateTime", "DT",
                                        "20261341"), 0x0106,
                          "ScheduledProcedureStepStartDateTime"),
    "invalid UID": (lambda: _with("StudyInstanceUID", "UI", "1.02.x"), 0x0106,
                    "StudyInstanceUID"),
    "not a UPS": (lambda: _with("SOPClassUID", "UI", "1.2.840.10008.5.1.4.1.1.2"), 0x0106,
                  "SOP Class UID"),
    "unknown attribute": (lambda: _with("PatientID", "LO", "P1") | {
        "00100011": {"vr": "LO", "Value": ["x"]}}, 0x0105, "(0010,0011)"),
}


@pytest.mark.parametrize("case", CREATE_VIOLATIONS, ids=str)
def test_create_violation_is_400_naming_the_attribute(client: httpx.Client, case: str) -> None:
    make, dimse, name = CREATE_VIOLATIONS[case]
    uid = new_uid()
    assert_error(post_workitem(client, make(), {"workitem": uid}), 400, dimse=dimse,
                 mentions=(name,))
    assert_error(client.get(f"/workitems/{uid}"), 404)  # nothing was created


def test_create_without_any_uid_is_400(client: httpx.Client) -> None:
    assert_error(post_workitem(client, sample_workitem_json()), 400, dimse=0x0120,
                 mentions=("SOP Instance UID",))


def test_create_with_two_different_uids_is_400(client: httpx.Client) -> None:
    body = sample_workitem_json(with_uid=True)
    assert_error(post_workitem(client, body, {"workitem": new_uid()}), 400,
                 mentions=("SOP Instance UID",))


@pytest.mark.parametrize("query", ["workitem=1.02.3", "workitem=abc", "1.2.3x"])
def test_create_with_invalid_uid_is_400(client: httpx.Client, query: str) -> None:
    assert_error(client.post(f"/workitems?{query}", json=sample_workitem_json(),
                             headers={"Content-Type": DICOM_JSON}), 400, mentions=("UID",))


# -- Retrieve (PS3.18 11.5) --------------------------------------------------------------
@pytest.mark.parametrize("state", ["SCHEDULED", "IN PROGRESS", "COMPLETED", "CANCELED"])
def test_retrieve(client: httpx.Client, state: str) -> None:
    uid, _ = bring_to(client, state)
    r = client.get(f"/workitems/{uid}", headers={"Accept": DICOM_JSON})
    assert_ok(r, 200)
    assert r.headers["content-type"] == DICOM_JSON
    items = r.json()
    assert isinstance(items, list) and len(items) == 1
    assert items[0][STATE]["Value"] == [state]
    # PS3.18 11.5.2: never the Transaction UID, not even for its performer.
    assert f'"{TX}"' not in r.text


def test_retrieve_unknown_is_404(client: httpx.Client) -> None:
    uid = new_uid()
    assert_error(client.get(f"/workitems/{uid}"), 404, dimse=0xC307, mentions=(uid,))


# -- Update (PS3.18 11.6) ----------------------------------------------------------------
LABEL = tag("ProcedureStepLabel")


def _label(text: str) -> dict[str, Any]:
    return dataset(ProcedureStepLabel=text)


def test_update_scheduled(client: httpx.Client) -> None:
    uid = create(client)
    before = retrieve(client, uid)
    assert_ok(update(client, uid, _label("Segment the spleen")), 200)
    after = retrieve(client, uid)
    assert after[LABEL]["Value"] == ["Segment the spleen"]
    assert after[tag("ScheduledProcedureStepModificationDateTime")] != \
        before[tag("ScheduledProcedureStepModificationDateTime")]
    rows = history(client, uid)
    assert [r["action"] for r in rows] == ["CREATE", "UPDATE"]
    assert rows[1]["protocol"] == "UPS-RS"


def test_update_replaces_sequences_whole(client: httpx.Client) -> None:
    uid = create(client, performer="reader1")
    body = sample_workitem_json(performer="reader2")
    seq = tag("ScheduledHumanPerformersSequence")
    assert_ok(update(client, uid, {seq: body[seq]}), 200)
    items = retrieve(client, uid)[seq]["Value"]
    assert len(items) == 1
    assert items[0][tag("HumanPerformerName")]["Value"] == [{"Alphabetic": "Reader2"}]


@pytest.mark.parametrize("spelling", ["transaction-uid", "Transaction-UID", "bare"])
def test_update_in_progress_with_transaction_uid(client: httpx.Client, spelling: str) -> None:
    uid, tx = bring_to(client, "IN PROGRESS")
    query = tx if spelling == "bare" else f"{spelling}={tx}"
    r = client.post(f"/workitems/{uid}?{query}", json=_label("Now with the lock"),
                    headers={"Content-Type": DICOM_JSON})
    assert_ok(r, 200)
    assert retrieve(client, uid)[LABEL]["Value"] == ["Now with the lock"]


@pytest.mark.parametrize("given, text", [(None, "The Transaction UID is missing."),
                                         ("wrong", "The Transaction UID is incorrect.")])
def test_update_in_progress_without_the_lock_is_400(client: httpx.Client, given: str | None,
                                                    text: str) -> None:
    uid, _ = bring_to(client, "IN PROGRESS")
    before = client.get(f"/workitems/{uid}").content
    r = update(client, uid, _label("Stolen"), new_uid() if given else None)
    assert_error(r, 400, dimse=0xC301, warning_text=text, client=client,
                 mentions=("Transaction UID",))
    assert client.get(f"/workitems/{uid}").content == before


def test_update_scheduled_with_transaction_uid_is_409(client: httpx.Client) -> None:
    uid = create(client)
    before = client.get(f"/workitems/{uid}").content
    assert_error(update(client, uid, _label("x"), new_uid()), 409, dimse=0xC310,
                 warning_text="The target URI did not reference a claimed Workitem.",
                 client=client, mentions=("SCHEDULED",))
    assert client.get(f"/workitems/{uid}").content == before


@pytest.mark.parametrize("state", ["COMPLETED", "CANCELED"])
def test_update_final_is_400(client: httpx.Client, state: str) -> None:
    uid, tx = bring_to(client, state)
    before = client.get(f"/workitems/{uid}").content
    assert_error(update(client, uid, _label("Too late"), tx), 400, dimse=0xC300,
                 mentions=(state,))
    assert client.get(f"/workitems/{uid}").content == before


# PS3.4 CC.2.6.2 / Table CC.2.5-3 N-SET column: (body, DIMSE status, what the message names)
REFUSED_UPDATES = {
    "ProcedureStepState": ({STATE: {"vr": "CS", "Value": ["COMPLETED"]}}, 0x0105,
                           "Procedure Step State"),
    "PatientName": (dataset(PatientName="Other^Name"), 0x0105, "PatientName"),
    "PatientID": (dataset(PatientID="P2"), 0x0105, "PatientID"),
    "ReferencedRequestSequence": ({tag("ReferencedRequestSequence"): {"vr": "SQ", "Value": []}},
                                  0x0105, "ReferencedRequestSequence"),
    "SOPInstanceUID": (dataset(SOPInstanceUID="1.2.3.4"), 0x0105, "SOPInstanceUID"),
    "invalid priority": (dataset(ScheduledProcedureStepPriority="SOON"), 0x0106,
                         "ScheduledProcedureStepPriority"),
}


@pytest.mark.parametrize("case", REFUSED_UPDATES)
def test_update_refused_attribute_is_400(client: httpx.Client, case: str) -> None:
    uid = create(client)
    before = client.get(f"/workitems/{uid}").content
    body, dimse, name = REFUSED_UPDATES[case]
    assert_error(update(client, uid, body), 400, dimse=dimse, mentions=(name,))
    assert client.get(f"/workitems/{uid}").content == before


def test_update_unknown_is_404(client: httpx.Client) -> None:
    assert_error(update(client, new_uid(), _label("x")), 404, dimse=0xC307)


# -- Change State (PS3.18 11.7) ----------------------------------------------------------
def test_change_state_lifecycle(client: httpx.Client) -> None:
    uid = create(client)
    tx = claim(client, uid)
    assert retrieve(client, uid)[STATE]["Value"] == ["IN PROGRESS"]
    # Another performer cannot claim it again.
    assert_error(change_state(client, uid, "IN PROGRESS", new_uid()), 409, dimse=0xC302)
    # Not yet complete: the final-state requirements name what is missing.
    assert_error(change_state(client, uid, "COMPLETED", tx), 400, dimse=0xC304,
                 mentions=("UnifiedProcedureStepPerformedProcedureSequence",))
    assert retrieve(client, uid)[STATE]["Value"] == ["IN PROGRESS"]
    assert_ok(update(client, uid, dataset_to_json_dict(final_state_attributes()), tx), 200)
    assert_ok(change_state(client, uid, "COMPLETED", tx), 200)
    assert retrieve(client, uid)[STATE]["Value"] == ["COMPLETED"]
    assert_ok(change_state(client, uid, "COMPLETED", tx), 200, client=client,
              warning_text="The UPS is already in the requested state of COMPLETED.")
    rows = history(client, uid)
    assert [(r["action"], r["state_after"]) for r in rows] == [
        ("CREATE", "SCHEDULED"), ("CHANGE STATE", "IN PROGRESS"), ("UPDATE", "IN PROGRESS"),
        ("CHANGE STATE", "COMPLETED")]


def test_cancel_by_performer(client: httpx.Client) -> None:
    uid, tx = bring_to(client, "IN PROGRESS")
    assert_ok(change_state(client, uid, "CANCELED", tx), 200)
    ds = retrieve(client, uid)
    assert ds[STATE]["Value"] == ["CANCELED"]
    progress = ds[tag("ProcedureStepProgressInformationSequence")]["Value"][0]
    assert progress[tag("ProcedureStepCancellationDateTime")]["Value"][0]
    assert_ok(change_state(client, uid, "CANCELED", tx), 200, client=client,
              warning_text="The UPS is already in the requested state of CANCELED.")


@pytest.mark.parametrize("state", ["COMPLETED", "CANCELED"])
def test_change_state_of_scheduled_is_409(client: httpx.Client, state: str) -> None:
    uid = create(client)
    assert_error(change_state(client, uid, state, new_uid()), 409, dimse=0xC310)
    assert retrieve(client, uid)[STATE]["Value"] == ["SCHEDULED"]


@pytest.mark.parametrize("target", ["COMPLETED", "CANCELED", "IN PROGRESS"])
def test_change_state_without_transaction_uid_is_400(client: httpx.Client, target: str) -> None:
    uid, _ = bring_to(client, "IN PROGRESS")
    assert_error(change_state(client, uid, target, None), 400, dimse=0xC301,
                 warning_text="The Transaction UID is missing.", client=client,
                 mentions=("Transaction UID",))
    assert retrieve(client, uid)[STATE]["Value"] == ["IN PROGRESS"]


@pytest.mark.parametrize("target", ["COMPLETED", "CANCELED"])
def test_change_state_with_wrong_transaction_uid_is_400(client: httpx.Client,
                                                        target: str) -> None:
    uid, _ = bring_to(client, "IN PROGRESS")
    assert_error(change_state(client, uid, target, new_uid()), 400, dimse=0xC301,
                 warning_text="The Transaction UID is incorrect.", client=client,
                 mentions=("Transaction UID",))
    assert retrieve(client, uid)[STATE]["Value"] == ["IN PROGRESS"]


@pytest.mark.parametrize("body, mentions", [
    (state_body("DONE", "1.2.3"), "DONE"),
    (dataset(TransactionUID="1.2.3"), "Procedure Step State"),
    (state_body("COMPLETED", "1.2.3") | dataset(PatientID="P1"), "PatientID"),
    ({STATE: {"vr": "CS", "Value": ["IN PROGRESS"]}, TX: {"vr": "UI", "Value": ["1.02.3"]}},
     "1.02.3"),
])
def test_change_state_invalid_body_is_400(client: httpx.Client, body: dict[str, Any],
                                          mentions: str) -> None:
    uid = create(client)
    r = client.put(f"/workitems/{uid}/state", json=body, headers={"Content-Type": DICOM_JSON})
    assert_error(r, 400, mentions=(mentions,))
    assert retrieve(client, uid)[STATE]["Value"] == ["SCHEDULED"]


def test_change_state_unknown_is_404(client: httpx.Client) -> None:
    assert_error(change_state(client, new_uid(), "IN PROGRESS", new_uid()), 404, dimse=0xC307)


# -- Request Cancellation (PS3.18 11.8) --------------------------------------------------
def _progress(ds: dict[str, Any]) -> dict[str, Any]:
    return ds[tag("ProcedureStepProgressInformationSequence")]["Value"][0]


def test_request_cancel_scheduled_cancels_it(client: httpx.Client) -> None:
    uid = create(client)
    r = client.post(f"/workitems/{uid}/cancelrequest")
    assert_ok(r, 202)
    ds = retrieve(client, uid)
    assert ds[STATE]["Value"] == ["CANCELED"]
    progress = _progress(ds)
    assert progress[tag("ProcedureStepCancellationDateTime")]["Value"][0]
    reason = progress[tag("ProcedureStepDiscontinuationReasonCodeSequence")]["Value"][0]
    assert reason[tag("CodeValue")]["Value"] == ["110513"]
    assert reason[tag("CodingSchemeDesignator")]["Value"] == ["DCM"]
    rows = history(client, uid)
    assert (rows[-1]["action"], rows[-1]["state_before"], rows[-1]["state_after"]) == \
        ("REQUEST CANCEL", "SCHEDULED", "CANCELED")


def test_request_cancel_with_reason_and_contact(client: httpx.Client) -> None:
    uid = create(client)
    body = dataset(ReasonForCancellation="Study was repeated",
                   ContactURI="mailto:lead@example.org", ContactDisplayName="Lead reader")
    r = client.post(f"/workitems/{uid}/cancelrequest", json=body,
                    headers={"Content-Type": DICOM_JSON})
    assert_ok(r, 202)
    progress = _progress(retrieve(client, uid))
    assert progress[tag("ReasonForCancellation")]["Value"] == ["Study was repeated"]
    contact = progress[tag("ProcedureStepCommunicationsURISequence")]["Value"][0]
    assert contact[tag("ContactURI")]["Value"] == ["mailto:lead@example.org"]


def test_request_cancel_in_progress_is_recorded(client: httpx.Client) -> None:
    uid, tx = bring_to(client, "IN PROGRESS")
    before = client.get(f"/workitems/{uid}").content
    r = client.post(f"/workitems/{uid}/cancelrequest",
                    json=dataset(ReasonForCancellation="Wrong series"),
                    headers={"Content-Type": DICOM_JSON})
    assert_ok(r, 202)
    assert client.get(f"/workitems/{uid}").content == before  # still IN PROGRESS, untouched
    row = history(client, uid)[-1]
    assert (row["action"], row["state_before"], row["state_after"]) == \
        ("REQUEST CANCEL", "IN PROGRESS", "IN PROGRESS")
    assert row["changes"]["request"][tag("ReasonForCancellation")]["Value"] == ["Wrong series"]
    # The performer still holds the lock and decides.
    assert_ok(change_state(client, uid, "CANCELED", tx), 200)


def test_request_cancel_canceled_warns(client: httpx.Client) -> None:
    uid, _ = bring_to(client, "CANCELED")
    assert_ok(client.post(f"/workitems/{uid}/cancelrequest"), 202, client=client,
              warning_text="The UPS is already in the requested state of CANCELED.")


def test_request_cancel_completed_is_409(client: httpx.Client) -> None:
    uid, _ = bring_to(client, "COMPLETED")
    assert_error(client.post(f"/workitems/{uid}/cancelrequest"), 409, dimse=0xC311,
                 warning_text="The UPS is already COMPLETED.", client=client)


def test_request_cancel_with_other_attributes_is_400(client: httpx.Client) -> None:
    uid = create(client)
    r = client.post(f"/workitems/{uid}/cancelrequest", json=dataset(PatientID="P9"),
                    headers={"Content-Type": DICOM_JSON})
    assert_error(r, 400, mentions=("PatientID",))
    assert retrieve(client, uid)[STATE]["Value"] == ["SCHEDULED"]


def test_request_cancel_unknown_is_404(client: httpx.Client) -> None:
    assert_error(client.post(f"/workitems/{new_uid()}/cancelrequest"), 404, dimse=0xC307)


# -- the state table over HTTP (PS3.4 CC.1.1, CC.2.1.3, CC.2.2.3, CC.2.6.3) ---------------
_INCONSISTENT = "The submitted request is inconsistent with the state of the UPS Instance."
_INCONSISTENT_UPDATE = "The submitted request is inconsistent with the current state of the " \
    "Workitem."
_ALREADY = "The UPS is already in the requested state of {}."

# (state, action) -> (HTTP status, DIMSE status or None, Warning text or None, state after)
# Change State actions send the Transaction UID recorded for the workitem (a new one when
# it has none); Update sends it as the query parameter when there is one.
STATE_TABLE: dict[tuple[str, str], tuple[int, int | None, str | None, str]] = {
    ("SCHEDULED", "IN PROGRESS"): (200, None, None, "IN PROGRESS"),
    ("IN PROGRESS", "IN PROGRESS"): (409, 0xC302, _INCONSISTENT, "IN PROGRESS"),
    ("COMPLETED", "IN PROGRESS"): (400, 0xC300, _INCONSISTENT, "COMPLETED"),
    ("CANCELED", "IN PROGRESS"): (400, 0xC300, _INCONSISTENT, "CANCELED"),
    ("SCHEDULED", "COMPLETED"): (409, 0xC310, _INCONSISTENT, "SCHEDULED"),
    ("IN PROGRESS", "COMPLETED"): (200, None, None, "COMPLETED"),
    ("COMPLETED", "COMPLETED"): (200, None, _ALREADY.format("COMPLETED"), "COMPLETED"),
    ("CANCELED", "COMPLETED"): (400, 0xC300, _INCONSISTENT, "CANCELED"),
    ("SCHEDULED", "CANCELED"): (409, 0xC310, _INCONSISTENT, "SCHEDULED"),
    ("IN PROGRESS", "CANCELED"): (200, None, None, "CANCELED"),
    ("COMPLETED", "CANCELED"): (400, 0xC300, _INCONSISTENT, "COMPLETED"),
    ("CANCELED", "CANCELED"): (200, None, _ALREADY.format("CANCELED"), "CANCELED"),
    ("SCHEDULED", "SCHEDULED"): (409, 0xC303, _INCONSISTENT, "SCHEDULED"),
    ("IN PROGRESS", "SCHEDULED"): (409, 0xC303, _INCONSISTENT, "IN PROGRESS"),
    ("COMPLETED", "SCHEDULED"): (409, 0xC303, _INCONSISTENT, "COMPLETED"),
    ("CANCELED", "SCHEDULED"): (409, 0xC303, _INCONSISTENT, "CANCELED"),
    ("SCHEDULED", "REQUEST CANCEL"): (202, None, None, "CANCELED"),
    ("IN PROGRESS", "REQUEST CANCEL"): (202, None, None, "IN PROGRESS"),
    ("COMPLETED", "REQUEST CANCEL"): (409, 0xC311, "The UPS is already COMPLETED.",
                                      "COMPLETED"),
    ("CANCELED", "REQUEST CANCEL"): (202, None, _ALREADY.format("CANCELED"), "CANCELED"),
    ("SCHEDULED", "UPDATE"): (200, None, None, "SCHEDULED"),
    ("IN PROGRESS", "UPDATE"): (200, None, None, "IN PROGRESS"),
    ("COMPLETED", "UPDATE"): (400, 0xC300, _INCONSISTENT_UPDATE, "COMPLETED"),
    ("CANCELED", "UPDATE"): (400, 0xC300, _INCONSISTENT_UPDATE, "CANCELED"),
}
STATES = ["SCHEDULED", "IN PROGRESS", "COMPLETED", "CANCELED"]
ACTIONS = ["IN PROGRESS", "COMPLETED", "CANCELED", "SCHEDULED", "REQUEST CANCEL", "UPDATE"]


def test_state_table_is_complete() -> None:
    assert set(STATE_TABLE) == {(s, a) for s in STATES for a in ACTIONS}


@pytest.mark.parametrize("action", ACTIONS)
@pytest.mark.parametrize("state", STATES)
def test_state_table(client: httpx.Client, state: str, action: str) -> None:
    status, dimse, warning_text, after = STATE_TABLE[(state, action)]
    uid, tx = bring_to(client, state)
    before = client.get(f"/workitems/{uid}").content
    history_before = len(history(client, uid))
    if action == "REQUEST CANCEL":
        r = client.post(f"/workitems/{uid}/cancelrequest")
    elif action == "UPDATE":
        r = update(client, uid, _label(f"Updated while {state}"), tx)
    else:
        r = change_state(client, uid, action, tx if tx else new_uid())
    if status < 400:
        assert_ok(r, status, warning_text=warning_text, client=client)
    else:
        assert_error(r, status, dimse=dimse, warning_text=warning_text, client=client)
    ds = retrieve(client, uid)
    assert ds[STATE]["Value"] == [after]
    assert TX not in ds
    changed = status < 400 and warning_text is None
    assert (client.get(f"/workitems/{uid}").content != before) == (
        changed and (state, action) != ("IN PROGRESS", "REQUEST CANCEL"))
    # Every change, and only a change (or a recorded request), is in the history.
    assert len(history(client, uid)) == history_before + (1 if changed else 0)
