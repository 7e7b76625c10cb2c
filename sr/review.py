"""The reviewer's and adjudicator's report (issue 6, point 3): a new version of a reader's
TID 1500 Measurement Report with a verdict, VERIFIED when accepted.

Split from :mod:`sr.build` (codes, checks and the shared pieces live there): see its
docstring for the codes, and :func:`build_review_report` for the rules.
"""

from __future__ import annotations

import copy

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.valuerep import DT

from worklist.provenance import LOGIN_SCHEME, Provenance

from sr.build import (COMMENT, IMAGING_PROCEDURE, PRIVATE_SCHEME, QUALITATIVE_EVALUATIONS,
                      REVIEW_REPORT_SERIES_NUMBER, REVIEW_VERDICT, VERDICT_CODES,
                      VerdictValues, _REVIEW_ROLES, _coding_schemes, _concept, _equipment,
                      _local, _observation_context, _optional_uid, _positive_int,
                      _provenance, _reference_task, _sr_dataset)

__all__ = ["build_review_report"]


# -- the reviewer's report ----------------------------------------------------------------
def _name(item: Dataset) -> tuple[str, str]:
    seq = item.get("ConceptNameCodeSequence")
    if not seq:
        return ("", "")
    return (str(seq[0].get("CodeValue", "")), str(seq[0].get("CodingSchemeDesignator", "")))


_GROUP_CLASSES = {
    "1411": hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations,
    "1410": hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations,
}
_OBSERVER_CONCEPTS = {("121005", "DCM"), ("121008", "DCM"), ("128774", "DCM"),
                      ("121009", "DCM"), ("121010", "DCM"), ("121011", "DCM"),
                      ("121012", "DCM"), ("121013", "DCM"), ("121014", "DCM"),
                      ("121015", "DCM"), ("121016", "DCM"), ("121017", "DCM"),
                      ("113876", "DCM")}


def _reviewed_parts(report: Dataset) -> tuple[list[Dataset], list[Dataset], list[Dataset]]:
    """The reviewed TID 1500 document's observer context items, procedure codes and
    measurement groups."""
    template = report.get("ContentTemplateSequence")
    if _name(report) != ("126000", "DCM") and not (
            template and str(template[0].get("TemplateIdentifier", "")) == "1500"):
        raise ValueError("reviewed_report is not a TID 1500 Measurement Report")
    observers, procedures, groups = [], [], []
    for item in report.get("ContentSequence") or []:
        relationship = item.get("RelationshipType")
        if relationship == "HAS OBS CONTEXT" and _name(item) in _OBSERVER_CONCEPTS:
            observers.append(item)
        elif relationship == "HAS CONCEPT MOD" and _name(item) == ("121058", "DCM"):
            procedures.append(item)
        elif _name(item) == ("126010", "DCM"):  # Imaging Measurements
            groups.extend(g for g in item.get("ContentSequence") or []
                          if _name(g) == ("125007", "DCM"))
    if not groups:
        raise ValueError("reviewed_report has no measurement group; TID 1500 needs one")
    return observers, procedures, groups


def _copied_group(group: Dataset, observers: list[Dataset]) -> (
        hd.sr.MeasurementsAndQualitativeEvaluations
        | hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
        | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations):
    """A deep copy of a reviewed measurement group.

    PS3.3 C.17.5 (Observation Context Encoding): observation context is inherited down
    the tree unless a subtree states its own.  The copied measurements were made by the
    reader, not by the reviewer who signs this document, so the reader's TID 1002
    observers go into the group (HAS OBS CONTEXT) unless it already names its own."""
    group = copy.deepcopy(group)
    content = list(group.get("ContentSequence") or [])
    has_own = any(item.get("RelationshipType") == "HAS OBS CONTEXT"
                  and _name(item) == ("121005", "DCM") for item in content)
    if observers and not has_own:
        group.ContentSequence = [copy.deepcopy(o) for o in observers] + content
    template = group.get("ContentTemplateSequence")
    tid = str(template[0].get("TemplateIdentifier", "")) if template else ""
    cls = _GROUP_CLASSES.get(tid, hd.sr.MeasurementsAndQualitativeEvaluations)
    return cls.from_sequence([group])


def _evidence_stubs(report: Dataset) -> list[Dataset]:
    """The reviewed report's evidence as minimal datasets for highdicom, the first
    carrying the report's Patient and Study modules (highdicom copies them from it)."""
    stubs = []
    for keyword in ("CurrentRequestedProcedureEvidenceSequence",
                    "PertinentOtherEvidenceSequence"):
        for study in report.get(keyword) or []:
            for series in study.get("ReferencedSeriesSequence") or []:
                for sop in series.get("ReferencedSOPSequence") or []:
                    stub = Dataset()
                    stub.StudyInstanceUID = study.StudyInstanceUID
                    stub.SeriesInstanceUID = series.SeriesInstanceUID
                    stub.SOPClassUID = sop.ReferencedSOPClassUID
                    stub.SOPInstanceUID = sop.ReferencedSOPInstanceUID
                    stubs.append(stub)
    if not stubs:
        raise ValueError("reviewed_report lists no evidence (Current Requested Procedure "
                         "Evidence Sequence); its references cannot be carried over")
    stubs.sort(key=lambda s: s.StudyInstanceUID != report.StudyInstanceUID)
    head = stubs[0]
    if head.StudyInstanceUID != report.StudyInstanceUID:
        raise ValueError("reviewed_report lists no evidence in its own study")
    for keyword in ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate",
                    "PatientSex", "StudyDate", "StudyTime", "StudyID", "AccessionNumber",
                    "ReferringPhysicianName", "StudyDescription"):
        if keyword in report:
            head[keyword] = copy.deepcopy(report[keyword])
        elif keyword not in ("IssuerOfPatientID", "StudyDescription"):
            setattr(head, keyword, "")  # Type 2 in the Patient / General Study modules
    return stubs


