"""Write a reader's label map as a DICOM Segmentation (PS3.3 A.51, modules C.8.20).

One SEG instance per (task, reader, save), in a series of its own (annotation-model.md
§3.1).  Everything that says who made it, how, with what and for which task comes from
one :class:`worklist.provenance.Provenance`, stated honestly:

======================  ==========================================================
who                     Content Creator's Name (0070,0084) = person; Content
                        Creator's Identification Code Sequence (0070,0086) =
                        login as a Person Identification Code + Institution Name
how                     Segment Algorithm Type (0062,0008) per segment:
                        MANUAL / SEMIAUTOMATIC / AUTOMATIC; Algorithm
                        Identification (10.16) whenever an algorithm took part
with what               Enhanced General Equipment = the annotation tool;
                        Contributing Equipment Sequence (0018,A001) = the tool
                        and the algorithm
when                    Content Date / Content Time (+ Timezone Offset From UTC)
for which task          Referenced Performed Procedure Step Sequence (0008,1111)
                        = the UPS (UPS Push SOP Class, workitem UID)
======================  ==========================================================

The label map's axis 0 follows ``seg.masks`` (source images sorted along the slice
normal); the source images may be given in any order and need no Pixel Data.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Sequence

import highdicom as hd
import numpy as np
from highdicom.color import CIELabColor
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import RE_VALID_UID, generate_uid

from seg.masks import check_geometry, check_labels, element_value, sort_images
from worklist.labelsets import Code, Label, LabelSet
from worklist.provenance import (LOGIN_SCHEME, UPS_PUSH_SOP_CLASS, AlgorithmTypeValues,
                                 Provenance)

__all__ = ["build_segmentation", "segment_descriptions", "contributing_equipment",
           "present_labels", "CONTENT_LABEL"]

CONTENT_LABEL = "SEGMENTATION"
"""Content Label (0070,0080), CS: what this instance holds."""


def _coded(code: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(code.value, code.scheme, code.meaning)


def _algorithm_identification(provenance: Provenance) -> hd.AlgorithmIdentificationSequence:
    algorithm = provenance.algorithm
    assert algorithm is not None
    # PS3.3 10.16 Algorithm Identification Macro: Algorithm Family Code Sequence (1, CID
    # 7162), Algorithm Name (1), Algorithm Version (1), Algorithm Source (3).
    return hd.AlgorithmIdentificationSequence(
        name=algorithm.name, family=hd.sr.CodedConcept(*algorithm.family),
        version=algorithm.version, source=algorithm.source or None)


def segment_descriptions(label_set: LabelSet, values: Sequence[int],
                         provenance: Provenance) -> list[hd.seg.SegmentDescription]:
    """One Segment Description per label value in ``values`` (in that order), numbered
    1..k.  PS3.3 C.8.20.2 (Segmentation Image Module, Segment Description Macro)."""
    algorithm_type = provenance.algorithm_type
    # PS3.3 C.8.20.2: Segment Algorithm Type (0062,0008) is AUTOMATIC "calculated
    # segment", SEMIAUTOMATIC "calculated segment with user assistance", MANUAL
    # "user-entered segment"; Segment Algorithm Name (0062,0009) is required when not
    # MANUAL, and highdicom fills it from the Algorithm Identification.  A person who
    # edited an algorithm's proposal keeps that algorithm's identification (SEMIAUTOMATIC).
    identification = (_algorithm_identification(provenance)
                      if provenance.algorithm is not None else None)
    out = []
    for number, value in enumerate(values, start=1):
        label: Label = label_set.by_value(int(value))
        rgb = label.rgb
        out.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=label.name,
            segmented_property_category=_coded(label.category),
            segmented_property_type=_coded(label.type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues(algorithm_type.value),
            algorithm_identification=identification,
            anatomic_regions=[_coded(label.region)] if label.region is not None else None,
            # Recommended Display CIELab Value (0062,000D)
            display_color=CIELabColor.from_rgb(*rgb) if rgb is not None else None,
        ))
    return out


def contributing_equipment(provenance: Provenance) -> list[hd.ContributingEquipment]:
    """Contributing Equipment Sequence (0018,A001) items, PS3.3 C.12.1 (SOP Common).

    Purpose of Reference from CID 7005: the tool and the algorithm both *created a new
    instance* from the source images, which is DCM 109102 "Processing Equipment";
    109103 "Modifying Equipment" is for equipment that changed an existing instance in
    place, which neither did.  (highdicom adds the source images' acquisition equipment
    before these items and itself after them.)"""
    tool = provenance.tool
    kind = provenance.algorithm_type
    if kind is AlgorithmTypeValues.AUTOMATIC:
        what = "Wrote the algorithm's segmentation"
    elif kind is AlgorithmTypeValues.SEMIAUTOMATIC:
        what = "Annotation tool: the reader edited an algorithm's pre-segmentation"
    else:
        what = "Annotation tool: segments drawn by the reader"
    items = [hd.ContributingEquipment(
        manufacturer=tool.manufacturer,
        purpose_of_reference=codes.DCM.ProcessingEquipment,
        manufacturer_model_name=tool.model_name,
        software_versions=tool.software_version,
        device_serial_number=tool.serial_number,
        contribution_datetime=provenance.created,
        contribution_description=what)]
    algorithm = provenance.algorithm
    if algorithm is not None:
        items.append(hd.ContributingEquipment(
            manufacturer=algorithm.source or algorithm.name,
            purpose_of_reference=codes.DCM.ProcessingEquipment,
            manufacturer_model_name=algorithm.name,
            software_versions=algorithm.version,
            contribution_description=(
                "Algorithm whose pre-segmentation the reader edited"
                if kind is AlgorithmTypeValues.SEMIAUTOMATIC
                else "Algorithm that computed the segments")))
    return items


_Creator = tuple[str | None, hd.ContentCreatorIdentificationCodeSequence | None]


def _content_creator(provenance: Provenance) -> _Creator:
    person = provenance.person
    if person is None:
        # AUTOMATIC: Content Creator's Name (Type 2) is the "name of operator creating the
        # content" (PS3.3 10.9); no operator took part, so it stays empty rather than
        # dressing the algorithm up as a person (readers index this attribute as the
        # reader).  The algorithm is named per segment (Segment Algorithm Name and
        # Algorithm Identification) and in the Contributing Equipment Sequence.
        return None, None
    if not person.organization:
        raise ValueError("provenance: person.organization is required: Institution Name "
                         "(0008,0080) is Type 1C in the Person Identification Macro "
                         "(PS3.3 10.1) that carries the reader's login")
    # PS3.3 10.9 Content Identification Macro: Content Creator's Identification Code
    # Sequence (0070,0086) holds the Person Identification Macro (PS3.3 10.1): Person
    # Identification Code Sequence (1) + Institution Name (1C).  The code is the login as
    # the worklist writes it in Human Performer Code Sequence items.
    login = hd.sr.CodedConcept(person.login, LOGIN_SCHEME, person.name)
    return person.name, hd.ContentCreatorIdentificationCodeSequence(
        person_identification_codes=[login], institution_name=person.organization)


def present_labels(label_map: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(label values present, ascending; whether each frame has any labelled voxel).

    Tests every label against the non-empty frames only, and stops as soon as every
    value up to the maximum has been seen: a full histogram of a 512×512×300 map costs as
    much as a third of highdicom's whole build."""
    frames = label_map.shape[0]
    # A per-frame max is one vectorised pass (faster than any(), which converts to bool).
    frame_max = label_map.reshape(frames, -1).max(axis=1)
    nonempty = frame_max > 0
    high = int(frame_max.max())
    seen = np.zeros(high + 1, dtype=bool)
    seen[0] = True
    for f in np.flatnonzero(nonempty):
        frame = label_map[f]
        for value in np.flatnonzero(~seen):
            if (frame == value).any():
                seen[value] = True
        if seen.all():
            break
    return np.flatnonzero(seen[1:]) + 1, nonempty


