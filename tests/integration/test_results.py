"""SEG/SR results through a real Orthanc and a real server (issue 6, points 5 and 6).

A study arrives in Orthanc, a routing rule makes a task for reader jroe with the
liver-lesions label set; the reader's SEG and SR (``seg.build``, ``sr.build``) are
stored with STOW-RS, linked by UPS-RS update and the task completed: the server reads
their metadata from Orthanc, checks them and indexes them, and ``GET /api/results``
finds them.  A SEG naming another reader, or a malformed SR, is refused with 400 naming
the object and the attribute, the task stays IN PROGRESS and nothing is indexed; with
Orthanc stopped the completion is 503 and succeeds when retried.  On SQLite and
PostgreSQL.
"""

from __future__ import annotations

import copy
import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from seg.build import build_segmentation
from seg.synthetic import ct_volume, sphere_labels
from sr.build import build_measurement_report
from sr.review import build_review_report
from sr.measure import measure_segments
from tests.conftest import Server, start_server
from tests.integration.orthanc_fixture import (  # noqa: F401 - the fixture
    OrthancForTests, orthanc, report_outputs, start_test_orthanc, stow, wait_for,
    worklist_config,
)
from tests.integration.upsrs_helpers import DATABASES, database_for
from worklist.dicomjson import dataset_to_json_dict, first
from worklist.labelsets import load_label_sets
from worklist.provenance import Person, Provenance

pytestmark = pytest.mark.slow
DICOM_JSON = {"Content-Type": "application/dicom+json"}
READER = Person("jroe", "Roe^Jane", "Reading Lab")
OTHER = Person("jdoe", "Doe^John", "Reading Lab")
REVIEWER = Person("boss", "Boss^Big", "Reading Lab", role="Reviewer")
RULES = """
[[routing.rules]]
name = "liver"
match = { PatientID = "RES-*" }
worklist_label = "liver"
label_set = "liver-lesions"
readers = [{ login = "jroe", name = "Roe^Jane", organization = "Reading Lab" }]

[[routing.rules]]
name = "review"
match = { PatientID = "REV-*" }
worklist_label = "liver-review"
readers = [{ login = "boss", name = "Boss^Big", organization = "Reading Lab" }]
"""
LABEL_SET = load_label_sets()["liver-lesions"]


def _start(tmp_path: Path, orthanc: OrthancForTests, database: str) -> Server:
    cfg = worklist_config(tmp_path / "wl.toml", orthanc, RULES)
    return start_server(tmp_path, database, extra=["--config", str(cfg)], dimse=False)


@pytest.fixture(scope="module", params=DATABASES)
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
           orthanc: OrthancForTests) -> Iterator[Server]:
    tmp_path = tmp_path_factory.mktemp(f"results-{request.param}")
    srv = _start(tmp_path, orthanc, database_for(request, request.param, tmp_path))
    try:
        yield srv
    finally:
        assert srv.stop() == 0, srv.log()
        assert "Traceback" not in srv.log(), srv.log()


# -- a performer's steps ------------------------------------------------------------------
def _task(server: Server, study_uid: str) -> dict[str, Any]:
    def find() -> Any:
        r = httpx.get(server.base_url + "/workitems",
                      params={"StudyInstanceUID": study_uid, "InputReadinessState": "READY"})
        return r.json()[0] if r.status_code == 200 else None
    uid = first(wait_for(find, what="a READY workitem"), "SOPInstanceUID")
    return httpx.get(f"{server.base_url}/workitems/{uid}").json()[0]


def _state_body(state: str, tx: str) -> dict[str, Any]:
    return {"00741000": {"vr": "CS", "Value": [state]}, "00081195": {"vr": "UI", "Value": [tx]}}


def _claim(server: Server, uid: str) -> str:
    tx = generate_uid()
    r = httpx.put(f"{server.base_url}/workitems/{uid}/state", json=_state_body("IN PROGRESS", tx),
                  headers=DICOM_JSON)
    assert r.status_code == 200, r.text
    return tx


def _link(server: Server, uid: str, tx: str, outputs: list[Dataset], performer: Person,
          series_uid: str | None = None) -> None:
    """The Actual Human Performer and an Output Information item per output."""
    report_outputs(server.base_url, uid, tx, outputs, performer=performer.login,
                   name=performer.name, series_uid=series_uid)