def _verdict_container(verdict: VerdictValues, comment: str | None) -> hd.sr.ContainerContentItem:
    """TID 1500 (C0034375, UMLS, "Qualitative Evaluations"): CODE and TEXT items about
    the whole report."""
    container = hd.sr.ContainerContentItem(
        name=QUALITATIVE_EVALUATIONS,
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
    items = [hd.sr.CodeContentItem(name=REVIEW_VERDICT, value=VERDICT_CODES[verdict],
                                   relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)]
    if comment:
        items.append(hd.sr.TextContentItem(
            name=COMMENT, value=comment,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS))
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def build_review_report(
        reviewed_report: Dataset, reviewer_provenance: Provenance,
        verdict: VerdictValues | str, comment: str | None = None, *,
        verify: bool | None = None, series_number: int = REVIEW_REPORT_SERIES_NUMBER,
        instance_number: int = 1, sop_instance_uid: str | None = None,
        series_instance_uid: str | None = None) -> hd.sr.Comprehensive3DSR:
    """TID 1500 Measurement Report that reviews (and supersedes) another one.

    The new document lists the reviewed report in its Predecessor Documents Sequence
    (PS3.3 C.17.2 SR Document General Module: SR instances "whose content has been
    wholly or partially included in this document") and copies its measurement groups,
    so the latest version is complete on its own; each copied group keeps the reader as
    its observer.  The person observer is the reviewer (role Reviewer or Adjudicator,
    CID 7453); the verdict and comment go into the document-level Qualitative
    Evaluations.

    Verification (PS3.3 C.17.2, Verification Flag and Verifying Observer Sequence):
    ``verify`` None means "verify when ACCEPTED".  A verified report is VERIFIED and FINAL
    with one Verifying Observer Sequence item for the reviewer (name, organization, login
    as identification code, review time); the reviewer is never also written as an
    attestor (Participant Sequence ATTEST), which the Standard forbids for one individual.
    """
    reviewed_report = _sr_dataset(reviewed_report, "reviewed_report")
    reviewer_provenance = _provenance(reviewer_provenance, "reviewer_provenance")
    person = reviewer_provenance.person
    if person is None:
        raise ValueError("reviewer_provenance.person: a review is made by a person")
    if person.role not in _REVIEW_ROLES:
        raise ValueError(f"reviewer_provenance.person.role must be Reviewer or Adjudicator, "
                         f"not {person.role.value}")
    try:
        verdict = VerdictValues(verdict)
    except ValueError:
        raise ValueError(f"verdict must be one of "
                         f"{', '.join(v.value for v in VerdictValues)}, not {verdict!r}") from None
    if comment is not None and not isinstance(comment, str):
        raise TypeError("comment must be a str or None")
    if verify is not None and not isinstance(verify, bool):
        raise TypeError("verify must be True, False or None")
    verified = verdict is VerdictValues.ACCEPTED if verify is None else verify
    if verified and not person.organization:
        raise ValueError("reviewer_provenance.person.organization is needed to verify: "
                         "Verifying Organization (0040,A027) is Type 1")
    series_number = _positive_int(series_number, "series_number")
    instance_number = _positive_int(instance_number, "instance_number")
    sop_instance_uid = _optional_uid(sop_instance_uid, "sop_instance_uid")
    series_instance_uid = _optional_uid(series_instance_uid, "series_instance_uid")
    observers, procedures, groups = _reviewed_parts(reviewed_report)
    evidence = _evidence_stubs(reviewed_report)
    created = _local(reviewer_provenance.created)

    procedure_codes = [_concept(p.ConceptCodeSequence[0], "procedure reported")
                       for p in procedures if p.get("ConceptCodeSequence")]
    report = hd.sr.MeasurementReport(
        observation_context=_observation_context(reviewer_provenance),
        procedure_reported=procedure_codes or IMAGING_PROCEDURE,
        imaging_measurements=[_copied_group(g, observers) for g in groups])
    report[0].ContentSequence.append(_verdict_container(verdict, comment))
    schemes = {PRIVATE_SCHEME} | ({LOGIN_SCHEME} if verified else set())
    ds = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report, series_instance_uid=series_instance_uid,
        series_number=series_number, sop_instance_uid=sop_instance_uid,
        instance_number=instance_number, series_description="Review report",
        is_complete=True, is_final=verified, is_verified=verified,
        verifying_observer_name=person.name if verified else None,
        verifying_organization=person.organization if verified else None,
        previous_versions=[reviewed_report],
        coding_schemes=_coding_schemes(schemes),
        **_equipment(reviewer_provenance, created))
    if verified:
        observer = ds.VerifyingObserverSequence[0]
        # Verification DateTime = when the reviewer decided, not when this was encoded.
        observer.VerificationDateTime = DT(reviewer_provenance.created)
        code = Dataset()
        code.CodeValue, code.CodingSchemeDesignator = person.login, LOGIN_SCHEME
        code.CodeMeaning = str(person.name)[:64]
        observer.VerifyingObserverIdentificationCodeSequence = [code]
    _reference_task(ds, reviewer_provenance.task_uid)
    return ds
