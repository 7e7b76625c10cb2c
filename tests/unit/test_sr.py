"""The sr package: measurement figures, TID 1500 builders, describe() (issue 6, point 3).

Every SR built here round-trips through bytes before it is read back, and the reader,
review and AUTOMATIC reports pass dciodvfy (skipped where it is not installed, an error
in CI).  Volumes are tiny (32 x 32 x 8): the whole file runs in a few seconds.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import os
import shutil
import subprocess
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from seg.synthetic import ct_volume, sphere_labels
from sr.build import VERDICT_CODES, VerdictValues, build_measurement_report
from sr.review import build_review_report
from sr.measure import SegmentStats, measure_segments, slice_thicknesses
from sr.read import SRReadError, describe
from worklist.labelsets import Code, parse_label_sets
from worklist.provenance import (LOGIN_SCHEME, UPS_PUSH_SOP_CLASS, Algorithm, Person, Provenance,
                                 RoleValues, Tool)

DCIODVFY = shutil.which("dciodvfy") or ("/usr/bin/dciodvfy"
                                        if Path("/usr/bin/dciodvfy").exists() else None)


# -- helpers ------------------------------------------------------------------------------
def roundtrip(ds: Dataset) -> Dataset:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=True)
    buffer.seek(0)
    return pydicom.dcmread(buffer)


def json_roundtrip(ds: Dataset) -> Dataset:
    return Dataset.from_json(ds.to_json_dict())


def dciodvfy_errors(ds: Dataset, tmp_path: Path) -> list[str]:
    if DCIODVFY is None:
        if os.environ.get("CI"):
            pytest.fail("dciodvfy is not installed (required in CI)")
        pytest.skip("dciodvfy is not installed")
    path = tmp_path / f"{ds.SOPInstanceUID}.dcm"
    pydicom.dcmwrite(path, ds, enforce_file_format=True)
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    return [line for line in lines if line.startswith("Error")]


def make_segmentation(images: list[Dataset], label_map: np.ndarray, label_set) -> Dataset:
    """A SEG as seg.build makes it: one segment per label present, numbered 1..k in label
    order, Segment Label = label name."""
    present = [v for v in range(1, len(label_set.labels) + 1) if (label_map == v).any()]
    pixels = np.zeros(label_map.shape, dtype=np.uint8)
    descriptions = []
    for number, value in enumerate(present, start=1):
        label = label_set.by_value(value)
        pixels[label_map == value] = number
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=label.name,
            segmented_property_category=hd.sr.CodedConcept(
                label.category.value, label.category.scheme, label.category.meaning),
            segmented_property_type=hd.sr.CodedConcept(
                label.type.value, label.type.scheme, label.type.meaning),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.MANUAL,
            tracking_uid=hd.UID(), tracking_id=label.name))
    return hd.seg.Segmentation(
        source_images=images, pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=300,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="worklist",
        manufacturer_model_name="worklist", software_versions="0.1.0",
        device_serial_number="1")


def content_items(items, concept: tuple[str, str]):
    """Every content item (depth first) whose concept name is ``concept``."""
    for item in items or []:
        name = item.ConceptNameCodeSequence[0] if "ConceptNameCodeSequence" in item else None
        if name is not None and (name.CodeValue, name.CodingSchemeDesignator) == concept:
            yield item
        yield from content_items(item.get("ContentSequence"), concept)


LABEL_SET = parse_label_sets({"liver": {"labels": [
    {"name": "Liver", "category": ["91723000", "SCT", "Anatomical Structure"],
     "type": ["10200004", "SCT", "Liver"]},
    {"name": "Liver lesion", "category": ["49755003", "SCT", "Morphologically Abnormal Structure"],
     "type": ["52988006", "SCT", "Lesion"], "region": ["10200004", "SCT", "Liver"]},
    {"name": "Cyst", "category": ["49755003", "SCT", "Morphologically Abnormal Structure"],
     "type": ["367643001", "SCT", "Cyst"]},
]}})["liver"]

CREATED = dt.datetime(2026, 3, 16, 9, 30, 15, tzinfo=dt.timezone.utc)
TASK = generate_uid()
READER = Provenance(task_uid=TASK, person=Person("jdoe", "Doe^Jane", "Uni Clinic"),
                    tool=Tool("Acme", "SegTool", "2.1", "SN-7"), created=CREATED,
                    session="session 2")


@pytest.fixture(scope="module")
def case():
    images = ct_volume(32, 32, 8, n_spheres=2)
    label_map = sphere_labels((8, 32, 32), 2)  # labels 1 and 2; label 3 (Cyst) absent
    seg = make_segmentation(images, label_map, LABEL_SET)
    stats = measure_segments(label_map, images, [1, 2, 3])
    return images, label_map, seg, stats


@pytest.fixture(scope="module")
def reader_report(case):
    images, _, seg, stats = case
    findings = {"Liver lesion": [(("111037", "DCM", "Margins"), ("112138", "DCM", "Lobulated"))]}
    return roundtrip(build_measurement_report(seg, images, stats, READER, LABEL_SET,
                                              findings=findings))


def reviewer(role=RoleValues.REVIEWER, organization="Uni Clinic") -> Provenance:
    return Provenance(task_uid=generate_uid(),
                      person=Person("rroe", "Roe^Rick", organization, role),
                      tool=Tool("Acme", "ReviewTool", "1.0", "SN-9"),
                      created=dt.datetime(2026, 3, 17, 14, 0, 0, tzinfo=dt.timezone.utc))


# -- measure_segments ---------------------------------------------------------------------
def _slice(stored: list[list[int]], z: float, *, slope: float = 2.0,
           intercept: float = -1024.0) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = CTImageStorage, generate_uid(), "CT"
    ds.Rows, ds.Columns = len(stored), len(stored[0])
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [0, 0, z]
    ds.PixelSpacing = [0.5, 0.8]
    ds.SliceThickness = 5.0  # deliberately not the spacing: must not be used
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = np.asarray(stored, dtype=np.int16).tobytes()
    return ds


def test_measure_segments_matches_a_hand_computation():
    # stored s -> HU = 2 s - 1024 (PS3.3 C.11.1 Modality LUT)
    images = [_slice([[512, 513, 514], [515, 516, 517]], 10.0),   # HU 0 2 4 / 6 8 10
              _slice([[520, 521, 522], [523, 524, 525]], 12.0),   # HU 16 18 20 / 22 24 26
              _slice([[500, 500, 500], [600, 600, 600]], 14.0)]   # HU -24 ... / 176 ...
    labels = np.array([[[1, 1, 0], [2, 0, 0]],
                       [[1, 0, 0], [2, 2, 0]],
                       [[0, 0, 0], [0, 0, 1]]], dtype=np.uint8)
    stats = measure_segments(labels, images, [1, 2, 3])
    # label 1: HU 0, 2, 16, 176 -> mean 48.5, population variance 31236/4 - 48.5^2
    one = stats[1]
    assert one.voxel_count == 4
    assert one.volume_mm3 == pytest.approx(4 * 0.5 * 0.8 * 2.0)  # spacing 2 mm, not 5
    assert one.mean == pytest.approx(48.5)
    assert one.std == pytest.approx(math.sqrt(31236 / 4 - 48.5 ** 2))
    assert (one.minimum, one.maximum) == (0.0, 176.0)
    # label 2: HU 6, 22, 24
    two = stats[2]
    assert two.voxel_count == 3 and two.volume_mm3 == pytest.approx(2.4)
    assert two.mean == pytest.approx(52 / 3)
    assert two.std == pytest.approx(math.sqrt((36 + 484 + 576) / 3 - (52 / 3) ** 2))
    assert (two.minimum, two.maximum) == (6.0, 24.0)
    assert stats[3] == SegmentStats(3, 0, 0.0)


def test_slice_thickness_follows_positions_along_the_normal():
    # sagittal slices: row (0,1,0) x column (0,0,-1) = normal (-1,0,0), so x descends;
    # a missing slice between the 2nd and 3rd: each slice stands for half of each gap
    images = []
    for x in (0.0, -2.0, -6.0):
        ds = _slice([[0]], 0.0)
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [x, 0, 0]
        images.append(ds)
    assert slice_thicknesses(images) == pytest.approx([2.0, 3.0, 4.0])


def test_measure_segments_agrees_with_numpy_on_a_synthetic_series(case):
    images, label_map, _, stats = case
    hu = np.stack([np.frombuffer(ds.PixelData, dtype=np.int16).reshape(32, 32)
                   for ds in images]).astype(float)  # synthetic CT: slope 1, intercept 0
    for value in (1, 2):
        voxels = hu[label_map == value]
        st = stats[value]
        assert st.voxel_count == voxels.size > 0
        assert st.volume_mm3 == pytest.approx(voxels.size * 0.7 * 0.7 * 2.5)
        assert st.mean == pytest.approx(voxels.mean())
        assert st.std == pytest.approx(voxels.std())
        assert (st.minimum, st.maximum) == (voxels.min(), voxels.max())
    # decoding slice by slice leaves no cached pixel arrays in the caller's datasets
    assert all(getattr(ds, "_pixel_array", None) is None for ds in images)


def _three_slices() -> list[Dataset]:
    return [_slice([[512, 512]], z) for z in (0.0, 2.0, 4.0)]


@pytest.mark.parametrize("change, label_values, error, words", [
    (lambda imgs, lm: (imgs[::-1], lm), [1], ValueError, "ascend"),
    (lambda imgs, lm: (imgs[:2], lm), [1], ValueError, "source_images"),
    (lambda imgs, lm: (imgs, lm.astype(float)), [1], ValueError, "label_map"),
    (lambda imgs, lm: (imgs, lm[0]), [1], ValueError, "label_map"),
    (lambda imgs, lm: (imgs, lm.tolist()), [1], TypeError, "label_map"),
    (lambda imgs, lm: (imgs, lm), [0], ValueError, "label_values"),
    (lambda imgs, lm: (imgs, lm), [], ValueError, "label_values"),
    (lambda imgs, lm: (imgs, lm), ["1"], TypeError, "label_values"),
    (lambda imgs, lm: (imgs, lm[:, :, :1]), [1], ValueError, "source_images[0]"),
])
def test_measure_segments_refuses(change, label_values, error, words):
    images, label_map = change(_three_slices(), np.ones((3, 1, 2), dtype=np.uint8))
    with pytest.raises(error, match=words.replace("[", r"\[")):
        measure_segments(label_map, images, label_values)


# -- build_measurement_report + describe -------------------------------------------------
def test_reader_report_carries_every_provenance_field(case, reader_report):
    images, _, seg, stats = case
    ds = reader_report
    record = describe(ds)
    assert record.kind == "SR" and record.sop_class_uid == "1.2.840.10008.5.1.4.1.1.88.34"
    assert record.sop_instance_uid == ds.SOPInstanceUID
    assert record.study_uid == images[0].StudyInstanceUID
    # the task: (0008,1111) names the UPS workitem
    item = ds.ReferencedPerformedProcedureStepSequence[0]
    assert item.ReferencedSOPClassUID == UPS_PUSH_SOP_CLASS
    assert record.task_uid == TASK
    # who, in which role, with what, when
    assert (record.person_login, record.person_name, record.organization, record.role) == \
        ("jdoe", "Doe^Jane", "Uni Clinic", "Reader")
    assert record.device_name == "SegTool"
    local = CREATED.astimezone().replace(tzinfo=None)
    assert (ds.ContentDate, ds.ContentTime[:6]) == (local.strftime("%Y%m%d"),
                                                    local.strftime("%H%M%S"))
    assert record.content_datetime.startswith(local.strftime("%Y%m%d%H%M%S"))
    assert (ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions,
            ds.DeviceSerialNumber) == ("Acme", "SegTool", "2.1", "SN-7")
    device_uid = next(content_items(ds.ContentSequence, ("121012", "DCM")))
    assert device_uid.UID == READER.tool.device_uid
    # the reader's report awaits review
    assert (ds.CompletionFlag, ds.VerificationFlag, ds.PreliminaryFlag) == \
        ("COMPLETE", "UNVERIFIED", "PRELIMINARY")
    assert record.verification_flag == "UNVERIFIED" and record.verifying_observer == ""
    assert "VerifyingObserverSequence" not in ds and record.predecessors == []
    # references: the source series and the SEG (evidence and Referenced Segment)
    assert images[0].SeriesInstanceUID in record.referenced_series
    assert seg.SeriesInstanceUID in record.referenced_series
    assert set(record.referenced_instances) == {d.SOPInstanceUID for d in images} | {
        seg.SOPInstanceUID}
    # the session, on each group (C67447 Activity Session)
    sessions = list(content_items(ds.ContentSequence, ("C67447", "NCIt")))
    assert [s.TextValue for s in sessions] == ["session 2", "session 2"]


def test_reader_report_has_one_group_per_segment_with_its_figures(case, reader_report):
    _, _, seg, stats = case
    record = describe(reader_report)
    measurements = {(i.label, i.concept): i for i in record.items if i.kind == "measurement"}
    for value, name, segment_number in ((1, "Liver", 1), (2, "Liver lesion", 2)):
        st = stats[value]
        expected = {"Volume": (st.volume_mm3, "mm3"),
                    "Mean Attenuation Coefficient": (st.mean, "[hnsf'U]"),
                    "Standard Deviation Attenuation Coefficient": (st.std, "[hnsf'U]"),
                    "Minimum Attenuation Coefficient": (st.minimum, "[hnsf'U]"),
                    "Maximum Attenuation Coefficient": (st.maximum, "[hnsf'U]")}
        for concept, (figure, unit) in expected.items():
            item = measurements[(name, concept)]
            assert item.value == pytest.approx(figure, rel=1e-9)  # DS keeps 16 characters
            assert item.unit == unit and item.segment_number == segment_number
    assert len(measurements) == 10  # no group for the absent label (Cyst)
    evaluations = [(i.label, i.concept, i.text) for i in record.items if i.kind == "evaluation"]
    assert evaluations == [("Liver", "Presence of property", "Present"),
                           ("Liver lesion", "Presence of property", "Present"),
                           ("Liver lesion", "Margins", "Lobulated")]
    assert {i.property_type for i in record.items} == {"Liver", "Lesion"}
    # TID 1411: finding type / category from the SEG, finding site from the label set,
    # tracking UID shared with the SEG segment, Referenced Segment + source series
    lesion_group = [g for g in content_items(reader_report.ContentSequence, ("125007", "DCM"))
                    if any(t.TextValue == "Liver lesion"
                           for t in content_items(g.ContentSequence, ("112039", "DCM")))][0]
    site = next(content_items(lesion_group.ContentSequence, ("363698007", "SCT")))
    assert site.ConceptCodeSequence[0].CodeValue == "10200004"
    uid = next(content_items(lesion_group.ContentSequence, ("112040", "DCM")))
    assert uid.UID == seg.SegmentSequence[1].TrackingUID
    ref = next(content_items(lesion_group.ContentSequence, ("121191", "DCM")))
    assert ref.ReferencedSOPSequence[0].ReferencedSegmentNumber == 2
    source = next(content_items(lesion_group.ContentSequence, ("121232", "DCM")))
    assert source.UID == case[0][0].SeriesInstanceUID
    category = next(content_items(lesion_group.ContentSequence, ("276214006", "SCT")))
    assert category.ConceptCodeSequence[0].CodeValue == "49755003"


def test_describe_reads_the_same_from_dicom_json(reader_report):
    assert describe(json_roundtrip(reader_report)) == describe(reader_report)


def test_reader_report_passes_dciodvfy(reader_report, tmp_path):
    assert dciodvfy_errors(reader_report, tmp_path) == []


def test_automatic_report_has_a_device_observer_and_the_algorithm(case, tmp_path):
    images, _, seg, stats = case
    provenance = Provenance(task_uid=generate_uid(), person=None,
                            algorithm=Algorithm("LiverNet", "3.2"),
                            tool=Tool("Acme", "AutoSeg", "3.2", "A1"), created=CREATED)
    ds = roundtrip(build_measurement_report(seg, images, stats, provenance, LABEL_SET))
    record = describe(ds)
    assert (record.person_login, record.person_name, record.role) == ("", "", "")
    assert record.device_name == "AutoSeg" and record.task_uid == provenance.task_uid
    assert not list(content_items(ds.ContentSequence, ("121008", "DCM")))
    observer_types = [i.ConceptCodeSequence[0].CodeMeaning
                      for i in content_items(ds.ContentSequence, ("121005", "DCM"))]
    assert observer_types == ["Device"]
    assert "InstitutionName" not in ds
    measured = [i for i in record.items if i.kind == "measurement"]
    assert {(i.algorithm_name, i.algorithm_version) for i in measured} == {("LiverNet", "3.2")}
    family = next(content_items(ds.ContentSequence, ("111000", "DCM")))
    assert family.ConceptCodeSequence[0].CodeValue == "123110"  # Artificial Intelligence
    assert dciodvfy_errors(ds, tmp_path) == []


def test_a_corrected_report_names_its_predecessor(case, reader_report):
    images, _, seg, stats = case
    ds = roundtrip(build_measurement_report(seg, images, stats, READER, LABEL_SET,
                                            predecessor=reader_report, instance_number=2))
    assert describe(ds).predecessors == [reader_report.SOPInstanceUID]
    assert ds.InstanceNumber == 2


def test_without_a_label_set_stats_are_keyed_by_segment_number(case):
    images, _, seg, stats = case
    by_number = {1: stats[1], 2: stats[2]}
    record = describe(build_measurement_report(seg, images, by_number, READER))
    volumes = {i.label: i.value for i in record.items if i.concept == "Volume"}
    assert volumes == {"Liver": pytest.approx(stats[1].volume_mm3),
                       "Liver lesion": pytest.approx(stats[2].volume_mm3)}


# -- build_review_report ------------------------------------------------------------------
@pytest.fixture(scope="module")
def accepted(reader_report):
    return roundtrip(build_review_report(reader_report, reviewer(), "ACCEPTED",
                                         "Margins confirmed."))


def test_accepted_review_is_verified_by_the_reviewer(reader_report, accepted, tmp_path):
    ds = accepted
    record = describe(ds)
    assert (record.person_login, record.person_name, record.role) == \
        ("rroe", "Roe^Rick", "Reviewer")
    assert record.device_name == "ReviewTool"
    assert record.task_uid != TASK and record.task_uid == \
        ds.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID
    assert (ds.VerificationFlag, ds.PreliminaryFlag, ds.CompletionFlag) == \
        ("VERIFIED", "FINAL", "COMPLETE")
    observer = ds.VerifyingObserverSequence[0]
    assert (observer.VerifyingObserverName, observer.VerifyingOrganization) == \
        ("Roe^Rick", "Uni Clinic")
    assert observer.VerificationDateTime.startswith("20260317140000")
    code = observer.VerifyingObserverIdentificationCodeSequence[0]
    assert (code.CodeValue, code.CodingSchemeDesignator) == ("rroe", LOGIN_SCHEME)
    assert "ParticipantSequence" not in ds  # never verifier and attestor at once
    assert record.verifying_observer == "Roe^Rick"
    assert record.predecessors == [reader_report.SOPInstanceUID]
    assert dciodvfy_errors(ds, tmp_path) == []


def test_review_copies_the_groups_and_keeps_the_reader_as_their_observer(reader_report,
                                                                          accepted):
    before, after = describe(reader_report), describe(accepted)
    assert [i for i in after.items if i.kind == "measurement"] == \
        [i for i in before.items if i.kind == "measurement"]
    assert set(after.referenced_instances) == set(before.referenced_instances)
    verdicts = [(i.label, i.concept, i.text) for i in after.items if i.label == ""]
    assert verdicts == [("", "Review verdict", "Accepted"),
                        ("", "Comment", "Margins confirmed.")]
    for group in content_items(accepted.ContentSequence, ("125007", "DCM")):
        names = [n.PersonName for n in content_items(group.ContentSequence, ("121008", "DCM"))]
        assert names == ["Doe^Jane"]
    schemes = {i.CodingSchemeDesignator for i in accepted.CodingSchemeIdentificationSequence}
    assert {"99WORKLIST", LOGIN_SCHEME} <= schemes


def test_rejected_review_stays_unverified(reader_report, tmp_path):
    ds = roundtrip(build_review_report(reader_report, reviewer(), VerdictValues.REJECTED,
                                       "Lesion boundary misses the caudal part."))
    record = describe(ds)
    assert (ds.VerificationFlag, ds.PreliminaryFlag) == ("UNVERIFIED", "PRELIMINARY")
    assert "VerifyingObserverSequence" not in ds and record.verifying_observer == ""
    assert ("Review verdict", "Rejected") in [(i.concept, i.text) for i in record.items]
    assert describe(json_roundtrip(ds)) == record
    assert dciodvfy_errors(ds, tmp_path) == []


def test_an_adjudicator_may_verify_any_verdict(reader_report, accepted):
    ds = roundtrip(build_review_report(accepted, reviewer(RoleValues.ADJUDICATOR),
                                       "NEEDS REVISION", verify=True))
    record = describe(ds)
    assert record.role == "Adjudicator" and record.verification_flag == "VERIFIED"
    assert record.predecessors == [accepted.SOPInstanceUID]
    assert [i.text for i in record.items if i.concept == "Review verdict"] == \
        [VERDICT_CODES[VerdictValues.NEEDS_REVISION].meaning]
    # the copied groups keep the reader (named in the reviewed review's groups)
    for group in content_items(ds.ContentSequence, ("125007", "DCM")):
        names = [n.PersonName for n in content_items(group.ContentSequence, ("121008", "DCM"))]
        assert names == ["Doe^Jane"]


# -- refusals -----------------------------------------------------------------------------
def _reader_call(case, **change):
    images, _, seg, stats = case
    args = {"segmentation": seg, "source_images": images, "stats": stats,
            "provenance": READER, "label_set": LABEL_SET}
    args.update(change)
    return build_measurement_report(**args)


@pytest.mark.parametrize("change, error, words", [
    ({"segmentation": "seg"}, TypeError, "segmentation"),
    ({"segmentation": "first image"}, ValueError, "segmentation is not a Segmentation"),
    ({"source_images": []}, ValueError, "source_images"),
    ({"source_images": "first image"}, TypeError, "source_images"),
    ({"stats": {1: None, 2: None}}, TypeError, "stats"),
    ({"stats": {}}, ValueError, "stats"),
    ({"provenance": "jdoe"}, TypeError, "provenance"),
    ({"label_set": "liver"}, TypeError, "label_set"),
    ({"findings": {"Spleen": []}}, ValueError, "findings"),
    ({"findings": {"Liver": [("Margins", "Lobulated")]}}, TypeError, "findings"),
    ({"series_number": 0}, ValueError, "series_number"),
    ({"instance_number": "1"}, TypeError, "instance_number"),
    ({"sop_instance_uid": "not-a-uid"}, ValueError, "sop_instance_uid"),
    ({"predecessor": "first image"}, ValueError, "predecessor"),
    ({"intensity": ("112031", "[hnsf'U]")}, TypeError, "intensity"),
])
def test_build_measurement_report_refuses(case, change, error, words):
    images = case[0]
    change = {k: (images[0] if v == "first image" else v) for k, v in change.items()}
    with pytest.raises(error, match=words):
        _reader_call(case, **change)


def test_build_measurement_report_refuses_a_modality_without_a_default_quantity(case):
    images = [roundtrip(d) for d in case[0]]
    for d in images:
        d.Modality = "PT"
    with pytest.raises(ValueError, match="intensity"):
        _reader_call(case, source_images=images)
    # ... unless told which quantity it is
    suv = Code("126400", "DCM", "Standardized Uptake Value")
    unit = Code("{SUVbw}g/ml", "UCUM", "Standardized Uptake Value body weight")
    ds = _reader_call(case, source_images=images, intensity=(suv, unit))
    concepts = {i.concept for i in describe(ds).items}
    assert "Mean Standardized Uptake Value" in concepts


def test_build_measurement_report_refuses_a_segment_outside_the_label_set(case):
    other = parse_label_sets({"x": {"labels": [
        {"name": "Liver", "category": ["91723000", "SCT", "Anatomical Structure"],
         "type": ["10200004", "SCT", "Liver"]}]}})["x"]
    with pytest.raises(ValueError, match="label_set"):
        _reader_call(case, label_set=other)


@pytest.mark.parametrize("kwargs, error, words", [
    ({"reviewed_report": "first image"}, ValueError, "reviewed_report"),
    ({"reviewed_report": None}, TypeError, "reviewed_report"),
    ({"reviewer_provenance": READER}, ValueError, "reviewer_provenance"),
    ({"reviewer_provenance": "rroe"}, TypeError, "reviewer_provenance"),
    ({"verdict": "MAYBE"}, ValueError, "verdict"),
    ({"comment": 42}, TypeError, "comment"),
    ({"verify": "yes"}, TypeError, "verify"),
    ({"reviewer_provenance": "no organization"}, ValueError, "organization"),
])
def test_build_review_report_refuses(case, reader_report, kwargs, error, words):
    args = {"reviewed_report": reader_report, "reviewer_provenance": reviewer(),
            "verdict": "ACCEPTED"}
    args.update(kwargs)
    if args["reviewed_report"] == "first image":
        args["reviewed_report"] = case[0][0]
    if args["reviewer_provenance"] == "no organization":
        args["reviewer_provenance"] = reviewer(organization="")
    with pytest.raises(error, match=words):
        build_review_report(**args)


def test_a_review_needs_measurement_groups(reader_report):
    empty = roundtrip(reader_report)
    for item in empty.ContentSequence:
        if item.ConceptNameCodeSequence[0].CodeValue == "126010":
            item.ContentSequence = []
    with pytest.raises(ValueError, match="reviewed_report has no measurement group"):
        build_review_report(empty, reviewer(), "ACCEPTED")


# -- describe: tolerant on read, refuses only non-SR and empty ---------------------------
def _code_item(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def test_describe_reads_an_sr_from_another_tool():
    """An Enhanced SR as an older tool writes it: no template identifier, no TID 1002 (the
    Author Observer is the observer), legacy SRT codes, an MPPS as the procedure step."""
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = "1.2.840.10008.5.1.4.1.1.88.22", generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "SR"
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [_code_item("18782-3", "LN", "Radiology Study observation")]
    author = Dataset()
    author.ObserverType, author.PersonName = "PSN", "Smith^Ann"
    ds.AuthorObserverSequence = [author]
    mpps = Dataset()
    mpps.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.3"
    mpps.ReferencedSOPInstanceUID = "1.2.3.4"
    ds.ReferencedPerformedProcedureStepSequence = [mpps]
    finding = Dataset()
    finding.RelationshipType, finding.ValueType = "CONTAINS", "TEXT"
    finding.ConceptNameCodeSequence = [_code_item("121071", "DCM", "Finding")]
    finding.TextValue = "Small hypodense lesion"
    num = Dataset()
    num.RelationshipType, num.ValueType = "CONTAINS", "NUM"
    num.ConceptNameCodeSequence = [_code_item("G-D705", "SRT", "Volume")]
    measured = Dataset()
    measured.NumericValue = "1234.5"
    measured.MeasurementUnitsCodeSequence = [_code_item("mm3", "UCUM", "cubic millimeter")]
    num.MeasuredValueSequence = [measured]
    site = Dataset()
    site.RelationshipType, site.ValueType = "HAS CONCEPT MOD", "CODE"
    site.ConceptNameCodeSequence = [_code_item("G-C0E3", "SRT", "Finding Site")]
    site.ConceptCodeSequence = [_code_item("T-62000", "SRT", "Liver")]
    num.ContentSequence = [site]
    empty = Dataset()  # a NUM without a value (Numeric Value Qualifier instead)
    empty.RelationshipType, empty.ValueType = "CONTAINS", "NUM"
    empty.ConceptNameCodeSequence = [_code_item("G-A22A", "SRT", "Length")]
    empty.MeasuredValueSequence = []
    ds.ContentSequence = [finding, num, empty]
    for variant in (ds, json_roundtrip(ds)):
        record = describe(variant)
        assert record.person_name == "Smith^Ann" and record.task_uid == "1.2.3.4"
        assert record.verification_flag == "" and record.predecessors == []
        assert [(i.kind, i.concept, i.value, i.unit, i.text) for i in record.items] == [
            ("evaluation", "Finding", None, "", "Small hypodense lesion"),
            ("measurement", "Volume", 1234.5, "mm3", ""),
            ("measurement", "Length", None, "", "")]


def test_describe_refuses_what_is_not_an_sr_or_has_no_content(case, reader_report):
    with pytest.raises(SRReadError, match="not an SR"):
        describe(case[0][0])
    with pytest.raises(SRReadError, match="not a DICOM dataset"):
        describe({"00080060": {"vr": "CS", "Value": ["SR"]}})
    hollow = roundtrip(reader_report)
    del hollow.ContentSequence
    with pytest.raises(SRReadError, match="no content") as caught:
        describe(hollow)
    assert isinstance(caught.value, ValueError)


def test_highdicom_reads_our_reports_back(reader_report, accepted):
    for ds in (reader_report, accepted):
        report = hd.sr.Comprehensive3DSR.from_dataset(ds).content
        assert isinstance(report, hd.sr.MeasurementReport)
        groups = report.get_volumetric_roi_measurement_groups()
        assert [g.tracking_identifier for g in groups] == ["Liver", "Liver lesion"]
        assert [g.finding_type.meaning for g in groups] == ["Liver", "Lesion"]
        assert [o.observer_type.meaning for o in report.get_observer_contexts()] == \
            ["Person", "Device"]


def test_measurement_report_of_a_seg_build_segmentation(tmp_path):
    """The real pair: a SEG from seg.build, its report from sr.build (skipped until
    seg.build is in the checkout)."""
    seg_build = pytest.importorskip("seg.build")
    images = ct_volume(32, 32, 8, n_spheres=2)
    label_map = sphere_labels((8, 32, 32), 2)
    seg = roundtrip(seg_build.build_segmentation(images, label_map, LABEL_SET, READER))
    stats = measure_segments(label_map, images, [1, 2, 3])
    ds = roundtrip(build_measurement_report(seg, images, stats, READER, LABEL_SET))
    record = describe(ds)
    volumes = {i.label: i.value for i in record.items if i.concept == "Volume"}
    assert volumes == {"Liver": pytest.approx(stats[1].volume_mm3),
                       "Liver lesion": pytest.approx(stats[2].volume_mm3)}
    assert seg.SOPInstanceUID in record.referenced_instances
    assert dciodvfy_errors(ds, tmp_path) == []
