"""The performer's flow from the command line (issue 6, point 4), against a real Orthanc
and a real ``worklist serve``: a study stored into Orthanc becomes a task, which a reader
lists, claims, fetches and submits with ``python -m worklist.cli`` exactly as a user
would; the SEG and SR land in Orthanc, pass ``dciodvfy`` and name the reader.  Bad masks
are refused with the reason, leaving the task IN PROGRESS and Orthanc unchanged; a SEG
stored by another tool is linked by ``worklist link``.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

from seg.synthetic import ct_volume, sphere_labels
from tests.conftest import ROOT, Server, start_server
from tests.integration.orthanc_fixture import (  # noqa: F401 - the fixture
    OrthancForTests,
    orthanc,
    stow,
    to_bytes,
    wait_for,
    worklist_config,
)
from worklist.dicomjson import first, values
from worklist.upsclient import DICOMwebClient

pytestmark = pytest.mark.slow

SHAPE = (8, 32, 32)  # frames, rows, columns
RULES = """
[[routing.rules]]
name = "liver"
match = { StudyDescription = "re:(?i)liver" }
worklist_label = "liver-2026"
procedure_step_label = "Liver lesions {PatientID}"
workitem_code = ["SEG", "99WORKLIST", "Segmentation"]
priority = "HIGH"
expected_completion = "24h"
label_set = "liver-lesions"
readers = [{ login = "reader1", name = "One^Reader", organization = "Lab" }]

[[routing.rules]]
name = "pool"
match = { StudyDescription = "re:(?i)pool" }
worklist_label = "pool-2026"
"""


class Env:
    def __init__(self, server: Server, orthanc: OrthancForTests, tmp: Path) -> None:
        self.server, self.orthanc, self.tmp = server, orthanc, tmp

    def cli(self, *args: str, user: str = "reader1") -> subprocess.CompletedProcess[str]:
        """``worklist ARGS`` as a user runs it (own state directory per user)."""
        cmd = [sys.executable, "-m", "worklist.cli", *args, "--server", self.server.http_url,
               "--user", user, "--state-dir", str(self.tmp / f"state-{user}")]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=ROOT,
                              env=dict(os.environ, PYTHONPATH=str(ROOT)))

    def new_task(self, patient_id: str, description: str = "Liver CT") -> tuple[str, list[Dataset]]:
        images = ct_volume(SHAPE[1], SHAPE[2], SHAPE[0], patient_id=patient_id,
                           description=description)
        stow(self.orthanc, images)
        study = images[0].StudyInstanceUID

        def ready() -> Any:
            r = httpx.get(self.server.base_url + "/workitems",
                          params={"StudyInstanceUID": study, "InputReadinessState": "READY"})
            return r.json() if r.status_code == 200 else None
        (ds,) = wait_for(ready, what=f"the READY task of {patient_id}")
        return first(ds, "SOPInstanceUID"), images

    def workitem(self, uid: str) -> dict[str, Any]:
        return httpx.get(f"{self.server.base_url}/workitems/{uid}").json()[0]

    def state(self, uid: str) -> str:
        return str(first(self.workitem(uid), "ProcedureStepState"))

    def study_instances(self, study: str) -> dict[str, str]:
        """SOP Instance UID → Modality of the study's instances in Orthanc (QIDO-RS)."""
        r = httpx.get(f"{self.orthanc.dicomweb_url}/studies/{study}/instances",
                      params={"includefield": "00080060"})
        return {first(ds, "SOPInstanceUID"): first(ds, "Modality") for ds in r.json()}

    def retrieve(self, study: str, series: str, sop: str) -> Dataset:
        with DICOMwebClient(self.orthanc.dicomweb_url) as web:
            (part,) = list(web.retrieve(f"{self.orthanc.dicomweb_url}/studies/{study}/series/"
                                        f"{series}/instances/{sop}"))
        return dcmread(io.BytesIO(part))


