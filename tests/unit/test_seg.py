"""SEG build / read (issue 6, point 2): round trips through bytes, provenance as stated,
dciodvfy-clean for every Segment Algorithm Type, tolerant describe(), strict refusals."""

from __future__ import annotations

import copy
import datetime as dt
import io
import os
import random
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from highdicom.color import CIELabColor
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from seg import (CONTENT_LABEL, MaskError, SegReadError, build_segmentation, check_geometry,
                 describe, load_mask, read_segmentation, sort_images)
from seg.synthetic import ct_volume, nifti_affine, sphere_labels
from worklist.labelsets import load_label_sets
from worklist.provenance import (LOGIN_SCHEME, UPS_PUSH_SOP_CLASS, Algorithm, Person,
                                 Provenance, Tool)

SHAPE = (8, 32, 32)
LABEL_SETS = load_label_sets()
ORGANS = LABEL_SETS["abdomen-organs"]
CREATED = dt.datetime(2026, 3, 16, 9, 30, 15, 250000,
                      tzinfo=dt.timezone(dt.timedelta(hours=1)))
TOOL = Tool("Acme Imaging", "Annotator", "2.3.1", "SN-42")
READER = Person("jdoe", "Doe^Jane", "Reading Lab")
ALGORITHM = Algorithm("TotalSegmentator", "2.4.0", source="DKFZ")


def provenance(kind: str, task_uid: str | None = None) -> Provenance:
    task_uid = task_uid or generate_uid()
    if kind == "MANUAL":
        return Provenance(task_uid, READER, tool=TOOL, created=CREATED)
    if kind == "SEMIAUTOMATIC":
        return Provenance(task_uid, READER, tool=TOOL, algorithm=ALGORITHM, created=CREATED)
    return Provenance(task_uid, None, tool=TOOL, algorithm=ALGORITHM, created=CREATED,
                      session="Session1")


KINDS = ["MANUAL", "SEMIAUTOMATIC", "AUTOMATIC"]


@pytest.fixture(scope="module")
def images() -> list[Dataset]:
    return ct_volume(SHAPE[1], SHAPE[2], SHAPE[0])


def boxes(*values: int) -> np.ndarray:
    """A label map with one box per value, each spanning several frames; no overlap."""
    label_map = np.zeros(SHAPE, dtype=np.uint8)
    for i, value in enumerate(values):
        label_map[i % 3: i % 3 + 4, 2 + 6 * i: 7 + 6 * i, 3: 3 + 4 * (i + 2)] = value
    return label_map


def shuffled(images: list[Dataset]) -> list[Dataset]:
    out = list(images)
    random.Random(3).shuffle(out)
    return out


def to_bytes_and_back(seg: Dataset) -> Dataset:
    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buffer.getvalue()))


# -- round trip ---------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip_equals_the_input_per_label(images: list[Dataset], kind: str) -> None:
    label_map = boxes(1, 2, 3, 4, 5)
    seg = build_segmentation(shuffled(images), label_map, ORGANS, provenance(kind))
    ds = to_bytes_and_back(seg)
    masks = read_segmentation(ds, shuffled(images)[::-1])
    assert list(masks) == [label.name for label in ORGANS.labels]
    for label in ORGANS.labels:
        assert masks[label.name].dtype == bool
        assert masks[label.name].shape == SHAPE
        assert np.array_equal(masks[label.name], label_map == label.value), label.name


def test_only_present_labels_become_segments_numbered_in_label_order(
        images: list[Dataset]) -> None:
    label_map = boxes(5, 2, 4)
    ds = to_bytes_and_back(build_segmentation(images, label_map, ORGANS, provenance("MANUAL")))
    segments = [(int(s.SegmentNumber), s.SegmentLabel) for s in ds.SegmentSequence]
    assert segments == [(1, "Spleen"), (2, "Pancreas"), (3, "Gallbladder")]
    masks = read_segmentation(ds, images)
    for name in ("Spleen", "Pancreas", "Gallbladder"):
        assert np.array_equal(masks[name], label_map == ORGANS.by_name(name).value)


def test_bool_map_is_label_one(images: list[Dataset]) -> None:
    label_map = boxes(1).astype(bool)
    ds = to_bytes_and_back(build_segmentation(images, label_map, ORGANS, provenance("MANUAL")))
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["Liver"]
    assert np.array_equal(read_segmentation(ds, images)["Liver"], label_map)


