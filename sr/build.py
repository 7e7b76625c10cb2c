"""TID 1500 Measurement Reports of a reader's segmentation, and the reviewer's verdict on one
(issue 6, point 3).

Two builders, named after the template they write:

* :func:`build_measurement_report` — the reader's (or an algorithm's) report: one TID 1411
  volumetric group per segment of a SEG, with its volume and intensity statistics.
* :func:`build_review_report` — the reviewer's or adjudicator's report: a new version of a
  reader's report (Predecessor Documents), its measurement groups copied, a coded verdict
  and a comment added, VERIFIED with a Verifying Observer when the verdict is ACCEPTED.

Both return a ``highdicom.sr.Comprehensive3DSR`` (PS3.3 A.35.13) that passes ``dciodvfy``;
both are strict on write (TypeError / ValueError naming the argument).  Provenance homes
(annotation-model.md §3.2): who = TID 1002/1003 person observer; with what = TID 1004 device
observer (+ TID 4019 algorithm in each group); for which task = Referenced Performed
Procedure Step Sequence (0008,1111) naming the UPS; when = Content Date/Time.

Codes chosen (each a standard code unless marked private):

* procedure reported (TID 1500 row 4, CID 100): CT → (25045-6, LN, "CT unspecified body
  region"), MR → (25056-3, LN, "MRI unspecified body region"), otherwise (363679005, SCT,
  "Imaging procedure"): the most specific CID 100 code we can claim without knowing the
  protocol.
* volume: (118565006, SCT, "Volume") in (mm3, UCUM) — CID 7469.
* intensity: CT → (112031, DCM, "Attenuation Coefficient") in ([hnsf'U], UCUM); MR →
  (110852, DCM, "MR signal intensity") in ([arb'U], UCUM) — CID 7469 / CID 7181 — each
  with a TID 300 Derivation (121401, DCM) from CID 7464: (373098007, SCT, "Mean"),
  (386136009, SCT, "Standard Deviation"), (255605001, SCT, "Minimum"), (56851009, SCT,
  "Maximum").  This is the dcmqi/QIICR encoding; readers join derivation + name ("Mean
  Attenuation Coefficient").
* finding (TID 1411 "Finding", 121071 DCM) = the segment's Segmented Property Type, and
  "Finding category" = its category; finding site (363698007, SCT) = the label's region.
* presence: (121052, DCM, "Presence of property") = (52101004, SCT, "Present") from
  CID 240.  Not (121071 "Finding") = Present: 121071 already carries the finding type in
  TID 1411, and highdicom's readers skip it as an evaluation.
* review verdict: the Standard has no code for a reviewer's verdict on a report (the
  rejection codes of CID 7010/7031, e.g. (113001, DCM, "Rejected for Quality Reasons"),
  title Key Object Selection documents that withdraw instances), so a private one:
  (VERDICT, 99WORKLIST, "Review verdict") = (ACCEPTED | REJECTED | NEEDSREVISION,
  99WORKLIST, …), declared in the Coding Scheme Identification Sequence (0008,0110); the
  comment is TEXT (121106, DCM, "Comment").  Both sit in TID 1500's document-level
  (C0034375, UMLS, "Qualitative Evaluations") container: the verdict is on the report, not
  on one finding.
"""

from __future__ import annotations

import datetime as _dt
import enum
from collections.abc import Mapping, Sequence
from typing import Any

import highdicom as hd
from highdicom.coding_schemes import CodingSchemeIdentificationItem
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code as SRCode
from pydicom.uid import generate_uid

from sr.measure import SegmentStats
from worklist import labelsets
from worklist.labelsets import LabelSet
from worklist.provenance import ROLE_CODES, LOGIN_SCHEME, UPS_PUSH_SOP_CLASS, Provenance, \
    RoleValues

__all__ = ["build_measurement_report", "VerdictValues",
           "VERDICT_CODES", "REVIEW_VERDICT", "PRESENCE", "QUALITATIVE_EVALUATIONS",
           "PRIVATE_SCHEME", "MEASUREMENT_REPORT_SERIES_NUMBER", "REVIEW_REPORT_SERIES_NUMBER"]

PRIVATE_SCHEME = labelsets.SCHEME  # "99WORKLIST" (PS3.16 8.2: "99" = private scheme)
MEASUREMENT_REPORT_SERIES_NUMBER = 701
REVIEW_REPORT_SERIES_NUMBER = 702

SEG_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.66.4",   # Segmentation Storage
                   "1.2.840.10008.5.1.4.1.1.66.7"}   # Label Map Segmentation Storage
