"""The order of a submission's wire steps, against mock transports: a failed STOW-RS
links nothing, a refused completion reverts the linking Update, success drops the claim."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset

from worklist.dicomjson import first, values
from worklist.performer import Claims, Identity, Performer, PerformerError
from worklist.submission import Timer, _store_and_complete
from worklist.upsclient import DICOMwebClient, UPSClient

UID, TX, SERVER = "1.2.3.4", "2.25.99", "http://ups/dicom-web"
STOW = "http://store/dicom-web/studies"
PERFORMED_AT_CLAIM = {"00741216": {"vr": "SQ", "Value": [{
    "00404050": {"vr": "DT", "Value": ["20260315100000"]},
    "00404033": {"vr": "SQ", "Value": []}}]}}


def _workitem() -> dict[str, Any]:
    ds = Dataset()
    ds.SOPInstanceUID, ds.ProcedureStepState, ds.WorklistLabel = UID, "IN PROGRESS", "proj"
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "SEG", "99WORKLIST", "Seg"
    ds.ScheduledWorkitemCodeSequence = [code]
    stow, dicom, dest = Dataset(), Dataset(), Dataset()
    stow.StorageURL, dicom.DestinationAE = STOW, "ORTHANC"
    dest.STOWRSStorageSequence, dest.DICOMStorageSequence = [stow], [dicom]
    ds.OutputDestinationSequence = [dest]
    return {**ds.to_json_dict(), **PERFORMED_AT_CLAIM}


def _result() -> Dataset:
    ds = Dataset()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = "1.2.10", "1.2.11"
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.66.4", "1.2.12"
    return ds


class Wire:
    """Both servers in one mock: records every request, answers as told."""

    def __init__(self, stow: int = 200, complete: int = 200) -> None:
        self.stow, self.complete = stow, complete
        self.log: list[tuple[str, str, Any]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.headers.get(
            "content-type", "").startswith("application/dicom+json") else None
        self.log.append((request.method, request.url.path, body))
        if request.url.host == "store":
            return httpx.Response(self.stow, json={} if self.stow == 200 else {
                "message": "disk full"})
        if request.method == "PUT":
            if self.complete != 200:
                return httpx.Response(self.complete, json={
                    "message": "SEG 1.2.12: Content Creator's Name is not the performer",
                    "status": "0xC304"})
        return httpx.Response(200)


def _performer(wire: Wire, tmp_path: Path) -> Performer:
    transport = httpx.MockTransport(wire)
    claims = Claims(tmp_path)
    claims.put(SERVER, UID, TX, "reader1")
    return Performer(UPSClient(SERVER, transport=transport),
                     DICOMwebClient(SERVER, transport=transport),
                     Identity("reader1", "One^Reader", "Lab"), claims, SERVER)


def _submit(p: Performer) -> None:
    _store_and_complete(p, UID, TX, _workitem(), [("SEG", _result(), b"DICM")], None,
                        Timer(False))


def test_success_stores_then_links_then_completes_and_forgets_the_claim(tmp_path: Path) -> None:
    wire = Wire()
    p = _performer(wire, tmp_path)
    _submit(p)
    assert [(m, path.rsplit("/", 2)[-1]) for m, path, _ in wire.log] == [
        ("POST", UID), ("POST", "studies"), ("POST", UID), ("PUT", "state")]
    update = wire.log[2][2]
    performed = first(update, "UnifiedProcedureStepPerformedProcedureSequence")
    assert first(performed, "PerformedProcedureStepStartDateTime") == "20260315100000"
    assert first(performed, "PerformedProcedureStepEndDateTime")
    (item,) = values(performed, "OutputInformationSequence")
    assert first(item, "TypeOfInstances") == "DICOM"
    assert first(first(item, "WADORSRetrievalSequence"), "RetrieveURL") == \
        "http://store/dicom-web/studies/1.2.10/series/1.2.11"
    assert first(first(item, "DICOMRetrievalSequence"), "RetrieveAETitle") == "ORTHANC"
    assert first(first(performed, "ActualHumanPerformersSequence"), "HumanPerformerName") == \
        {"Alphabetic": "One^Reader"}
    assert p.claims.get(SERVER, UID) is None


def test_failed_stow_links_nothing(tmp_path: Path) -> None:
    wire = Wire(stow=500)
    with pytest.raises(PerformerError, match="storing the results failed, nothing linked"):
        _submit(_performer(wire, tmp_path))
    assert [m for m, _, _ in wire.log] == ["POST", "POST"]  # pre-flight, STOW


def test_refused_completion_reverts_the_update_and_keeps_the_claim(tmp_path: Path) -> None:
    wire = Wire(complete=400)
    p = _performer(wire, tmp_path)
    with pytest.raises(PerformerError) as info:
        _submit(p)
    text = str(info.value)
    assert "completion refused (400): SEG 1.2.12: Content Creator's Name" in text
    assert "the update was reverted" in text and "worklist link 1.2.3.4 1.2.12" in text
    assert wire.log[-1][2] == PERFORMED_AT_CLAIM
    assert p.claims.get(SERVER, UID) == TX


def test_a_task_without_label_set_takes_one_by_name_and_a_contradicting_name_is_refused() -> None:
    from worklist.labelsets import load_label_sets, to_processing_parameters
    from worklist.submission import _label_set

    bare = _workitem()
    with pytest.raises(PerformerError, match="carries no label set.*--label-set NAME"):
        _label_set(bare, None)
    assert _label_set(bare, "lung-nodules").name == "lung-nodules"
    with pytest.raises(PerformerError, match="no label set 'nope' \\(known: abdomen-organs"):
        _label_set(bare, "nope")
    ds = Dataset()
    ds.ScheduledProcessingParametersSequence = to_processing_parameters(
        load_label_sets()["liver-lesions"])
    carrying = {**bare, **ds.to_json_dict()}
    assert _label_set(carrying, None).name == "liver-lesions"
    assert _label_set(carrying, "liver-lesions").name == "liver-lesions"
    with pytest.raises(PerformerError, match="is 'liver-lesions', not 'lung-nodules'"):
        _label_set(carrying, "lung-nodules")
