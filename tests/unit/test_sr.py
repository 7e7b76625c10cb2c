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
from sr.measure import SegmentStats, measure_segments, slice_thicknesses
from worklist.labelsets import Code, parse_label_sets
from worklist.provenance import (UPS_PUSH_SOP_CLASS, Algorithm, Person, Provenance,
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
