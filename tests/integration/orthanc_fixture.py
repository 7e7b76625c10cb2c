"""A real Orthanc for the integration tests, and small synthetic studies to store in it.

:func:`orthanc` (module scope) starts ``/usr/sbin/Orthanc`` from ``config/orthanc.json``
on free ports with temporary storage, exactly as ``scripts/run`` does; its DICOM peers
are a storing SCU (``STORESCU``) and a performer's storage SCP (``PERFORMER`` on a port
chosen here, the C-MOVE destination).  No mock stands in for Orthanc (issue 5, point 1).
Import the fixture into a test module: ``from tests.integration.orthanc_fixture import
orthanc  # noqa: F401``.
"""

from __future__ import annotations

import io
import shutil
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from tests.conftest import free_port
from worklist.orthanc_process import OrthancProcess, start_orthanc

__all__ = ["orthanc", "OrthancForTests", "start_test_orthanc", "ct_series", "to_bytes",
           "c_store", "nodelay", "stow", "wait_for", "SCU_AET", "PERFORMER_AET", "worklist_config"]

SCU_AET = "STORESCU"
PERFORMER_AET = "PERFORMER"
STABLE_AGE = 1  # seconds: StableStudy comes about 1-2 s after the last instance


@dataclass
class OrthancForTests:
    process: OrthancProcess
    performer_port: int

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def dicomweb_url(self) -> str:
        return self.process.dicomweb_url

    @property
    def dicom_port(self) -> int:
        return self.process.dicom_port

    @property
    def aet(self) -> str:
        return self.process.aet


def start_test_orthanc(directory: Path) -> OrthancForTests:
    performer_port = free_port()
    process = start_orthanc(directory, http_port=free_port(), dicom_port=free_port(),
                            modalities={SCU_AET: "127.0.0.1:104",
                                        PERFORMER_AET: f"127.0.0.1:{performer_port}"},
                            stable_age=STABLE_AGE)
    return OrthancForTests(process, performer_port)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancForTests]:
    directory = tmp_path_factory.mktemp("orthanc")
    server = start_test_orthanc(directory)
    try:
        yield server
    finally:
        server.process.stop()
        shutil.rmtree(directory, ignore_errors=True)


# -- synthetic studies ------------------------------------------------------------------
def ct_series(n: int = 4, *, study_uid: str | None = None, description: str = "Test CT",
              patient_id: str = "PAT-ORTHANC", modality: str = "CT",
              sop_uids: list[str] | None = None) -> list[Dataset]:
    """``n`` tiny CT slices (16×16) of one new series."""
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    slices = []
    for i in range(n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uids[i] if sop_uids else generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.PatientName, ds.PatientID = "Test^Patient", patient_id
        ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20260315", "101500", "ACC-" + patient_id[-6:]
        ds.StudyDescription, ds.SeriesDescription = description, "axial"
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, i + 1
        ds.Modality, ds.ReferringPhysicianName = modality, ""
        ds.FrameOfReferenceUID = frame_uid
        ds.ImagePositionPatient, ds.ImageOrientationPatient = [0, 0, i], [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness = [1, 1], 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = 16
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.ImageType = -1024, 1, ["ORIGINAL", "PRIMARY",
                                                                          "AXIAL"]
        ds.PixelData = (np.arange(256, dtype=np.uint16).reshape(16, 16) + i).tobytes()
        slices.append(ds)
    return slices


def to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def nodelay(event: Any) -> None:
    """EVT_CONN_OPEN handler: TCP_NODELAY on pynetdicom's socket (environment.md: Nagle
    costs 40-90 ms per DIMSE message on loopback)."""
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def c_store(orthanc: OrthancForTests, datasets: list[Dataset], port: int | None = None) -> None:
    """C-STORE with pynetdicom, as a modality would."""
    from pynetdicom import AE, evt

    ae = AE(SCU_AET)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port or orthanc.dicom_port, ae_title=orthanc.aet,
                         evt_handlers=[(evt.EVT_CONN_OPEN, nodelay)])
    assert assoc.is_established, "Orthanc refused the association"
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            assert status.Status == 0, f"C-STORE failed: 0x{status.Status:04X}"
    finally:
        assoc.release()


def stow(orthanc: OrthancForTests, datasets: list[Dataset]) -> None:
    """STOW-RS (PS3.18 10.5) to Orthanc's DICOMweb plugin."""
    boundary = "worklist-test-boundary"
    body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n"
                    + to_bytes(ds) + b"\r\n" for ds in datasets) + b"--" + boundary.encode() + b"--"
    r = httpx.post(orthanc.dicomweb_url + "/studies", content=body, timeout=30, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
        "Accept": "application/dicom+json"})
    assert r.status_code == 200, r.text


def wait_for(predicate: Callable[[], Any], timeout: float = 15, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def worklist_config(path: Path, orthanc: OrthancForTests, rules: str = "") -> Path:
    """A worklist TOML config pointing at ``orthanc``, with optional routing rules."""
    path.write_text(f"""[server]
orthanc_url = "{orthanc.url}"
orthanc_aet = "{orthanc.aet}"
orthanc_dicom_port = {orthanc.dicom_port}
orthanc_poll_seconds = 0.2
orthanc_timeout = 5
{rules}
""")
    return path


def report_outputs(base_url: str, uid: str, tx: str, outputs: list[Dataset], *,
                   performer: str | None = None, name: str | None = None,
                   series_uid: str | None = None) -> None:
    """UPS-RS Update (PS3.18 11.6) with the final-state attributes and one Output
    Information Sequence item (PS3.3 Table 10-3b) per output instance; ``series_uid``
    overrides the series the items name (to test a wrong reference)."""
    from worklist.dicomjson import dataset_to_json_dict
    from worklist.sample import final_state_attributes

    changes = (final_state_attributes(performer=performer, name=name) if performer
               else final_state_attributes())
    items = []
    for ds in outputs:
        item, ref = Dataset(), Dataset()
        item.TypeOfInstances = "DICOM"
        item.StudyInstanceUID = ds.StudyInstanceUID
        item.SeriesInstanceUID = series_uid or ds.SeriesInstanceUID
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        item.ReferencedSOPSequence = [ref]
        items.append(item)
    changes.UnifiedProcedureStepPerformedProcedureSequence[0].OutputInformationSequence = items
    r = httpx.post(f"{base_url}/workitems/{uid}", params={"transaction-uid": tx},
                   json=dataset_to_json_dict(changes),
                   headers={"Content-Type": "application/dicom+json"})
    assert r.status_code == 200, r.text