def test_read_without_source_images_spans_the_labelled_frames_ascending(
        images: list[Dataset]) -> None:
    label_map = np.zeros(SHAPE, dtype=np.uint8)
    label_map[2, 1:4, 1:4] = 1
    label_map[5, 10:20, 10:12] = 2
    ds = to_bytes_and_back(build_segmentation(images, label_map, ORGANS, provenance("MANUAL")))
    masks = read_segmentation(ds)
    assert masks["Liver"].shape == (4, 32, 32)  # frames 2..5
    assert np.array_equal(masks["Liver"], label_map[2:6] == 1)
    assert np.array_equal(masks["Spleen"], label_map[2:6] == 2)


def test_sort_images_orders_along_the_slice_normal(images: list[Dataset]) -> None:
    assert [ds.SOPInstanceUID for ds in sort_images(shuffled(images))] == \
        [ds.SOPInstanceUID for ds in images]
    # Rows running towards -y flip the normal to -z: ascending along it is descending z.
    flipped = copy.deepcopy(images)
    for ds in flipped:
        ds.ImageOrientationPatient = [1, 0, 0, 0, -1, 0]
    assert [ds.ImagePositionPatient[2] for ds in sort_images(flipped)] == \
        sorted((ds.ImagePositionPatient[2] for ds in images), reverse=True)


# -- provenance ---------------------------------------------------------------------------
def _equipment(ds: Dataset, description: str) -> Dataset:
    items = [item for item in ds.ContributingEquipmentSequence
             if description in item.get("ContributionDescription", "")]
    assert len(items) == 1, [i.get("ContributionDescription") for i in
                             ds.ContributingEquipmentSequence]
    return items[0]


@pytest.mark.parametrize("kind", KINDS)
def test_provenance_fields(images: list[Dataset], kind: str) -> None:
    prov = provenance(kind)
    ds = to_bytes_and_back(build_segmentation(images, boxes(1, 2), ORGANS, prov))

    # equipment = the tool (Enhanced General Equipment)
    assert (ds.Manufacturer, ds.ManufacturerModelName, ds.SoftwareVersions,
            ds.DeviceSerialNumber) == ("Acme Imaging", "Annotator", "2.3.1", "SN-42")
    tool = _equipment(ds, "Annotation tool" if kind != "AUTOMATIC" else "Wrote the algorithm")
    assert tool.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"  # Processing Eq.
    assert (tool.Manufacturer, tool.ManufacturerModelName, tool.SoftwareVersions,
            tool.DeviceSerialNumber) == ("Acme Imaging", "Annotator", "2.3.1", "SN-42")
    assert tool.ContributionDateTime == "20260316093015.250000+0100"
    # when
    assert (ds.ContentDate, ds.ContentTime, ds.TimezoneOffsetFromUTC) == \
        ("20260316", "093015.250000", "+0100")
    # for which task
    (step,) = ds.ReferencedPerformedProcedureStepSequence
    assert (step.ReferencedSOPClassUID, step.ReferencedSOPInstanceUID) == \
        (UPS_PUSH_SOP_CLASS, prov.task_uid)
    assert ds.ContentLabel == CONTENT_LABEL
    assert ds.ContentDescription == "Label set abdomen-organs"
    assert ds.SegmentationType == "BINARY"

    # how, per segment
    for segment, label in zip(ds.SegmentSequence, ORGANS.labels[:2], strict=True):
        assert segment.SegmentLabel == label.name
        assert segment.SegmentAlgorithmType == kind
        category = segment.SegmentedPropertyCategoryCodeSequence[0]
        assert (category.CodeValue, category.CodingSchemeDesignator) == \
            (label.category.value, label.category.scheme)
        assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == label.type.value
        assert list(segment.RecommendedDisplayCIELabValue) == \
            list(CIELabColor.from_rgb(*label.rgb).value)
        if kind == "MANUAL":
            assert "SegmentationAlgorithmIdentificationSequence" not in segment
            assert "SegmentAlgorithmName" not in segment
        else:
            (algorithm,) = segment.SegmentationAlgorithmIdentificationSequence
            assert (algorithm.AlgorithmName, algorithm.AlgorithmVersion,
                    algorithm.AlgorithmSource) == ("TotalSegmentator", "2.4.0", "DKFZ")
            assert algorithm.AlgorithmFamilyCodeSequence[0].CodeValue == "123110"
            assert segment.SegmentAlgorithmName == "TotalSegmentator"

    algorithm_items = [item for item in ds.ContributingEquipmentSequence
                       if item.get("ManufacturerModelName") == "TotalSegmentator"]
    if kind == "MANUAL":
        assert not algorithm_items
    else:
        (item,) = algorithm_items
        assert (item.Manufacturer, item.SoftwareVersions) == ("DKFZ", "2.4.0")
        assert item.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"

    # who
    if kind == "AUTOMATIC":
        assert "ContentCreatorName" in ds and ds.ContentCreatorName == ""
        assert "ContentCreatorIdentificationCodeSequence" not in ds
        assert ds.SeriesDescription == "Segmentation by TotalSegmentator"
        assert ds.ClinicalTrialSeriesID == "Session1"
    else:
        assert ds.ContentCreatorName == "Doe^Jane"
        (creator,) = ds.ContentCreatorIdentificationCodeSequence
        (code,) = creator.PersonIdentificationCodeSequence
        assert (code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning) == \
            ("jdoe", LOGIN_SCHEME, "Doe^Jane")
        assert creator.InstitutionName == "Reading Lab"
        assert ds.SeriesDescription == "Segmentation by jdoe"
        assert "ClinicalTrialSeriesID" not in ds