@pytest.fixture(scope="module")
def env(orthanc: OrthancForTests, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    tmp = tmp_path_factory.mktemp("performer")
    cfg = worklist_config(tmp / "wl.toml", orthanc, RULES)
    server = start_server(tmp, f"sqlite:///{tmp / 'wl.db'}", extra=["--config", str(cfg)],
                          dimse=False)
    try:
        yield Env(server, orthanc, tmp)
    finally:
        server.stop()


def _outputs(workitem: dict[str, Any]) -> list[str]:
    return [first(ref, "ReferencedSOPInstanceUID")
            for performed in values(workitem, "UnifiedProcedureStepPerformedProcedureSequence")
            for item in values(performed, "OutputInformationSequence")
            for ref in values(item, "ReferencedSOPSequence")]


def _dciodvfy_errors(ds: Dataset, path: Path) -> list[str]:
    path.write_bytes(to_bytes(ds))
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def test_reader_claims_fetches_submits_results_validate_and_a_reviewer_accepts(
        env: Env, tmp_path: Path) -> None:
    uid, images = env.new_task("PERF-FLOW")
    study = images[0].StudyInstanceUID

    listed = env.cli("tasks", "--json")
    assert listed.returncode == 0, listed.stderr
    (row,) = [r for r in json.loads(listed.stdout) if r["uid"] == uid]
    assert (row["state"], row["priority"], row["patient_id"], row["worklist"]) == (
        "SCHEDULED", "HIGH", "PERF-FLOW", "liver-2026")
    table = env.cli("tasks")
    assert uid in table.stdout and "Liver lesions PERF-FLOW" in table.stdout
    assert uid not in env.cli("tasks", "--json", user="reader2").stdout

    claim = env.cli("claim", uid)
    assert (claim.returncode, claim.stdout.strip()) == (0, f"claimed {uid}"), claim.stderr
    other = env.cli("claim", uid, user="reader2")
    assert other.returncode == 1, other.stderr
    assert f"task {uid} is scheduled for reader1, not for reader2" in other.stderr
    performed = first(env.workitem(uid), "UnifiedProcedureStepPerformedProcedureSequence")
    actual = first(performed, "ActualHumanPerformersSequence")
    assert first(first(actual, "HumanPerformerCodeSequence"), "CodeValue") == "reader1"
    assert first(actual, "HumanPerformerName") == {"Alphabetic": "One^Reader"}
    started = first(performed, "PerformedProcedureStepStartDateTime")
    assert started

    inputs = tmp_path / "inputs"
    fetch = env.cli("fetch", uid, str(inputs))
    assert fetch.returncode == 0, fetch.stderr
    series_dir = inputs / images[0].SeriesInstanceUID
    assert sorted(p.stem for p in series_dir.glob("*.dcm")) == sorted(
        ds.SOPInstanceUID for ds in images)
    labels = json.loads((inputs / "labels.json").read_text())
    assert [(lb["value"], lb["name"]) for lb in labels["labels"]] == [(1, "Liver"),
                                                                       (2, "Liver lesion")]
    assert first(json.loads((inputs / "task.json").read_text()), "SOPInstanceUID") == uid

    mask = tmp_path / "mask.npy"
    np.save(mask, sphere_labels(SHAPE, 2))
    submit = env.cli("submit", uid, "--mask", str(mask), "--inputs", str(inputs),
                     "--comment", "two labels")
    assert submit.returncode == 0, submit.stderr
    assert env.state(uid) == "COMPLETED"
    workitem = env.workitem(uid)
    performed = first(workitem, "UnifiedProcedureStepPerformedProcedureSequence")
    assert first(performed, "PerformedProcedureStepStartDateTime") == started
    assert first(performed, "PerformedProcedureStepEndDateTime") >= started
    assert first(first(performed, "PerformedWorkitemCodeSequence"), "CodeValue") == "SEG"
    assert first(performed, "CommentsOnThePerformedProcedureStep") == "two labels"
    outputs = _outputs(workitem)
    in_orthanc = env.study_instances(study)
    assert sorted(in_orthanc[u] for u in outputs) == ["SEG", "SR"]
    for item in values(performed, "OutputInformationSequence"):
        url = first(first(item, "WADORSRetrievalSequence"), "RetrieveURL")
        assert url == (f"{env.orthanc.dicomweb_url}/studies/{study}/series/"
                       f"{first(item, 'SeriesInstanceUID')}")
        assert first(first(item, "DICOMRetrievalSequence"), "RetrieveAETitle") == env.orthanc.aet

    for item in values(performed, "OutputInformationSequence"):
        sop = first(first(item, "ReferencedSOPSequence"), "ReferencedSOPInstanceUID")
        ds = env.retrieve(study, first(item, "SeriesInstanceUID"), sop)
        assert _dciodvfy_errors(ds, tmp_path / f"{ds.Modality}.dcm") == [], ds.Modality
        assert ds.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID == uid
        if ds.Modality == "SEG":
            assert str(ds.ContentCreatorName) == "One^Reader"
            ident = ds.ContentCreatorIdentificationCodeSequence[0]
            assert ident.PersonIdentificationCodeSequence[0].CodeValue == "reader1"
            assert [s.SegmentLabel for s in ds.SegmentSequence] == ["Liver", "Liver lesion"]
            assert {s.SegmentAlgorithmType for s in ds.SegmentSequence} == {"MANUAL"}
        else:
            assert "reader1" in ds.to_json() and "One^Reader" in ds.to_json()
    assert uid not in env.cli("tasks", "--json").stdout

    # A reviewer's task on that result: its inputs are the source series and the SEG/SR.
    review_uid = _create_review_task(env, workitem)
    assert env.cli("claim", review_uid, user="reviewer1").returncode == 0
    review = env.cli("submit", review_uid, "--verdict", "ACCEPTED", "--comment", "agreed",
                     user="reviewer1")
    assert review.returncode == 0, review.stderr
    assert env.state(review_uid) == "COMPLETED"
    (sop,) = _outputs(env.workitem(review_uid))
    series = _series_of(env, study)[sop]
    verdict = env.retrieve(study, series, sop)
    assert _dciodvfy_errors(verdict, tmp_path / "review.dcm") == []
    assert verdict.VerificationFlag == "VERIFIED"
    assert verdict.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0] \
        .ReferencedSOPSequence[0].ReferencedSOPInstanceUID in outputs
    assert "reviewer1" in verdict.to_json() and "agreed" in verdict.to_json()