SR_SOP_CLASSES = {"1.2.840.10008.5.1.4.1.1.88.11", "1.2.840.10008.5.1.4.1.1.88.22",
                  "1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.34",
                  "1.2.840.10008.5.1.4.1.1.88.35"}

VOLUME = CodedConcept("118565006", "SCT", "Volume")
CUBIC_MILLIMETER = CodedConcept("mm3", "UCUM", "cubic millimeter")
DERIVATIONS = (("mean", CodedConcept("373098007", "SCT", "Mean")),
               ("std", CodedConcept("386136009", "SCT", "Standard Deviation")),
               ("minimum", CodedConcept("255605001", "SCT", "Minimum")),
               ("maximum", CodedConcept("56851009", "SCT", "Maximum")))
INTENSITY_BY_MODALITY = {
    "CT": (CodedConcept("112031", "DCM", "Attenuation Coefficient"),
           CodedConcept("[hnsf'U]", "UCUM", "Hounsfield unit")),
    "MR": (CodedConcept("110852", "DCM", "MR signal intensity"),
           CodedConcept("[arb'U]", "UCUM", "arbitrary unit")),
}
PROCEDURE_BY_MODALITY = {
    "CT": CodedConcept("25045-6", "LN", "CT unspecified body region"),
    "MR": CodedConcept("25056-3", "LN", "MRI unspecified body region"),
}
IMAGING_PROCEDURE = CodedConcept("363679005", "SCT", "Imaging procedure")
PRESENCE = CodedConcept("121052", "DCM", "Presence of property")
PRESENT = CodedConcept("52101004", "SCT", "Present")
QUALITATIVE_EVALUATIONS = CodedConcept("C0034375", "UMLS", "Qualitative Evaluations")
REVIEW_VERDICT = CodedConcept("VERDICT", PRIVATE_SCHEME, "Review verdict")
COMMENT = CodedConcept("121106", "DCM", "Comment")


class VerdictValues(str, enum.Enum):
    """A reviewer's verdict on a report (private codes, see the module docstring)."""

    ACCEPTED = "ACCEPTED"
    REJECTED = "REJECTED"
    NEEDS_REVISION = "NEEDS REVISION"


VERDICT_CODES: dict[VerdictValues, CodedConcept] = {
    VerdictValues.ACCEPTED: CodedConcept("ACCEPTED", PRIVATE_SCHEME, "Accepted"),
    VerdictValues.REJECTED: CodedConcept("REJECTED", PRIVATE_SCHEME, "Rejected"),
    VerdictValues.NEEDS_REVISION: CodedConcept("NEEDSREVISION", PRIVATE_SCHEME,
                                               "Needs revision"),
}

_REVIEW_ROLES = (RoleValues.REVIEWER, RoleValues.ADJUDICATOR)


# -- argument checks ----------------------------------------------------------------------
def _concept(value: Any, what: str) -> CodedConcept:
    """A coded concept from any of the code types in use here."""
    if isinstance(value, CodedConcept):
        return value
    if isinstance(value, SRCode):
        return CodedConcept.from_code(value)
    if isinstance(value, labelsets.Code):
        return CodedConcept(value.value, value.scheme, value.meaning)
    if isinstance(value, Dataset):
        return CodedConcept.from_dataset(value)
    if isinstance(value, tuple) and len(value) == 3 and all(isinstance(v, str) for v in value):
        return CodedConcept(value[0], value[1], value[2])
    raise TypeError(f"{what} must be a code (pydicom Code, highdicom CodedConcept, "
                    f"worklist Code or a (value, scheme, meaning) tuple), not {value!r}")


def _positive_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int")
    if value < 1:
        raise ValueError(f"{what} must be at least 1")
    return value


def _optional_uid(value: Any, what: str) -> str:
    if value is None:
        return generate_uid()
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a UID string")
    if not value or len(value) > 64 or not all(p.isdigit() for p in value.split(".")):
        raise ValueError(f"{what}: {value!r} is not a valid UID")
    return value


def _provenance(value: Any, what: str) -> Provenance:
    if not isinstance(value, Provenance):
        raise TypeError(f"{what} must be a worklist.provenance.Provenance")
    if not value.task_uid:
        raise ValueError(f"{what}.task_uid must name the UPS workitem")
    _optional_uid(value.task_uid, f"{what}.task_uid")
    return value


