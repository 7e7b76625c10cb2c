"""Read a DICOM Segmentation back: its masks, and what it says about its making.

Tolerant on read (highdicom's design principle): :func:`describe` works on any SEG —
ours, another tool's with optional attributes missing, or a WADO-RS metadata response
(``Dataset.from_json``) that has no Pixel Data — and leaves a field blank when the
object does not say.  Only an object that is not a Segmentation, or has no Segment
Sequence, is refused (:class:`SegReadError`, naming the attribute).

Masks (:func:`read_segmentation`) need the pixels and follow ``seg.masks``' axis-0
convention when the source images are given.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from seg.masks import sort_images
from worklist.provenance import LOGIN_SCHEMES, UPS_PUSH_SOP_CLASS, ResultItem, ResultRecord

__all__ = ["SegReadError", "read_segmentation", "describe", "SEG_SOP_CLASSES"]

SEG_SOP_CLASSES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.66.7": "Label Map Segmentation Storage",
}


class SegReadError(ValueError):
    """The object is not a Segmentation, or lacks what every SEG must have."""


def _require_seg(ds: Any) -> Dataset:
    if isinstance(ds, dict):
        ds = Dataset.from_json(ds)
    if not isinstance(ds, Dataset):
        raise TypeError(f"ds: expected a pydicom Dataset or DICOM JSON, got {type(ds).__name__}")
    sop_class = ds.get("SOPClassUID")
    if not sop_class:
        raise SegReadError("not a Segmentation: SOPClassUID (0008,0016) is missing")
    if str(sop_class) not in SEG_SOP_CLASSES:
        raise SegReadError(f"not a Segmentation: SOPClassUID (0008,0016) is {sop_class}")
    if not ds.get("SegmentSequence"):
        raise SegReadError("Segmentation without SegmentSequence (0062,0002)")
    return ds


def _text(value: Any) -> str:
    return "" if value is None else str(value).strip()


def _first(seq: Any) -> Dataset | None:
    return seq[0] if seq else None


def _meaning(seq: Any) -> str:
    item = _first(seq)
    return _text(item.get("CodeMeaning")) if item is not None else ""


def _segment_labels(ds: Dataset) -> list[tuple[int, str]]:
    """(segment number, label) per Segment Sequence item, in order; a label another
    segment already uses gets its number appended, a missing one is "Segment <n>"."""
    out: list[tuple[int, str]] = []
    for index, item in enumerate(ds.SegmentSequence, start=1):
        try:
            number = int(item.get("SegmentNumber", index))
        except (TypeError, ValueError):
            number = index
        label = _text(item.get("SegmentLabel")) or f"Segment {number}"
        if any(label == seen for _, seen in out):
            label = f"{label} #{number}"
        out.append((number, label))
    return out


def _spatially_aligned(ds: Dataset) -> bool:
    """False when a frame says its pixels do not map one-to-one onto its source frame
    (Spatial Locations Preserved (0028,135A) NO or REORIENTED_ONLY); absent = aligned."""
    for frame in ds.get("PerFrameFunctionalGroupsSequence") or []:
        for derivation in frame.get("DerivationImageSequence") or []:
            for source in derivation.get("SourceImageSequence") or []:
                if source.get("SpatialLocationsPreserved", "YES") != "YES":
                    return False
    return True


def _ascending(volume: hd.Volume, ds: Dataset) -> np.ndarray:
    """The volume's array with axis 0 ascending along the slice normal."""
    array = volume.array
    shared = _first(ds.get("SharedFunctionalGroupsSequence"))
    orientation = _first(shared.get("PlaneOrientationSequence")) if shared is not None else None
    if orientation is None or "ImageOrientationPatient" not in orientation:
        return array
    iop = np.asarray(orientation.ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    if float(volume.affine[:3, 0] @ normal) < 0:
        array = array[::-1]
    return array


def read_segmentation(ds: Dataset, source_images: Sequence[Dataset] | None = None
                      ) -> dict[str, np.ndarray]:
    """A boolean mask per Segment Label.

    With ``source_images`` (any order): shape (len(source_images), Rows, Columns), axis 0
    = ``seg.masks.sort_images(source_images)``, a source image the SEG has no frame for
    is all False.  Without them: the regularly spaced volume the SEG's own frames span
    (highdicom ``get_volume``), axis 0 ascending along the slice normal — slices outside
    the labelled range are not there, so prefer passing the source images."""
    ds = _require_seg(ds)
    if not ds.get("PixelData"):
        raise SegReadError("Segmentation without PixelData (7FE0,0010): masks need the "
                           "pixels (describe() works on metadata)")
    seg = ds if isinstance(ds, hd.seg.Segmentation) else hd.seg.Segmentation.from_dataset(ds)
    labels = _segment_labels(ds)
    if source_images is None:
        try:
            volume = seg.get_volume(segment_numbers=[n for n, _ in labels], dtype=bool)
        except (ValueError, RuntimeError) as exc:
            raise SegReadError(f"the Segmentation's frames are not a regular volume ({exc}); "
                               "pass source_images") from None
        array = _ascending(volume, ds)
        return {label: np.ascontiguousarray(array[..., i])
                for i, (_, label) in enumerate(labels)}

    images = sort_images(source_images)
    first = images[0]
    if (int(first.Rows), int(first.Columns)) != (int(ds.Rows), int(ds.Columns)):
        raise SegReadError(f"source_images are {first.Rows}×{first.Columns}, the "
                           f"Segmentation's frames {ds.Rows}×{ds.Columns}")
    referenced = {_text(item.get("SeriesInstanceUID"))
                  for item in ds.get("ReferencedSeriesSequence") or []}
    series = _text(first.get("SeriesInstanceUID"))
    if referenced and series not in referenced:
        raise SegReadError(f"source_images: series {series} is not in the Segmentation's "
                           "Referenced Series Sequence (0008,1115)")
    if not _spatially_aligned(ds):
        raise SegReadError("the Segmentation says Spatial Locations Preserved (0028,135A) "
                           "is not YES: its frames do not map pixel for pixel onto the "
                           "source images")
    uids = [str(image.SOPInstanceUID) for image in images]
    masks = {}
    for number, label in labels:
        # One call per segment: each result is contiguous, not a strided view of a 4-D
        # stack.  Frames the SEG omitted (empty) are zeros; spatial alignment was checked
        # above, so a SEG that does not state Spatial Locations Preserved is accepted.
        pixels = seg.get_pixels_by_source_instance(
            uids, segment_numbers=[number], assert_missing_frames_are_empty=True,
            ignore_spatial_locations=True, dtype=bool)
        masks[label] = pixels[..., 0]
    return masks


# -- provenance ---------------------------------------------------------------------------
def _task_uid(ds: Dataset) -> str | None:
    for item in ds.get("ReferencedPerformedProcedureStepSequence") or []:
        if _text(item.get("ReferencedSOPClassUID")) == UPS_PUSH_SOP_CLASS:
            return _text(item.get("ReferencedSOPInstanceUID")) or None
    return None


def _content_datetime(ds: Dataset) -> str:
    """Content Date + Content Time (+ Timezone Offset From UTC) as a DICOM DT string."""
    date = _text(ds.get("ContentDate"))
    if not date:
        return ""
    return date + _text(ds.get("ContentTime")) + _text(ds.get("TimezoneOffsetFromUTC"))


def _person(ds: Dataset) -> tuple[str, str, str]:
    """(login, name, organization) from Content Creator's Name (0070,0084) and Content
    Creator's Identification Code Sequence (0070,0086).  A login is a Person
    Identification Code in our scheme (LOGIN_SCHEMES); another tool's codes (employee
    numbers, ...) are not taken for a login."""
    name = _text(ds.get("ContentCreatorName"))
    login = organization = ""
    identification = _first(ds.get("ContentCreatorIdentificationCodeSequence"))
    if identification is not None:
        organization = _text(identification.get("InstitutionName"))
        for code in identification.get("PersonIdentificationCodeSequence") or []:
            if _text(code.get("CodingSchemeDesignator")) in LOGIN_SCHEMES:
                login = _text(code.get("CodeValue"))
                name = name or _text(code.get("CodeMeaning"))
                break
    return login, name, organization


def _references(ds: Dataset) -> tuple[list[str], list[str]]:
    """Series and instances of the Referenced Series Sequence (0008,1115), also those in
    other studies (Studies Containing Other Referenced Instances Sequence)."""
    series: list[str] = []
    instances: list[str] = []

    def collect(items: Iterable[Dataset]) -> None:
        for item in items:
            uid = _text(item.get("SeriesInstanceUID"))
            if uid and uid not in series:
                series.append(uid)
            for ref in item.get("ReferencedInstanceSequence") or []:
                sop = _text(ref.get("ReferencedSOPInstanceUID"))
                if sop:
                    instances.append(sop)

    collect(ds.get("ReferencedSeriesSequence") or [])
    for study in ds.get("StudiesContainingOtherReferencedInstancesSequence") or []:
        collect(study.get("ReferencedSeriesSequence") or [])
    return series, instances


def _segment_item(item: Dataset, label: str, number: int) -> ResultItem:
    algorithm = _first(item.get("SegmentationAlgorithmIdentificationSequence"))
    name = _text(item.get("SegmentAlgorithmName"))
    version = ""
    if algorithm is not None:
        name = name or _text(algorithm.get("AlgorithmName"))
        version = _text(algorithm.get("AlgorithmVersion"))
    return ResultItem(kind="segment", label=label, segment_number=number,
                      property_type=_meaning(item.get("SegmentedPropertyTypeCodeSequence")),
                      algorithm_type=_text(item.get("SegmentAlgorithmType")),
                      algorithm_name=name, algorithm_version=version)


def describe(ds: Dataset | dict[str, Any]) -> ResultRecord:
    """What the result index keeps of a SEG (see the module docstring on tolerance)."""
    ds = _require_seg(ds)
    login, name, organization = _person(ds)
    series, instances = _references(ds)
    device = " ".join(part for part in (_text(ds.get("Manufacturer")),
                                        _text(ds.get("ManufacturerModelName"))) if part)
    labels = _segment_labels(ds)
    items = [_segment_item(item, label, number)
             for item, (number, label) in zip(ds.SegmentSequence, labels, strict=True)]
    return ResultRecord(
        sop_instance_uid=_text(ds.get("SOPInstanceUID")),
        sop_class_uid=_text(ds.SOPClassUID),
        kind="SEG",
        study_uid=_text(ds.get("StudyInstanceUID")),
        series_uid=_text(ds.get("SeriesInstanceUID")),
        task_uid=_task_uid(ds),
        content_datetime=_content_datetime(ds),
        person_login=login,
        person_name=name,
        organization=organization,
        device_name=device,
        referenced_series=series,
        referenced_instances=instances,
        items=items,
    )