def test_anatomic_region_and_explicit_identity(images: list[Dataset]) -> None:
    lesions = LABEL_SETS["liver-lesions"]
    sop, series = generate_uid(), generate_uid()
    ds = build_segmentation(images, boxes(2), lesions, provenance("MANUAL"), series_number=7,
                            instance_number=3, series_description="Lesions, pass 2",
                            sop_instance_uid=sop, series_instance_uid=series)
    (segment,) = ds.SegmentSequence
    assert segment.AnatomicRegionSequence[0].CodeValue == "10200004"
    assert (ds.SOPInstanceUID, ds.SeriesInstanceUID, ds.SeriesNumber, ds.InstanceNumber,
            ds.SeriesDescription) == (sop, series, 7, 3, "Lesions, pass 2")
    assert ds.StudyInstanceUID == images[0].StudyInstanceUID


# -- dciodvfy -----------------------------------------------------------------------------
def _dciodvfy() -> str:
    path = shutil.which("dciodvfy")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("dciodvfy is missing: .ci/run installs the Debian package "
                        "'dicom3tools'")
        pytest.skip("dciodvfy is not installed (apt-get install dicom3tools)")
    return path


@pytest.mark.parametrize("kind", KINDS)
def test_dciodvfy_finds_no_error(images: list[Dataset], kind: str, tmp_path: Path) -> None:
    dciodvfy = _dciodvfy()
    path = tmp_path / f"{kind}.dcm"
    build_segmentation(images, boxes(1, 3, 5), ORGANS, provenance(kind)).save_as(
        path, enforce_file_format=True)
    result = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
    report = result.stdout + result.stderr
    assert "Segmentation" in report
    assert not [line for line in report.splitlines() if line.startswith("Error")], report


# -- describe -----------------------------------------------------------------------------
@pytest.mark.parametrize("kind", KINDS)
def test_describe(images: list[Dataset], kind: str) -> None:
    prov = provenance(kind)
    ds = to_bytes_and_back(build_segmentation(images, boxes(1, 4), ORGANS, prov))
    record = describe(ds)
    assert (record.kind, record.sop_class_uid, record.sop_instance_uid) == \
        ("SEG", "1.2.840.10008.5.1.4.1.1.66.4", ds.SOPInstanceUID)
    assert (record.study_uid, record.series_uid) == \
        (images[0].StudyInstanceUID, ds.SeriesInstanceUID)
    assert record.task_uid == prov.task_uid
    assert record.content_datetime == "20260316093015.250000+0100"
    assert record.device_name == "Acme Imaging Annotator"
    assert record.referenced_series == [images[0].SeriesInstanceUID]
    assert sorted(record.referenced_instances) == sorted(i.SOPInstanceUID for i in images)
    if kind == "AUTOMATIC":
        assert (record.person_login, record.person_name, record.organization) == ("", "", "")
    else:
        assert (record.person_login, record.person_name, record.organization) == \
            ("jdoe", "Doe^Jane", "Reading Lab")
    assert [(i.kind, i.label, i.segment_number, i.property_type, i.algorithm_type)
            for i in record.items] == [("segment", "Liver", 1, "Liver", kind),
                                       ("segment", "Pancreas", 2, "Pancreas", kind)]
    expected = ("", "") if kind == "MANUAL" else ("TotalSegmentator", "2.4.0")
    assert all((i.algorithm_name, i.algorithm_version) == expected for i in record.items)