def _sr_dataset(value: Any, what: str) -> Dataset:
    if not isinstance(value, Dataset):
        raise TypeError(f"{what} must be a pydicom Dataset")
    if value.get("SOPClassUID") not in SR_SOP_CLASSES:
        raise ValueError(f"{what} is not an SR document (SOP Class "
                         f"{value.get('SOPClassUID', 'missing')})")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if not value.get(keyword):
            raise ValueError(f"{what} has no {keyword}")
    return value


# -- shared pieces ------------------------------------------------------------------------
def _local(moment: _dt.datetime) -> _dt.datetime:
    """Content Date/Time are local time without offset, like highdicom's Instance
    Creation Date/Time: an aware datetime is converted to this machine's zone."""
    if not isinstance(moment, _dt.datetime):
        raise TypeError("provenance.created must be a datetime")
    return moment.astimezone().replace(tzinfo=None) if moment.tzinfo else moment


def _observation_context(provenance: Provenance) -> hd.sr.ObservationContext:
    """TID 1001 Observation Context with TID 1002 observers: the person (TID 1003) when
    there is one, and always the tool as a device (TID 1004)."""
    person_context = None
    if provenance.person is not None:
        person = provenance.person
        person_context = hd.sr.ObserverContext(
            observer_type=codes.DCM.Person,
            observer_identifying_attributes=hd.sr.PersonObserverIdentifyingAttributes(
                name=person.name,
                login_name=person.login,
                organization_name=person.organization or None,
                # CID 7453 Performing Roles: Reader / Reviewer / Adjudicator (NCIt)
                role_in_procedure=ROLE_CODES[person.role]))
    tool = provenance.tool
    device_context = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=tool.device_uid, name=tool.model_name, manufacturer_name=tool.manufacturer,
            model_name=tool.model_name, serial_number=tool.serial_number or None))
    return hd.sr.ObservationContext(observer_person_context=person_context,
                                    observer_device_context=device_context)


def _algorithm_id(provenance: Provenance) -> hd.sr.AlgorithmIdentification | None:
    """TID 4019 Algorithm Identification of the algorithm behind the segments."""
    algorithm = provenance.algorithm
    if algorithm is None:
        return None
    return hd.sr.AlgorithmIdentification(
        name=algorithm.name, version=algorithm.version,
        family=CodedConcept(*algorithm.family))


def _coding_schemes(schemes: set[str]) -> list[CodingSchemeIdentificationItem]:
    """PS3.3 C.12.1 SOP Common: the private and local coding schemes used are declared in
    the Coding Scheme Identification Sequence (0008,0110)."""
    items = []
    if PRIVATE_SCHEME in schemes:
        items.append(CodingSchemeIdentificationItem(
            PRIVATE_SCHEME, name="worklist private codes",
            responsible_organization="worklist project"))
    if LOGIN_SCHEME in schemes:
        items.append(CodingSchemeIdentificationItem(
            LOGIN_SCHEME, name="worklist login names",
            responsible_organization="worklist project"))
    return items


def _equipment(provenance: Provenance, created: _dt.datetime) -> dict[str, Any]:
    """General Equipment (PS3.3 C.7.5.1) = the tool; Content Date/Time (SR Document
    General, C.17.2) = when the observations were made."""
    tool = provenance.tool
    out: dict[str, Any] = {
        "manufacturer": tool.manufacturer,
        "manufacturer_model_name": tool.model_name,
        "software_versions": tool.software_version,
        "device_serial_number": tool.serial_number or None,
        "content_date": created.date(),
        "content_time": created.time(),
        # UTF-8 for every text: a reader's name need not be ASCII.
        "specific_character_set": "ISO_IR 192",
    }
    if provenance.person is not None and provenance.person.organization:
        out["institution_name"] = provenance.person.organization
    return out


def _reference_task(ds: Dataset, task_uid: str) -> None:
    """PS3.3 C.17.1 SR Document Series: Referenced Performed Procedure Step Sequence
    (0008,1111), Type 2, one item: the step during which the document was made — here
    the UPS workitem (UPS Push SOP Class).  highdicom leaves the sequence empty."""
    item = Dataset()
    item.ReferencedSOPClassUID = UPS_PUSH_SOP_CLASS
    item.ReferencedSOPInstanceUID = task_uid
    ds.ReferencedPerformedProcedureStepSequence = [item]


# -- the reader's report ------------------------------------------------------------------
def _segments(segmentation: Any) -> list[Dataset]:
    if not isinstance(segmentation, Dataset):
        raise TypeError("segmentation must be a pydicom Dataset (e.g. a "
                        "highdicom.seg.Segmentation)")
    if segmentation.get("SOPClassUID") not in SEG_SOP_CLASSES:
        raise ValueError("segmentation is not a Segmentation (SOP Class "
                         f"{segmentation.get('SOPClassUID', 'missing')})")
    segments = list(segmentation.get("SegmentSequence") or [])
    if not segments:
        raise ValueError("segmentation has no segments; TID 1500 needs at least one "
                         "measurement group")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        if not segmentation.get(keyword):
            raise ValueError(f"segmentation has no {keyword}")
    return segments


