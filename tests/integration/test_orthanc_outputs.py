"""A performer's round trip through a real Orthanc (issue 5, points 4 and 5).

The performer reads its workitem's Input Information Sequence and fetches the inputs
both ways it offers (WADO-RS from the Retrieve URL; C-MOVE from the Retrieve AE Title to
its own storage SCP), and completes the workitem: refused with 400 naming the missing
UIDs while an output is not in Orthanc, accepted once it is; with Orthanc down, the
completion fails with 503 (nothing changes) and everything else is still served.
"""

from __future__ import annotations

import threading
from email.parser import BytesParser
from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests.conftest import Server, start_server
from tests.integration.orthanc_fixture import (  # noqa: F401 - the fixture
    PERFORMER_AET, OrthancForTests, c_store, ct_series, nodelay, orthanc, start_test_orthanc, stow,
    report_outputs, wait_for, worklist_config,
)
from worklist.dicomjson import first

pytestmark = pytest.mark.slow
DICOM_JSON = {"Content-Type": "application/dicom+json"}


def _ready_workitem(server: Server, study_uid: str) -> dict[str, Any]:
    def find() -> Any:
        r = httpx.get(server.base_url + "/workitems",
                      params={"StudyInstanceUID": study_uid, "InputReadinessState": "READY"})
        return r.json()[0] if r.status_code == 200 else None
    uid = first(wait_for(find, what="a READY workitem"), "SOPInstanceUID")
    return httpx.get(f"{server.base_url}/workitems/{uid}").json()[0]


def _claim(server: Server, uid: str) -> str:
    tx = generate_uid()
    body = {"00741000": {"vr": "CS", "Value": ["IN PROGRESS"]},
            "00081195": {"vr": "UI", "Value": [tx]}}
    r = httpx.put(f"{server.base_url}/workitems/{uid}/state", json=body, headers=DICOM_JSON)
    assert r.status_code == 200, r.text
    return tx


def _report_outputs(server: Server, uid: str, tx: str, outputs: list[Dataset]) -> None:
    report_outputs(server.base_url, uid, tx, outputs)


def _complete(server: Server, uid: str, tx: str) -> httpx.Response:
    body = {"00741000": {"vr": "CS", "Value": ["COMPLETED"]},
            "00081195": {"vr": "UI", "Value": [tx]}}
    return httpx.put(f"{server.base_url}/workitems/{uid}/state", json=body, headers=DICOM_JSON,
                     timeout=30)


def _state(server: Server, uid: str) -> str:
    return first(httpx.get(f"{server.base_url}/workitems/{uid}").json()[0], "ProcedureStepState")


def _wado_rs(url: str) -> list[Dataset]:
    """WADO-RS Retrieve (PS3.18 10.4): multipart/related application/dicom."""
    r = httpx.get(url, headers={"Accept": 'multipart/related; type="application/dicom"'},
                  timeout=30)
    assert r.status_code == 200, r.text
    message = BytesParser().parsebytes(b"Content-Type: " + r.headers["content-type"].encode()
                                       + b"\r\n\r\n" + r.content)
    return [dcmread(BytesIO(part.get_payload(decode=True))) for part in message.get_payload()]


def _c_move(orthanc: OrthancForTests, retrieve_aet: str, study_uid: str,
            series_uid: str) -> list[str]:
    """C-MOVE (PS3.4 C.4.2) from Orthanc to the performer's own storage SCP."""
    from pynetdicom import AE, StoragePresentationContexts, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelMove

    received: list[str] = []
    lock = threading.Lock()

    def on_store(event: Any) -> int:
        with lock:
            received.append(event.dataset.SOPInstanceUID)
        return 0x0000

    ae = AE(PERFORMER_AET)
    ae.supported_contexts = StoragePresentationContexts
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    scp = ae.start_server(("127.0.0.1", orthanc.performer_port), block=False,
                          evt_handlers=[(evt.EVT_C_STORE, on_store), (evt.EVT_CONN_OPEN, nodelay)])
    try:
        assoc = ae.associate("127.0.0.1", orthanc.dicom_port, ae_title=retrieve_aet,
                             evt_handlers=[(evt.EVT_CONN_OPEN, nodelay)])
        assert assoc.is_established
        query = Dataset()
        query.QueryRetrieveLevel = "SERIES"
        query.StudyInstanceUID, query.SeriesInstanceUID = study_uid, series_uid
        statuses = [s.Status for s, _ in assoc.send_c_move(
            query, PERFORMER_AET, StudyRootQueryRetrieveInformationModelMove) if s]
        assoc.release()
        assert statuses[-1] == 0x0000, [hex(s) for s in statuses]
    finally:
        scp.shutdown()
    return received