def _renumber(label_map: np.ndarray, values: np.ndarray, nonempty: np.ndarray) -> np.ndarray:
    """Label values → segment numbers 1..k (highdicom wants every number from 1 to the
    maximum described); only non-empty frames are touched."""
    if np.array_equal(values, np.arange(1, len(values) + 1)):
        return label_map
    lut = np.zeros(int(values[-1]) + 1, dtype=label_map.dtype)
    lut[values] = np.arange(1, len(values) + 1, dtype=label_map.dtype)
    out = np.zeros_like(label_map)
    out[nonempty] = lut[label_map[nonempty]]
    return out


def _check_sources(source_images: Sequence[Dataset]) -> list[Dataset]:
    if isinstance(source_images, Dataset) or not isinstance(source_images, Sequence):
        raise TypeError("source_images: expected a sequence of pydicom Datasets")
    if not source_images:
        raise ValueError("source_images: empty; a segmentation needs its source series")
    keys = set()
    for i, ds in enumerate(source_images):
        if not isinstance(ds, Dataset):
            raise TypeError(f"source_images[{i}]: expected a pydicom Dataset, got "
                            f"{type(ds).__name__}")
        keys.add((element_value(ds, 0x0020000D), element_value(ds, 0x0020000E),  # study, series
                  element_value(ds, 0x00280010), element_value(ds, 0x00280011)))  # rows, columns
    if any(None in key for key in keys):
        raise ValueError("source_images: every image needs StudyInstanceUID, "
                         "SeriesInstanceUID, Rows and Columns")
    series = {key[:2] for key in keys}
    if len(series) > 1:
        raise ValueError(f"source_images: come from {len(series)} series; a segmentation's "
                         "source images are one series")
    if len(keys) > 1:
        raise ValueError("source_images: images differ in Rows/Columns "
                         f"{sorted({key[2:] for key in keys})}")
    try:
        return sort_images(source_images)
    except ValueError as exc:
        raise ValueError(f"source_images: {exc}") from None