def test_describe_a_metadata_response_without_pixel_data(images: list[Dataset]) -> None:
    ds = to_bytes_and_back(build_segmentation(images, boxes(1, 2), ORGANS,
                                              provenance("SEMIAUTOMATIC")))
    expected = describe(ds)
    # WADO-RS metadata: Pixel Data is a BulkDataURI the client did not fetch.
    as_json = ds.to_json_dict(bulk_data_threshold=1024,
                              bulk_data_element_handler=lambda elem: "http://pacs/bulk/1")
    assert as_json["7FE00010"] == {"vr": "OB", "BulkDataURI": "http://pacs/bulk/1"}
    metadata = Dataset.from_json(as_json, bulk_data_uri_handler=lambda tag, vr, uri: None)
    assert describe(metadata) == expected
    del ds.PixelData
    assert describe(Dataset.from_json(ds.to_json_dict())) == expected
    assert describe(ds.to_json_dict()) == expected  # DICOM JSON as a dict
    with pytest.raises(SegReadError, match="PixelData"):
        read_segmentation(metadata)


def test_describe_tolerates_another_tools_sparse_seg() -> None:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    segment = Dataset()
    segment.SegmentNumber = 1
    segment.SegmentAlgorithmType = "AUTOMATIC"
    segment.SegmentAlgorithmName = "monai"
    unnamed = Dataset()
    unnamed.SegmentNumber = 2
    twins = [Dataset(), Dataset()]
    for number, twin in enumerate(twins, start=3):
        twin.SegmentNumber, twin.SegmentLabel = number, "Lesion"
    ds.SegmentSequence = [segment, unnamed, *twins]
    ds.ContentCreatorName = "Roe^Rick"
    other = Dataset()
    other.PersonIdentificationCodeSequence = [Dataset()]
    other.PersonIdentificationCodeSequence[0].CodeValue = "E1234"
    other.PersonIdentificationCodeSequence[0].CodingSchemeDesignator = "99HOSP"
    other.PersonIdentificationCodeSequence[0].CodeMeaning = "Roe^Rick"
    ds.ContentCreatorIdentificationCodeSequence = [other]
    record = describe(ds)
    assert (record.sop_instance_uid, record.task_uid, record.content_datetime,
            record.device_name, record.referenced_series) == ("", None, "", "", [])
    assert (record.person_login, record.person_name, record.organization) == \
        ("", "Roe^Rick", "")
    assert [(i.label, i.segment_number, i.algorithm_type, i.algorithm_name, i.property_type)
            for i in record.items] == [("Segment 1", 1, "AUTOMATIC", "monai", ""),
                                       ("Segment 2", 2, "", "", ""),
                                       ("Lesion", 3, "", "", ""),
                                       ("Lesion #4", 4, "", "", "")]


def test_describe_refuses_what_is_not_a_seg() -> None:
    ds = Dataset()
    with pytest.raises(SegReadError, match="SOPClassUID"):
        describe(ds)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    with pytest.raises(SegReadError, match="SOPClassUID .* 1.2.840.10008.5.1.4.1.1.2"):
        describe(ds)
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    with pytest.raises(SegReadError, match="SegmentSequence"):
        describe(ds)


def test_read_refuses_source_images_of_another_series(images: list[Dataset]) -> None:
    ds = build_segmentation(images, boxes(1), ORGANS, provenance("MANUAL"))
    with pytest.raises(SegReadError, match="not in the Segmentation's Referenced Series"):
        read_segmentation(ds, ct_volume(SHAPE[1], SHAPE[2], SHAPE[0]))


# -- refusals on write --------------------------------------------------------------------
def test_refuses_a_shape_mismatch_naming_both_shapes(images: list[Dataset]) -> None:
    with pytest.raises(MaskError, match=r"label_map: shape \(frames, rows, columns\) "
                                        r"\(8, 32, 30\) does not match the source series "
                                        r"\(8, 32, 32\)"):
        build_segmentation(images, np.ones((8, 32, 30), np.uint8), ORGANS, provenance("MANUAL"))
    with pytest.raises(MaskError, match=r"\(7, 32, 32\) does not match .* \(8, 32, 32\)"):
        check_geometry(np.ones((7, 32, 32), np.uint8), images)