def _source_series(source_images: Any, segmentation: Dataset) -> str:
    if isinstance(source_images, Dataset) or not isinstance(source_images, Sequence):
        raise TypeError("source_images must be a sequence of pydicom Datasets")
    if not source_images:
        raise ValueError("source_images: no images")
    series = set()
    for i, ds in enumerate(source_images):
        if not isinstance(ds, Dataset):
            raise TypeError(f"source_images[{i}] is not a pydicom Dataset")
        series.add(ds.get("SeriesInstanceUID"))
    if len(series) != 1 or None in series:
        raise ValueError("source_images must be one series (one SeriesInstanceUID)")
    uid = series.pop()
    referenced = {item.get("SeriesInstanceUID")
                  for item in segmentation.get("ReferencedSeriesSequence") or []}
    if referenced and uid not in referenced:
        raise ValueError(f"source_images: series {uid} is not a source series of the "
                         "segmentation (its Referenced Series Sequence)")
    return str(uid)


def _intensity(modality: str, intensity: Any) -> tuple[CodedConcept, CodedConcept]:
    if intensity is not None:
        if not isinstance(intensity, tuple) or len(intensity) != 2:
            raise TypeError("intensity must be a (concept, unit) pair of codes")
        return (_concept(intensity[0], "intensity concept"),
                _concept(intensity[1], "intensity unit"))
    if modality not in INTENSITY_BY_MODALITY:
        raise ValueError(f"intensity: no default quantity for modality {modality!r}; pass "
                         "intensity=(concept, unit), e.g. a CID 7469 concept and a UCUM unit")
    return INTENSITY_BY_MODALITY[modality]


def _measurements(st: SegmentStats, concept: CodedConcept,
                  unit: CodedConcept) -> list[hd.sr.Measurement]:
    """TID 1411 rows "Measurement" (TID 300): the volume, then the intensity statistics
    as one concept with a CID 7464 derivation each."""
    out = [hd.sr.Measurement(name=VOLUME, value=float(st.volume_mm3), unit=CUBIC_MILLIMETER)]
    if st.voxel_count == 0:
        return out
    for attribute, derivation in DERIVATIONS:
        value = getattr(st, attribute)
        if value is None:
            continue
        out.append(hd.sr.Measurement(name=concept, value=float(value), unit=unit,
                                     derivation=derivation))
    return out


def _findings(findings: Any, labels: set[str]) -> dict[str, list[hd.sr.QualitativeEvaluation]]:
    if findings is None:
        return {}
    if not isinstance(findings, Mapping):
        raise TypeError("findings must map a segment label to (concept, value) code pairs")
    out: dict[str, list[hd.sr.QualitativeEvaluation]] = {}
    for label, pairs in findings.items():
        if label not in labels:
            raise ValueError(f"findings: {label!r} is not a segment label of the "
                             f"segmentation ({', '.join(sorted(labels))})")
        if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
            raise TypeError(f"findings[{label!r}] must be a sequence of (concept, value) pairs")
        out[label] = []
        for pair in pairs:
            if not isinstance(pair, tuple) or len(pair) != 2:
                raise TypeError(f"findings[{label!r}]: {pair!r} is not a (concept, value) pair")
            out[label].append(hd.sr.QualitativeEvaluation(
                _concept(pair[0], f"findings[{label!r}] concept"),
                _concept(pair[1], f"findings[{label!r}] value")))
    return out