def _complete(server: Server, uid: str, tx: str) -> httpx.Response:
    return httpx.put(f"{server.base_url}/workitems/{uid}/state", json=_state_body("COMPLETED", tx),
                     headers=DICOM_JSON, timeout=60)


def _state(server: Server, uid: str) -> str:
    return first(httpx.get(f"{server.base_url}/workitems/{uid}").json()[0], "ProcedureStepState")


def _results(server: Server, **params: str) -> list[dict[str, Any]]:
    r = httpx.get(server.http_url + "/api/results", params=params)
    assert r.status_code == 200, r.text
    return r.json()


def _study(orthanc: OrthancForTests, patient_id: str) -> tuple[list[Dataset], Any]:
    ct = ct_volume(32, 32, 6, patient_id=patient_id, accession=patient_id[-10:])
    stow(orthanc, ct)
    return ct, sphere_labels((6, 32, 32), 2)


def _reading(ct: list[Dataset], labels: Any, uid: str, person: Person) -> tuple[Dataset, Dataset]:
    provenance = Provenance(task_uid=uid, person=person)
    seg = build_segmentation(ct, labels, LABEL_SET, provenance)
    report = build_measurement_report(seg, ct, measure_segments(labels, ct, [1, 2]), provenance,
                                      LABEL_SET)
    return seg, report


def _patient(prefix: str) -> str:
    return f"{prefix}-{generate_uid()[-8:]}"


# -- tests --------------------------------------------------------------------------------
def test_completed_reading_is_indexed_and_found(server: Server, orthanc: OrthancForTests) -> None:
    ct, labels = _study(orthanc, _patient("RES"))
    task = _task(server, ct[0].StudyInstanceUID)
    uid = first(task, "SOPInstanceUID")
    tx = _claim(server, uid)
    seg, report = _reading(ct, labels, uid, READER)
    stow(orthanc, [seg, report])
    _link(server, uid, tx, [seg, report], READER)
    r = _complete(server, uid, tx)
    assert r.status_code == 200, r.text
    assert _state(server, uid) == "COMPLETED"
    # The example: lesion volumes by reader for one worklist.
    rows = _results(server, worklist="liver", label="Liver lesion", concept="Volume", task=uid)
    assert [(r["reader"], r["role"], r["kind"], r["unit"]) for r in rows] == [
        ("jroe", "Reader", "SR", "mm3")]
    assert rows[0]["value"] > 0 and rows[0]["sop_instance_uid"] == report.SOPInstanceUID
    segments = _results(server, task=uid, kind="SEG")
    assert [(r["label"], r["algorithm_type"]) for r in segments] == [
        ("Liver", "MANUAL"), ("Liver lesion", "MANUAL")]
    r = httpx.get(server.http_url + "/api/results", params={"task": uid, "format": "csv"})
    table = list(csv.DictReader(io.StringIO(r.text, newline="")))
    assert r.headers["content-type"].startswith("text/csv") and len(table) == len(
        _results(server, task=uid))
    one = httpx.get(f"{server.http_url}/api/results/{seg.SOPInstanceUID}").json()
    assert one["workitem_uid"] == uid and one["person_login"] == "jroe"
    assert ct[0].SeriesInstanceUID in one["references"]["series"]

    # A reviewer rejects the report in a review task whose input is that report.
    review_ct, _ = _study(orthanc, _patient("REV"))
    review_task = _task(server, review_ct[0].StudyInstanceUID)
    review_uid = first(review_task, "SOPInstanceUID")
    update = Dataset()
    item, ref = Dataset(), Dataset()
    item.TypeOfInstances, item.StudyInstanceUID = "DICOM", report.StudyInstanceUID
    item.SeriesInstanceUID = report.SeriesInstanceUID
    ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = report.SOPClassUID, \
        report.SOPInstanceUID
    item.ReferencedSOPSequence = [ref]
    update.InputInformationSequence = [item]
    review_tx = _claim(server, review_uid)
    r = httpx.post(f"{server.base_url}/workitems/{review_uid}", params={"transaction-uid":
                                                                         review_tx},
                   json=dataset_to_json_dict(update), headers=DICOM_JSON)
    assert r.status_code == 200, r.text
    review = build_review_report(report, Provenance(task_uid=review_uid, person=REVIEWER),
                                 "REJECTED", "lesion 2 misses the rim")
    stow(orthanc, [review])
    _link(server, review_uid, review_tx, [review], REVIEWER)
    r = _complete(server, review_uid, review_tx)
    assert r.status_code == 200, r.text
    rejected = _results(server, verdict="REJECTED", task=uid)
    assert {r["sop_instance_uid"] for r in rejected} == {seg.SOPInstanceUID,
                                                         report.SOPInstanceUID}
    assert {(r["verdict"], r["verdict_by"]) for r in rejected} == {("Rejected", "boss")}