def _create_review_task(env: Env, reader_task: dict[str, Any]) -> str:
    """A review workitem (PS3.4 Table CC.2.5-3 creation attributes, via UPS-RS Create)
    whose Input Information lists the reader's inputs and outputs."""
    from pydicom.uid import generate_uid

    from worklist.dicomjson import dataset_to_json_dict
    from worklist.sample import code_item, new_workitem, performer_item

    task = Dataset.from_json(reader_task)
    performed = task.UnifiedProcedureStepPerformedProcedureSequence[0]
    ds = new_workitem(
        label="Review", worklist_label="liver-2026", priority="MEDIUM",
        start="20260315120000", workitem_code=code_item("110007", "DCM", "Report Verification"),
        study_uid=task.StudyInstanceUID, patient_id=task.PatientID,
        performers=[performer_item("reviewer1", "Two^Reviewer", "Lab")],
        inputs=list(task.InputInformationSequence) + list(performed.OutputInformationSequence),
        outputs=list(task.OutputDestinationSequence))
    uid = generate_uid()
    r = httpx.post(f"{env.server.base_url}/workitems", params={"workitem": uid},
                   json=dataset_to_json_dict(ds),
                   headers={"Content-Type": "application/dicom+json"})
    assert r.status_code == 201, r.text
    return uid