def test_refuses_an_empty_map(images: list[Dataset]) -> None:
    with pytest.raises(MaskError, match="label_map: the mask is empty"):
        build_segmentation(images, np.zeros(SHAPE, np.uint8), ORGANS, provenance("MANUAL"))


def test_refuses_labels_outside_the_set(images: list[Dataset]) -> None:
    label_map = boxes(1, 2)
    label_map[0, 0, 0] = 7
    with pytest.raises(MaskError, match=r"label value 7 is not in label set "
                                        r"'abdomen-organs' \(1-5\)"):
        build_segmentation(images, label_map, ORGANS, provenance("MANUAL"))
    with pytest.raises(MaskError, match=r"label value -1 is not in label set"):
        build_segmentation(images, boxes(1).astype(np.int16) * -1, ORGANS, provenance("MANUAL"))


def test_refuses_a_float_map_and_wrong_types(images: list[Dataset]) -> None:
    with pytest.raises(TypeError, match="label_map: dtype float32"):
        build_segmentation(images, boxes(1).astype(np.float32), ORGANS, provenance("MANUAL"))
    with pytest.raises(TypeError, match="label_set"):
        build_segmentation(images, boxes(1), "abdomen-organs",  # type: ignore[arg-type]
                           provenance("MANUAL"))
    with pytest.raises(TypeError, match="provenance"):
        build_segmentation(images, boxes(1), ORGANS, None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="source_images"):
        build_segmentation(images[0], boxes(1), ORGANS,  # type: ignore[arg-type]
                           provenance("MANUAL"))
    with pytest.raises(ValueError, match="series_number"):
        build_segmentation(images, boxes(1), ORGANS, provenance("MANUAL"), series_number=0)
    with pytest.raises(ValueError, match="sop_instance_uid"):
        build_segmentation(images, boxes(1), ORGANS, provenance("MANUAL"),
                           sop_instance_uid="not a uid")


def test_refuses_sources_from_two_series_or_multiframe(images: list[Dataset]) -> None:
    mixed = copy.deepcopy(images)
    mixed[3].SeriesInstanceUID = generate_uid()
    with pytest.raises(ValueError, match="source_images: come from 2 series"):
        build_segmentation(mixed, boxes(1), ORGANS, provenance("MANUAL"))
    multiframe = copy.deepcopy(images)
    multiframe[0].NumberOfFrames = 4
    with pytest.raises(ValueError, match="source_images: .*4 frames; only series of "
                                         "single-frame images"):
        build_segmentation(multiframe, boxes(1), ORGANS, provenance("MANUAL"))


def test_refuses_a_reader_without_organization(images: list[Dataset]) -> None:
    prov = Provenance(generate_uid(), Person("jdoe", "Doe^Jane"), created=CREATED)
    with pytest.raises(ValueError, match="person.organization is required"):
        build_segmentation(images, boxes(1), ORGANS, prov)
    with pytest.raises(ValueError, match="task_uid"):
        build_segmentation(images, boxes(1), ORGANS,
                           Provenance("task-7", READER, created=CREATED))


# -- mask files ---------------------------------------------------------------------------
def test_load_npy_and_npz(tmp_path: Path) -> None:
    label_map = boxes(1, 2, 5)
    np.save(tmp_path / "int.npy", label_map.astype(np.int32))
    np.save(tmp_path / "bool.npy", label_map > 0)
    np.save(tmp_path / "float.npy", label_map.astype(np.float64))
    np.savez(tmp_path / "labels.npz", labels=label_map)
    np.savez_compressed(tmp_path / "names.npz", Liver=label_map == 1, Spleen=label_map == 2,
                        Gallbladder=label_map == 5)
    for name in ("int.npy", "float.npy", "labels.npz", "names.npz"):
        loaded = load_mask(tmp_path / name, ORGANS)
        assert loaded.dtype == np.uint8, name
        assert np.array_equal(loaded, label_map), name
    assert np.array_equal(load_mask(tmp_path / "bool.npy", ORGANS), (label_map > 0))