def _valid_uid(value: str) -> bool:
    return len(value) <= 64 and RE_VALID_UID.match(value) is not None


def _check_uid(value: str | None, name: str) -> str:
    if value is None:
        return generate_uid()
    if not isinstance(value, str):
        raise TypeError(f"{name}: expected a UID string, got {type(value).__name__}")
    if not _valid_uid(value):
        raise ValueError(f"{name}: {value!r} is not a valid UID")
    return value


def _default_series_number(first: Dataset) -> int:
    # Derived series numbered next to their source (1000 + source) sort beside it in
    # viewers that order series by number.
    try:
        return 1000 + int(first.get("SeriesNumber") or 0)
    except (TypeError, ValueError):
        return 1000


def build_segmentation(source_images: Sequence[Dataset], label_map: np.ndarray,
                       label_set: LabelSet, provenance: Provenance, *,
                       series_number: int | None = None, instance_number: int = 1,
                       series_description: str | None = None,
                       sop_instance_uid: str | None = None,
                       series_instance_uid: str | None = None) -> hd.seg.Segmentation:
    """A BINARY Segmentation of ``label_map`` (axis 0 = ``sort_images(source_images)``),
    one segment per label present, numbered 1..k in label order.

    Raises TypeError / ValueError naming the argument: label_map not matching the series
    (``seg.masks.MaskError``, a ValueError), labels outside the set, an empty map, source
    images from several series or multi-frame, a person without organization."""
    if not isinstance(label_set, LabelSet):
        raise TypeError(f"label_set: expected a LabelSet, got {type(label_set).__name__}")
    if not isinstance(provenance, Provenance):
        raise TypeError(f"provenance: expected a Provenance, got {type(provenance).__name__}")
    images = _check_sources(source_images)
    if not isinstance(label_map, np.ndarray):
        raise TypeError(f"label_map: expected a numpy array, got {type(label_map).__name__}")
    if label_map.dtype.kind not in "biu":
        raise TypeError(f"label_map: dtype {label_map.dtype} is not an integer or boolean "
                        "label map (load files with seg.masks.load_mask)")
    check_geometry(label_map, images, what="label_map")
    label_map = check_labels(label_map, label_set, what="label_map")
    if series_number is None:
        series_number = _default_series_number(images[0])
    for name, number in (("series_number", series_number), ("instance_number", instance_number)):
        if isinstance(number, bool) or not isinstance(number, int):
            raise TypeError(f"{name}: expected an int, got {type(number).__name__}")
        if not 1 <= number < 2 ** 31:
            raise ValueError(f"{name}: {number} is not a positive IS value")
    if series_description is None:
        if provenance.person is not None:
            who = provenance.person.login
        else:
            assert provenance.algorithm is not None  # Provenance needs one of them
            who = provenance.algorithm.name
        series_description = f"Segmentation by {who}"
    if not isinstance(series_description, str) or len(series_description) > 64:
        raise ValueError("series_description: must be text of at most 64 characters (LO)")
    if not isinstance(provenance.task_uid, str) or not _valid_uid(provenance.task_uid):
        raise ValueError(f"provenance: task_uid {provenance.task_uid!r} is not a valid UID")
    sop_instance_uid = _check_uid(sop_instance_uid, "sop_instance_uid")
    series_instance_uid = _check_uid(series_instance_uid, "series_instance_uid")

    values, nonempty = present_labels(label_map)
    pixels = _renumber(label_map, values, nonempty)
    creator_name, creator_identification = _content_creator(provenance)
    created = provenance.created
    if not isinstance(created, _dt.datetime):
        raise TypeError("provenance.created: expected a datetime")
    tool = provenance.tool

    # PS3.3 A.51 / C.8.20: Segmentation IOD.  BINARY keeps one bit per voxel and lets
    # highdicom omit the empty frames of each segment, so a few organs in a 300-slice
    # series cost kilobytes; Explicit VR Little Endian (the only native syntax BINARY
    # allows besides JPEG 2000, which would only cost time here).
    seg = hd.seg.Segmentation(
        source_images=images,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=segment_descriptions(label_set, values, provenance),
        series_instance_uid=series_instance_uid,
        series_number=series_number,
        sop_instance_uid=sop_instance_uid,
        instance_number=instance_number,
        manufacturer=tool.manufacturer,
        manufacturer_model_name=tool.model_name,
        software_versions=tool.software_version,
        device_serial_number=tool.serial_number,
        content_label=CONTENT_LABEL,
        content_description=f"Label set {label_set.name}"[:64],
        content_creator_name=creator_name,
        content_creator_identification=creator_identification,
        contributing_equipment=contributing_equipment(provenance),
        omit_empty_frames=True,
        series_description=series_description,
        content_date=created.date(),
        content_time=created.time().replace(tzinfo=None),
        series_date=created.date(),
        series_time=created.time().replace(tzinfo=None),
    )
    if creator_name is None:
        # PS3.3 10.9: Content Creator's Name is Type 2 — present, empty (see _content_creator).
        seg.ContentCreatorName = ""
    offset = created.utcoffset()
    if offset is not None:
        # PS3.3 C.12.1: Timezone Offset From UTC (0008,0201) qualifies the local Content
        # Date/Time; without it a reader in another zone would misplace the save.
        minutes = int(offset.total_seconds() // 60)
        sign = "+" if minutes >= 0 else "-"
        seg.TimezoneOffsetFromUTC = f"{sign}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    if creator_name is not None:
        # PS3.3 C.12.1 SOP Common: a private coding scheme used is declared in the Coding
        # Scheme Identification Sequence (0008,0110): here the one of the reader's login.
        scheme = Dataset()
        scheme.CodingSchemeDesignator = LOGIN_SCHEME
        scheme.CodingSchemeName = "worklist login names"
        scheme.CodingSchemeResponsibleOrganization = "worklist project"
        seg.CodingSchemeIdentificationSequence = [scheme]
    # PS3.3 C.7.3.1 General Series Module: Referenced Performed Procedure Step Sequence
    # (0008,1111) "uniquely identifies the Performed Procedure Step SOP Instance to which
    # the Series is related"; for a UPS the reference is the workitem itself (PS3.4
    # CC.1: a UPS is also the performed step), class UPS Push.
    step = Dataset()
    step.ReferencedSOPClassUID = UPS_PUSH_SOP_CLASS
    step.ReferencedSOPInstanceUID = provenance.task_uid
    seg.ReferencedPerformedProcedureStepSequence = [step]
    if provenance.session:
        # Clinical Trial Series Module (PS3.3 C.7.3.2, "U" in the Segmentation IOD): the
        # reading session / repetition label, as MONAI Label writes it; Clinical Trial
        # Coordinating Center Name is Type 2.
        seg.ClinicalTrialCoordinatingCenterName = ""
        seg.ClinicalTrialSeriesID = provenance.session[:64]
    return seg