def test_bad_masks_are_refused_and_nothing_is_stored(env: Env, tmp_path: Path) -> None:
    uid, images = env.new_task("PERF-BAD")
    study = images[0].StudyInstanceUID
    assert env.cli("claim", uid).returncode == 0
    before = env.study_instances(study)
    good = sphere_labels(SHAPE, 2)
    wrong_label = good.copy()
    wrong_label[good == 2] = 3
    cases = {
        "shape": (good[:, :16], "does not match the source series"),
        "empty": (np.zeros(SHAPE, np.uint8), "empty"),
        "label": (wrong_label, "label value 3 is not in label set 'liver-lesions'"),
    }
    for name, (array, reason) in cases.items():
        path = tmp_path / f"{name}.npy"
        np.save(path, array)
        run = env.cli("submit", uid, "--mask", str(path))
        assert run.returncode == 1, (name, run.stderr)
        assert reason in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
        assert env.state(uid) == "IN PROGRESS"
        assert _outputs(env.workitem(uid)) == []
        assert env.study_instances(study) == before, name
    other_set = env.cli("submit", uid, "--mask", str(tmp_path / "label.npy"), "--label-set",
                        "lung-nodules")
    assert "the task's label set is 'liver-lesions', not 'lung-nodules'" in other_set.stderr
    usage = env.cli("submit", uid)
    assert usage.returncode == 2
    # unclaimed by this user: refused before anything is read
    np.save(tmp_path / "good.npy", good)
    assert "no claim" in env.cli("submit", uid, "--mask", str(tmp_path / "good.npy"),
                                 user="reader2").stderr
    # the same task then completes, with the source read over WADO-RS this time
    ok = env.cli("submit", uid, "--mask", str(tmp_path / "good.npy"), "--ai-input",
                 "TotalSegmentator:2.4", "--timings")
    assert ok.returncode == 0, ok.stderr
    assert "timing: total" in ok.stderr
    assert env.state(uid) == "COMPLETED"
    seg_uid = next(u for u in _outputs(env.workitem(uid)) if env.study_instances(study)[u] == "SEG")
    series = {u: s for u, s in _series_of(env, study).items()}
    seg = env.retrieve(study, series[seg_uid], seg_uid)
    assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"SEMIAUTOMATIC"}
    # the workitem itself says how it was done (Performed Processing Parameters)
    performed = env.workitem(uid)["00741216"]["Value"][0]
    params = {item["0040A043"]["Value"][0]["00080100"]["Value"][0]: item["0040A160"]["Value"][0]
              for item in performed["00741212"]["Value"]}
    assert params["AIINPUT"] == "TotalSegmentator:2.4"
    assert params["TOOL"].startswith("worklist")


def _series_of(env: Env, study: str) -> dict[str, str]:
    r = httpx.get(f"{env.orthanc.dicomweb_url}/studies/{study}/instances")
    return {first(ds, "SOPInstanceUID"): first(ds, "SeriesInstanceUID") for ds in r.json()}


def test_a_nifti_mask_is_oriented_against_the_series_and_submitted(
        env: Env, tmp_path: Path) -> None:
    """A NIfTI label map (as nnU-Net or TotalSegmentator write it: column, row, slice
    axes in RAS) goes through submit like a .npy: reordered onto the series."""
    import nibabel

    from seg.masks import sort_images
    from seg.synthetic import nifti_affine

    uid, images = env.new_task("PERF-NIFTI")
    assert env.cli("claim", uid).returncode == 0
    label_map = sphere_labels(SHAPE, 2)
    ordered = sort_images(images)
    path = tmp_path / "mask.nii.gz"
    nibabel.save(nibabel.Nifti1Image(label_map.transpose(2, 1, 0).copy(),
                                     nifti_affine(ordered)), str(path))
    done = env.cli("submit", uid, "--mask", str(path))
    assert done.returncode == 0, done.stderr
    assert env.state(uid) == "COMPLETED"
    study = images[0].StudyInstanceUID
    seg_uid = next(u for u in _outputs(env.workitem(uid))
                   if env.study_instances(study)[u] == "SEG")
    seg = env.retrieve(study, _series_of(env, study)[seg_uid], seg_uid)
    from seg.read import read_segmentation
    masks = read_segmentation(seg, ordered)
    assert np.array_equal(masks["Liver"], label_map == 1)
    assert np.array_equal(masks["Liver lesion"], label_map == 2)