def test_seg_naming_another_reader_is_refused_and_nothing_is_indexed(
        server: Server, orthanc: OrthancForTests) -> None:
    ct, labels = _study(orthanc, _patient("RES"))
    uid = first(_task(server, ct[0].StudyInstanceUID), "SOPInstanceUID")
    tx = _claim(server, uid)
    seg, _report = _reading(ct, labels, uid, OTHER)
    stow(orthanc, [seg])
    # The Output Information item names another series: found anyway, and refused.
    _link(server, uid, tx, [seg], READER, series_uid=generate_uid())
    r = _complete(server, uid, tx)
    assert r.status_code == 400, r.text
    assert f"SEG {seg.SOPInstanceUID}: Series Instance UID (0020,000E) is " \
           f"{seg.SeriesInstanceUID}" in r.json()["message"]
    _link(server, uid, tx, [seg], READER)
    r = _complete(server, uid, tx)
    assert r.status_code == 400, r.text
    body = r.json()
    assert body["status"] == "0xC304"
    assert f"SEG {seg.SOPInstanceUID}: Content Creator's Name (0070,0084) 'Doe^John'" \
           in body["message"]
    assert "is not the performer 'Roe^Jane' (login jroe)" in body["message"]
    assert body["attribute"] == "ContentCreatorIdentificationCodeSequence"
    assert _state(server, uid) == "IN PROGRESS"
    assert _results(server, task=uid) == []


def test_malformed_sr_is_refused(server: Server, orthanc: OrthancForTests) -> None:
    ct, labels = _study(orthanc, _patient("RES"))
    uid = first(_task(server, ct[0].StudyInstanceUID), "SOPInstanceUID")
    tx = _claim(server, uid)
    seg, report = _reading(ct, labels, uid, READER)
    report = copy.deepcopy(report)
    del report.ContentSequence  # an SR from another tool, without content
    stow(orthanc, [seg, report])
    _link(server, uid, tx, [seg, report], READER)
    r = _complete(server, uid, tx)
    assert r.status_code == 400, r.text
    assert f"SR {report.SOPInstanceUID}: Content Sequence (0040,A730) is absent" \
           in r.json()["message"]
    assert f"SEG {seg.SOPInstanceUID}" not in r.json()["message"]
    assert _state(server, uid) == "IN PROGRESS" and _results(server, task=uid) == []
    # Linked without the broken report, the same task completes.
    _link(server, uid, tx, [seg], READER)
    assert _complete(server, uid, tx).status_code == 200
    assert {r["sop_instance_uid"] for r in _results(server, task=uid)} == {seg.SOPInstanceUID}


def test_orthanc_down_completion_is_503_then_succeeds(tmp_path: Path) -> None:
    own = start_test_orthanc(tmp_path / "orthanc")
    srv: Server | None = None
    try:
        srv = _start(tmp_path, own, f"sqlite:///{tmp_path / 'wl.db'}")
        ct, labels = _study(own, _patient("RES"))
        uid = first(_task(srv, ct[0].StudyInstanceUID), "SOPInstanceUID")
        tx = _claim(srv, uid)
        seg, report = _reading(ct, labels, uid, READER)
        stow(own, [seg, report])
        _link(srv, uid, tx, [seg, report], READER)
        own.process.stop()
        r = _complete(srv, uid, tx)
        assert r.status_code == 503, r.text
        assert "image store" in r.json()["message"]
        assert _state(srv, uid) == "IN PROGRESS" and _results(srv, task=uid) == []
        own.process.start()
        r = _complete(srv, uid, tx)
        assert r.status_code == 200, r.text
        assert len({r["sop_instance_uid"] for r in _results(srv, task=uid)}) == 2
    finally:
        if srv is not None:
            srv.stop()
        own.process.stop()