def build_measurement_report(
        segmentation: Dataset, source_images: Sequence[Dataset],
        stats: Mapping[int, SegmentStats], provenance: Provenance,
        label_set: LabelSet | None = None, *,
        findings: Mapping[str, Sequence[tuple[Any, Any]]] | None = None,
        intensity: tuple[Any, Any] | None = None,
        series_number: int = MEASUREMENT_REPORT_SERIES_NUMBER, instance_number: int = 1,
        sop_instance_uid: str | None = None, series_instance_uid: str | None = None,
        predecessor: Dataset | None = None) -> hd.sr.Comprehensive3DSR:
    """TID 1500 Measurement Report of a segmentation: one TID 1411 group per segment.

    ``stats`` comes from :func:`sr.measure.measure_segments`.  With a ``label_set`` its
    keys are label values and each segment is matched to its label by Segment Label (the
    label name); without one, its keys are the SEG's segment numbers.  ``findings`` maps a
    segment label to extra (concept, value) CODE evaluations for that group.
    ``intensity`` = (concept, unit) overrides the modality's default quantity.
    ``predecessor`` is the report this one replaces (Predecessor Documents Sequence).

    The report is COMPLETE, UNVERIFIED and PRELIMINARY: a reader's report awaits review.
    """
    segments = _segments(segmentation)
    series_uid = _source_series(source_images, segmentation)
    provenance = _provenance(provenance, "provenance")
    if not isinstance(stats, Mapping):
        raise TypeError("stats must map label values (or segment numbers) to SegmentStats")
    if label_set is not None and not isinstance(label_set, LabelSet):
        raise TypeError("label_set must be a worklist.labelsets.LabelSet")
    series_number = _positive_int(series_number, "series_number")
    instance_number = _positive_int(instance_number, "instance_number")
    sop_instance_uid = _optional_uid(sop_instance_uid, "sop_instance_uid")
    series_instance_uid = _optional_uid(series_instance_uid, "series_instance_uid")
    if predecessor is not None:
        _sr_dataset(predecessor, "predecessor")
    modality = str(source_images[0].get("Modality", ""))
    concept, unit = _intensity(modality, intensity)
    labels = {str(s.get("SegmentLabel", "")) for s in segments}
    extra = _findings(findings, labels)
    algorithm_id = _algorithm_id(provenance)
    created = _local(provenance.created)

    groups = []
    for segment in segments:
        number = int(segment.SegmentNumber)
        name = str(segment.get("SegmentLabel", "")) or f"Segment {number}"
        region = None
        if label_set is not None:
            try:
                label = label_set.by_name(name)
            except KeyError:
                raise ValueError(f"label_set: segment {number} ({name!r}) is not a label "
                                 f"of label set {label_set.name!r}") from None
            key, region = label.value, label.region
        else:
            key = number
            anatomic = segment.get("AnatomicRegionSequence")
            region = anatomic[0] if anatomic else None
        if key not in stats:
            raise ValueError(f"stats: no figures for segment {number} ({name!r}, key {key})")
        st = stats[key]
        if not isinstance(st, SegmentStats):
            raise TypeError(f"stats[{key}] must be a SegmentStats")
        type_seq = segment.get("SegmentedPropertyTypeCodeSequence")
        category_seq = segment.get("SegmentedPropertyCategoryCodeSequence")
        evaluations = [hd.sr.QualitativeEvaluation(PRESENCE, PRESENT)] + extra.get(name, [])
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            # TID 4108 Tracking Identifier: the label name, and the SEG's Tracking UID so
            # the group and the segment are the same tracked finding.
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=str(segment.get("TrackingUID") or generate_uid()), identifier=name),
            # TID 1411 "Referenced Segment" (121191) + "Source series for segmentation"
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=segmentation.SOPClassUID,
                sop_instance_uid=segmentation.SOPInstanceUID, segment_number=number,
                source_series=hd.sr.SourceSeriesForSegmentation(series_uid)),
            finding_type=_concept(type_seq[0], "segment type") if type_seq else None,
            finding_category=(_concept(category_seq[0], "segment category")
                              if category_seq else None),
            finding_sites=([hd.sr.FindingSite(_concept(region, "label region"))]
                           if region is not None else None),
            session=provenance.session,  # (C67447, NCIt, "Activity Session")
            algorithm_id=algorithm_id,
            measurements=_measurements(st, concept, unit),
            qualitative_evaluations=evaluations))

    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(provenance),
        procedure_reported=PROCEDURE_BY_MODALITY.get(modality, IMAGING_PROCEDURE),
        imaging_measurements=groups)
    schemes = {c.scheme_designator for group in extra.values() for e in group
               for c in (e.name, e.value)}
    ds = hd.sr.Comprehensive3DSR(
        # the CT first: highdicom copies Patient/Study from evidence[0] and records its
        # acquisition equipment as Contributing Equipment
        evidence=[*source_images, segmentation],
        content=report, series_instance_uid=series_instance_uid,
        series_number=series_number, sop_instance_uid=sop_instance_uid,
        instance_number=instance_number, series_description="Measurement report",
        is_complete=True, is_final=False, is_verified=False,
        previous_versions=[predecessor] if predecessor is not None else None,
        coding_schemes=_coding_schemes(schemes) or None,
        **_equipment(provenance, created))
    _reference_task(ds, provenance.task_uid)
    return ds