def test_source_series_missing_from_orthanc_is_named(env: Env, tmp_path: Path) -> None:
    uid, images = env.new_task("PERF-GONE")
    assert env.cli("claim", uid).returncode == 0
    # An administrator removes the series from Orthanc (REST API) after routing.
    found = httpx.post(f"{env.orthanc.url}/tools/lookup",
                       content=images[0].SeriesInstanceUID).json()
    httpx.delete(f"{env.orthanc.url}/series/{found[0]['ID']}").raise_for_status()
    np.save(tmp_path / "mask.npy", sphere_labels(SHAPE, 2))
    for args in (["fetch", uid, str(tmp_path / "in")],
                 ["submit", uid, "--mask", str(tmp_path / "mask.npy")]):
        run = env.cli(*args)
        assert run.returncode == 1, run.stderr
        assert f"input series {images[0].SeriesInstanceUID} is missing" in run.stderr, run.stderr
    assert env.state(uid) == "IN PROGRESS"


def test_pool_task_claimed_and_a_seg_from_another_tool_linked(env: Env, tmp_path: Path) -> None:
    from seg.build import build_segmentation
    from worklist.labelsets import from_workitem, load_label_sets
    from worklist.provenance import Person, Provenance, Tool

    uid, images = env.new_task("PERF-POOL", description="Pool CT")
    assert uid not in env.cli("tasks", "--json").stdout
    pool = json.loads(env.cli("tasks", "--pool", "--worklist", "pool-2026", "--json").stdout)
    assert [(r["uid"], r["mine"]) for r in pool] == [(uid, False)]
    assert env.cli("claim", uid, "--name", "Three^Reader").returncode == 0
    again = env.cli("claim", uid)
    assert again.returncode == 0 and "you already hold" in again.stderr
    taken = env.cli("claim", uid, user="reader2")
    assert taken.returncode == 1
    assert f"task {uid} is already claimed (IN PROGRESS) by reader1" in taken.stderr
    (mine,) = [r for r in json.loads(env.cli("tasks", "--json").stdout) if r["uid"] == uid]
    assert (mine["state"], mine["claimed"]) == ("IN PROGRESS", True)

    np.save(tmp_path / "mask.npy", sphere_labels(SHAPE, 1))
    unlabelled = env.cli("submit", uid, "--mask", str(tmp_path / "mask.npy"))
    assert unlabelled.returncode == 1
    assert "carries no label set" in unlabelled.stderr and "--label-set" in unlabelled.stderr

    missing = env.cli("link", uid, "1.2.3.999")
    assert missing.returncode == 1 and "1.2.3.999 is not in the image store" in missing.stderr

    assert from_workitem(env.workitem(uid)) is None  # routed without a label set
    label_set = load_label_sets()["liver-lesions"]
    # A SEG made by someone else: the server refuses to complete with it (naming the
    # object and attribute); the link is reverted, the task stays IN PROGRESS.
    foreign = build_segmentation(images, sphere_labels(SHAPE, 1), label_set, Provenance(
        uid, Person("someone", "Else^Someone", "Elsewhere"), Tool("OHIF", "OHIF Viewer", "3.9")))
    stow(env.orthanc, [foreign])
    refused = env.cli("link", uid, foreign.SOPInstanceUID, "--complete")
    assert refused.returncode == 1, refused.stderr
    assert "completion refused" in refused.stderr and "reverted" in refused.stderr
    assert foreign.SOPInstanceUID in refused.stderr, refused.stderr
    assert env.state(uid) == "IN PROGRESS" and _outputs(env.workitem(uid)) == []
    # A viewer stores the reader's SEG straight into Orthanc ...
    seg = build_segmentation(images, sphere_labels(SHAPE, 1), label_set, Provenance(
        uid, Person("reader1", "Three^Reader", "pool-2026"), Tool("OHIF", "OHIF Viewer", "3.9")))
    stow(env.orthanc, [seg])
    # ... and the performer links it and completes.
    link = env.cli("link", uid, seg.SOPInstanceUID, "--complete")
    assert link.returncode == 0, link.stderr
    assert env.state(uid) == "COMPLETED"
    assert _outputs(env.workitem(uid)) == [seg.SOPInstanceUID]
