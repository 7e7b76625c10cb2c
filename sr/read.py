"""What the result index keeps of an SR document: :func:`describe` (issue 6, point 3).

Tolerant on read: it reads our own reports (``sr.build``) and other tools' — any SR
whose root is a CONTAINER with content — from a file or from DICOM JSON, by walking the
content tree with plain pydicom.  highdicom's readers (``Comprehensive3DSR.from_dataset``,
``MeasurementReport``) are not used: they refuse a root without Content Template
Sequence or Continuity of Content and a non-TID 1500 tree, all of which other tools
write, while the facts indexed here need only concept names and values.

What is read where (PS3.3 C.17.1-C.17.3, PS3.16 TID 1500/1001/1002/1003/1004/1411):

* task: Referenced Performed Procedure Step Sequence (0008,1111) item of the UPS Push
  SOP Class (or the only item, whatever its class);
* person / device: the root's HAS OBS CONTEXT items (TID 1002/1003/1004), the first
  observer of each type; else Author Observer Sequence (0040,A078);
* verification: Verification Flag (0040,A493), Verifying Observer Sequence (0040,A073);
* predecessors: Predecessor Documents Sequence (0040,A360);
* references: Current Requested Procedure / Pertinent Other Evidence Sequences, IMAGE
  items (e.g. Referenced Segment), "Source series for segmentation" UIDREFs;
* items: every NUM is a measurement (label = the enclosing group's Tracking Identifier,
  concept = Derivation + name, e.g. "Mean Attenuation Coefficient"); every CONTAINS
  CODE or TEXT outside a NUM that is not part of a group's structure (finding type,
  site, category, method, ...) is an evaluation (a finding, a verdict, a comment).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from pydicom.dataset import Dataset

from worklist.provenance import UPS_PUSH_SOP_CLASS, ResultItem, ResultRecord

__all__ = ["describe", "SRReadError"]


class SRReadError(ValueError):
    """The object is not an SR document, or has no content to read."""


# Concepts (value, scheme) of the templates read here.
_OBSERVER_TYPE = ("121005", "DCM")
_PERSON, _DEVICE = ("121006", "DCM"), ("121007", "DCM")
_PERSON_NAME = ("121008", "DCM")
_LOGIN = ("128774", "DCM")
_ORGANIZATION = ("121009", "DCM")
_ROLE_IN_PROCEDURE = ("121011", "DCM")
_DEVICE_NAME = ("121013", "DCM")
_DEVICE_MODEL = ("121015", "DCM")
_GROUP = ("125007", "DCM")
_TRACKING_ID = ("112039", "DCM")
_FINDING = ("121071", "DCM")
_DERIVATION = ("121401", "DCM")
_SOURCE_SERIES = ("121232", "DCM")
_REFERENCED_SEGMENT = ("121191", "DCM")
_ALGORITHM_NAME, _ALGORITHM_VERSION = ("111001", "DCM"), ("111003", "DCM")
# CODE/TEXT items that are a group's structure, not an evaluation of it
_STRUCTURE = {_FINDING, ("363698007", "SCT"), ("276214006", "SCT"), ("370129005", "SCT"),
              ("130400", "DCM"), ("121049", "DCM"), ("121058", "DCM"),
              ("111001", "DCM"), ("111002", "DCM"), ("111003", "DCM"), ("111000", "DCM"),
              ("122405", "DCM"), _TRACKING_ID, ("C67447", "NCIt")}
# Legacy SNOMED-RT / UMLS spellings other tools still write for the same concepts.
_ALIASES = {("G-C0E3", "SRT"): ("363698007", "SCT"), ("G-C036", "SRT"): ("370129005", "SCT")}


def _code(seq: object) -> tuple[str, str, str] | None:
    if not seq:
        return None
    item = seq[0]  # type: ignore[index]
    value = item.get("CodeValue") or item.get("LongCodeValue") or item.get("URNCodeValue")
    return (str(value or ""), str(item.get("CodingSchemeDesignator", "")),
            str(item.get("CodeMeaning", "")))


def _concept(item: Dataset) -> tuple[str, str]:
    code = _code(item.get("ConceptNameCodeSequence"))
    key = (code[0], code[1]) if code else ("", "")
    return _ALIASES.get(key, key)


def _meaning(item: Dataset) -> str:
    code = _code(item.get("ConceptNameCodeSequence"))
    return code[2] if code else ""


def _children(item: Dataset) -> list[Dataset]:
    return list(item.get("ContentSequence") or [])


def _text(item: Dataset) -> str:
    """The value of a TEXT, PNAME, UIDREF, CODE (meaning) or DATETIME item, as text."""
    value_type = item.get("ValueType", "")
    if value_type == "CODE":
        code = _code(item.get("ConceptCodeSequence"))
        return code[2] if code else ""
    for keyword in ("TextValue", "PersonName", "UID", "DateTime", "Date", "Time"):
        if keyword in item and item[keyword].value not in (None, ""):
            return str(item[keyword].value)
    return ""


@dataclass
class _Observers:
    person_name: str = ""
    login: str = ""
    organization: str = ""
    role: str = ""
    device_name: str = ""


def _observers(items: list[Dataset]) -> _Observers:
    """TID 1002: an Observer Type item opens each observer's attributes (TID 1003 for a
    person, TID 1004 for a device); the first observer of each type is the one read.
    Attributes before any Observer Type (older writers) count for the person."""
    out = _Observers()
    current, seen = _PERSON, set()
    for item in items:
        if item.get("RelationshipType") not in (None, "HAS OBS CONTEXT"):
            continue
        concept = _concept(item)
        if concept == _OBSERVER_TYPE:
            value = _code(item.get("ConceptCodeSequence"))
            current = (value[0], value[1]) if value else ("", "")
            continue
        key = (current, concept)
        if key in seen:  # a second observer of the same type
            continue
        seen.add(key)
        if current == _PERSON:
            if concept == _PERSON_NAME:
                out.person_name = _text(item)
            elif concept == _LOGIN:
                out.login = _text(item)
            elif concept == _ORGANIZATION:
                out.organization = _text(item)
            elif concept == _ROLE_IN_PROCEDURE:
                out.role = _text(item)
        elif current == _DEVICE:
            if concept == _DEVICE_NAME or (concept == _DEVICE_MODEL and not out.device_name):
                out.device_name = _text(item)
    return out


def _num(item: Dataset) -> tuple[float | None, str]:
    measured = item.get("MeasuredValueSequence")
    if not measured:  # an empty value with a Numeric Value Qualifier (e.g. NaN)
        return None, ""
    value = measured[0]
    unit = _code(value.get("MeasurementUnitsCodeSequence"))
    raw = value.get("NumericValue")
    if isinstance(raw, (list, tuple)):
        raw = raw[0] if raw else None
    try:
        number = float(raw) if raw not in (None, "") else None
    except (TypeError, ValueError):
        number = None
    return number, unit[0] if unit else ""


@dataclass
class _Group:
    label: str = ""
    property_type: str = ""
    segment_number: int | None = None
    algorithm_name: str = ""
    algorithm_version: str = ""
    inside: bool = False
    """Within a Measurement Group (125007)."""


def _group_context(group: Dataset) -> _Group:
    out = _Group(inside=True)
    for child in _children(group):
        concept = _concept(child)
        if concept == _TRACKING_ID and not out.label:
            out.label = _text(child)
        elif concept == _FINDING and child.get("ValueType") == "CODE" and not out.property_type:
            out.property_type = _text(child)
        elif concept == _ALGORITHM_NAME and not out.algorithm_name:  # TID 4019
            out.algorithm_name = _text(child)
        elif concept == _ALGORITHM_VERSION and not out.algorithm_version:
            out.algorithm_version = _text(child)
        elif concept == _REFERENCED_SEGMENT or child.get("ValueType") == "IMAGE":
            for ref in child.get("ReferencedSOPSequence") or []:
                numbers = ref.get("ReferencedSegmentNumber")
                if numbers not in (None, ""):
                    first = numbers[0] if isinstance(numbers, (list, tuple)) else numbers
                    out.segment_number = int(first)
    return out


def _references(items: list[Dataset], references: list[tuple[str, str]]) -> None:
    """Instances referenced anywhere below (e.g. a NUM's source images)."""
    for item in items:
        if item.get("ValueType") in ("IMAGE", "COMPOSITE"):
            for ref in item.get("ReferencedSOPSequence") or []:
                if ref.get("ReferencedSOPInstanceUID"):
                    references.append(("instance", str(ref.ReferencedSOPInstanceUID)))
        _references(_children(item), references)


def _walk(items: list[Dataset], group: _Group, out: list[ResultItem],
          references: list[tuple[str, str]]) -> None:
    for item in items:
        value_type = item.get("ValueType", "")
        concept = _concept(item)
        if value_type in ("IMAGE", "COMPOSITE"):
            _references([item], references)
        elif value_type == "UIDREF" and concept == _SOURCE_SERIES and item.get("UID"):
            references.append(("series", str(item.UID)))
        if value_type == "NUM":
            value, unit = _num(item)
            name = _meaning(item)
            for mod in _children(item):
                if _concept(mod) == _DERIVATION and mod.get("ValueType") == "CODE":
                    derivation = _text(mod)
                    if derivation:
                        name = f"{derivation} {name}"
            out.append(ResultItem(kind="measurement", label=group.label,
                                  segment_number=group.segment_number,
                                  property_type=group.property_type,
                                  algorithm_name=group.algorithm_name,
                                  algorithm_version=group.algorithm_version,
                                  concept=name, value=value, unit=unit))
            _references(_children(item), references)
            continue  # a NUM's children qualify it; they are not evaluations
        # In a group, "Finding" (121071) as CODE is the finding type (TID 1411), not an
        # evaluation; elsewhere (e.g. TID 2000 reports) a Finding is what was found.
        structure = concept in _STRUCTURE and (
            concept != _FINDING or (value_type == "CODE" and group.inside))
        if value_type in ("CODE", "TEXT") and item.get("RelationshipType") in (None, "CONTAINS") \
                and not structure:
            out.append(ResultItem(kind="evaluation", label=group.label,
                                  segment_number=group.segment_number,
                                  property_type=group.property_type,
                                  algorithm_name=group.algorithm_name,
                                  algorithm_version=group.algorithm_version,
                                  concept=_meaning(item), text=_text(item)))
        children = _children(item)
        if children:
            inner = _group_context(item) if concept == _GROUP else group
            _walk(children, inner, out, references)


def _evidence(ds: Dataset) -> Iterator[tuple[str, str]]:
    for keyword in ("CurrentRequestedProcedureEvidenceSequence",
                    "PertinentOtherEvidenceSequence"):
        for study in ds.get(keyword) or []:
            for series in study.get("ReferencedSeriesSequence") or []:
                if series.get("SeriesInstanceUID"):
                    yield "series", str(series.SeriesInstanceUID)
                for sop in series.get("ReferencedSOPSequence") or []:
                    if sop.get("ReferencedSOPInstanceUID"):
                        yield "instance", str(sop.ReferencedSOPInstanceUID)


def _unique(values: Iterator[str] | list[str]) -> list[str]:
    return list(dict.fromkeys(v for v in values if v))


def _task_uid(ds: Dataset) -> str | None:
    items = list(ds.get("ReferencedPerformedProcedureStepSequence") or [])
    for item in items:
        if item.get("ReferencedSOPClassUID") == UPS_PUSH_SOP_CLASS \
                and item.get("ReferencedSOPInstanceUID"):
            return str(item.ReferencedSOPInstanceUID)
    if len(items) == 1 and items[0].get("ReferencedSOPInstanceUID"):
        return str(items[0].ReferencedSOPInstanceUID)
    return None


def describe(ds: Dataset) -> ResultRecord:
    """The result index's record of an SR document (kind ``SR``).

    Raises :class:`SRReadError` when ``ds`` is not an SR document or has no content;
    anything else missing is left empty.
    """
    if not isinstance(ds, Dataset):
        raise SRReadError("not a DICOM dataset")
    modality = ds.get("Modality")
    sop_class = str(ds.get("SOPClassUID", ""))
    if modality != "SR" and not sop_class.startswith("1.2.840.10008.5.1.4.1.1.88."):
        raise SRReadError(f"not an SR document (Modality {modality!r}, SOP Class "
                          f"{sop_class or 'missing'})")
    content = _children(ds)
    if ds.get("ValueType") not in (None, "CONTAINER") or not content:
        raise SRReadError("SR document has no content (no Content Sequence under a "
                          "CONTAINER root)")

    observers = _observers(content)
    if not observers.person_name:
        # TID 1001: without TID 1002 observers, the document's Author Observer Sequence
        # (0040,A078) names the observer.
        for author in ds.get("AuthorObserverSequence") or []:
            if author.get("ObserverType") == "PSN" and author.get("PersonName"):
                observers.person_name = str(author.PersonName)
                break
    if not observers.device_name and ds.get("ManufacturerModelName"):
        observers.device_name = str(ds.ManufacturerModelName)

    items: list[ResultItem] = []
    references: list[tuple[str, str]] = list(_evidence(ds))
    _walk(content, _Group(), items, references)

    verifier = ""
    for observer in ds.get("VerifyingObserverSequence") or []:
        if observer.get("VerifyingObserverName"):
            verifier = str(observer.VerifyingObserverName)
            break
    predecessors = [str(sop.ReferencedSOPInstanceUID)
                    for study in ds.get("PredecessorDocumentsSequence") or []
                    for series in study.get("ReferencedSeriesSequence") or []
                    for sop in series.get("ReferencedSOPSequence") or []
                    if sop.get("ReferencedSOPInstanceUID")]
    return ResultRecord(
        sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
        sop_class_uid=sop_class,
        kind="SR",
        study_uid=str(ds.get("StudyInstanceUID", "")),
        series_uid=str(ds.get("SeriesInstanceUID", "")),
        task_uid=_task_uid(ds),
        content_datetime=f"{ds.get('ContentDate', '')}{ds.get('ContentTime', '')}",
        person_login=observers.login,
        person_name=observers.person_name,
        organization=observers.organization,
        role=observers.role,
        device_name=observers.device_name,
        verification_flag=str(ds.get("VerificationFlag", "")),
        verifying_observer=verifier,
        predecessors=_unique(predecessors),
        referenced_series=_unique(uid for kind, uid in references if kind == "series"),
        referenced_instances=_unique(uid for kind, uid in references if kind == "instance"),
        items=items,
    )