@pytest.mark.parametrize("write, message", [
    (lambda p: np.savez(p / "m.npz", Liver=boxes(1) == 1, Heart=boxes(2) == 2),
     r"unknown label name\(s\) 'Heart' for label set 'abdomen-organs' \(known: Liver, "),
    (lambda p: np.save(p / "m.npy", boxes(1).astype(np.float32) * 0.5),
     r"dtype float32 with non-integral value 0.5"),
    (lambda p: np.save(p / "m.npy", boxes(1) * 7),
     r"label value 7 is not in label set 'abdomen-organs' \(1-5\)"),
    (lambda p: np.save(p / "m.npy", np.zeros(SHAPE, np.uint8)),
     r"the mask is empty \(no labelled voxel\)"),
    (lambda p: np.savez(p / "m.npz", Liver=np.zeros(SHAPE, bool)),
     r"the mask is empty \(no labelled voxel\)"),
    (lambda p: (p / "m.npy").write_bytes(b"not numpy"), r"cannot read mask file"),
    (lambda p: (p / "m.npz").write_bytes(b"PK not a zip"), r"cannot read mask file"),
    (lambda p: np.savez(p / "m.npz", labels=boxes(1), Liver=boxes(1) == 1),
     r"has 'labels' and other arrays \(Liver\)"),
    (lambda p: np.savez(p / "m.npz", Liver=boxes(1) == 1, Spleen=boxes(1) == 1),
     r"labels 'Liver' and 'Spleen' overlap in \d+ voxel"),
    (lambda p: np.save(p / "m.npy", np.ones((32, 32), np.uint8)),
     r"expected 3 dimensions \(frames, rows, columns\), got shape \(32, 32\)"),
    (lambda p: np.save(p / "m.npy", np.full(SHAPE, "a")), r"dtype <U1 is not an integer"),
])
def test_load_mask_refusals(tmp_path: Path, write, message: str) -> None:
    write(tmp_path)
    (path,) = tmp_path.iterdir()
    with pytest.raises(MaskError, match=message):
        load_mask(path, ORGANS)


# -- NIfTI masks: oriented against the source series -----------------------------------------
@pytest.fixture
def nifti_case(tmp_path):
    images = ct_volume(24, 20, 6)
    label_map = sphere_labels((6, 24, 20), 2)
    label_map[0, 0, 0] = 1  # a marker that shows any wrong flip or transposition
    shuffled = list(images)
    random.Random(3).shuffle(shuffled)
    return tmp_path, images, shuffled, label_map


def _save_nifti(path, data, affine):
    import nibabel

    nibabel.save(nibabel.Nifti1Image(data, affine), str(path))


def test_nifti_mask_in_column_row_frame_order_is_reordered(nifti_case) -> None:
    tmp, images, shuffled, label_map = nifti_case
    _save_nifti(tmp / "m.nii.gz", label_map.transpose(2, 1, 0).copy(), nifti_affine(images))
    got = load_mask(tmp / "m.nii.gz", ORGANS, shuffled)
    assert got.shape == label_map.shape and np.array_equal(got, label_map)


def test_nifti_mask_flipped_and_permuted_is_reordered(nifti_case) -> None:
    tmp, images, shuffled, label_map = nifti_case
    affine = nifti_affine(images)
    data = label_map.transpose(2, 1, 0)[::-1]  # columns run backwards
    flipped = affine.copy()
    flipped[:3, 3] = affine[:3, 3] + (data.shape[0] - 1) * affine[:3, 0]
    flipped[:3, 0] = -affine[:3, 0]
    # and stored as (frame, column, row)
    _save_nifti(tmp / "p.nii", data.transpose(2, 0, 1).copy(),
                flipped[:, [2, 0, 1, 3]])
    assert np.array_equal(load_mask(tmp / "p.nii", ORGANS, shuffled), label_map)


def test_nifti_mask_on_another_grid_is_refused(nifti_case) -> None:
    tmp, images, shuffled, label_map = nifti_case
    data = label_map.transpose(2, 1, 0).copy()
    coarse = nifti_affine(images) @ np.diag([2.0, 1.0, 1.0, 1.0])
    _save_nifti(tmp / "c.nii.gz", data, coarse)
    with pytest.raises(MaskError, match="column spacing 1.400 mm differs from the source "
                                        "series' 0.700 mm"):
        load_mask(tmp / "c.nii.gz", ORGANS, shuffled)
    moved = nifti_affine(images)
    moved[:3, 3] += [0, 0, 10]
    _save_nifti(tmp / "o.nii.gz", data, moved)
    with pytest.raises(MaskError, match="first voxel lies 10.0 mm from"):
        load_mask(tmp / "o.nii.gz", ORGANS, shuffled)
    with pytest.raises(MaskError, match="needs its source series"):
        load_mask(tmp / "o.nii.gz", ORGANS)