@pytest.fixture
def server(tmp_path: Path, orthanc: OrthancForTests) -> Any:
    cfg = worklist_config(tmp_path / "wl.toml", orthanc)
    srv = start_server(tmp_path, f"sqlite:///{tmp_path / 'wl.db'}", extra=["--config", str(cfg)])
    yield srv
    srv.stop()


def test_performer_fetches_inputs_both_ways_and_completes_only_with_outputs_stored(
        server: Server, orthanc: OrthancForTests) -> None:
    series = ct_series(4, patient_id="PAT-PERF01")
    stow(orthanc, series)
    workitem = _ready_workitem(server, series[0].StudyInstanceUID)
    uid = first(workitem, "SOPInstanceUID")
    expected = sorted(ds.SOPInstanceUID for ds in series)
    (item,) = workitem["00404021"]["Value"]
    # WADO-RS, from the Retrieve URL as given.
    url = first(first(item, "WADORSRetrievalSequence"), "RetrieveURL")
    assert sorted(ds.SOPInstanceUID for ds in _wado_rs(url)) == expected
    # C-MOVE from the Retrieve AE Title to the performer's own AE.
    aet = first(first(item, "DICOMRetrievalSequence"), "RetrieveAETitle")
    assert sorted(_c_move(orthanc, aet, first(item, "StudyInstanceUID"),
                          first(item, "SeriesInstanceUID"))) == expected
    # The performer claims, reports an output not yet stored: completion refused (C304).
    tx = _claim(server, uid)
    (output,) = ct_series(1, study_uid=series[0].StudyInstanceUID, patient_id="PAT-PERF01")
    _report_outputs(server, uid, tx, [output])
    r = _complete(server, uid, tx)
    assert r.status_code == 400, r.text
    assert output.SOPInstanceUID in r.json()["message"]
    assert _state(server, uid) == "IN PROGRESS"
    # Stored where the Output Destination Sequence says: now it completes.
    c_store(orthanc, [output])
    r = _complete(server, uid, tx)
    assert r.status_code == 200, r.text
    assert _state(server, uid) == "COMPLETED"


def test_orthanc_down_completion_is_503_and_retryable_the_rest_still_served(
        tmp_path: Path) -> None:
    own = start_test_orthanc(tmp_path / "orthanc")
    cfg = worklist_config(tmp_path / "wl.toml", own)
    srv: Server | None = None
    try:
        srv = start_server(tmp_path, f"sqlite:///{tmp_path / 'wl.db'}",
                           extra=["--config", str(cfg)])
        series = ct_series(2, patient_id="PAT-DOWN01")
        c_store(own, series)
        uid = first(_ready_workitem(srv, series[0].StudyInstanceUID), "SOPInstanceUID")
        tx = _claim(srv, uid)
        (output,) = ct_series(1, study_uid=series[0].StudyInstanceUID)
        c_store(own, [output])
        _report_outputs(srv, uid, tx, [output])
        own.process.stop()
        r = _complete(srv, uid, tx)
        assert r.status_code == 503, r.text
        assert "image store" in r.json()["message"]
        # Nothing changed, and what does not need Orthanc is served as usual.
        assert _state(srv, uid) == "IN PROGRESS"
        assert httpx.get(srv.base_url + "/workitems", params={"limit": "5"}).status_code == 200
        assert httpx.get(f"{srv.http_url}/api/workitems/{uid}/history").status_code == 200
        own.process.start()
        r = _complete(srv, uid, tx)  # the same request, retried
        assert r.status_code == 200, r.text
    finally:
        if srv is not None:
            srv.stop()
        own.process.stop()
