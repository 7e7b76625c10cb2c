"""DICOM PS3.4 Table CC.2.5-3 "UPS SOP Class N-CREATE/N-SET/N-GET/C-FIND Attributes".

Encodes, per attribute of the Unified Procedure Step IOD, the requirement types used
by the UPS Push/Pull/Watch/Query SOP Classes:

* ``create`` - N-CREATE requirement on the SCU (PS3.4 CC.2.5.1, Table CC.2.5-3),
* ``set``    - N-SET requirement on the SCU (CC.2.6, same table),
* ``final``  - Final State code (CC.2.5.1.1, Table CC.2.5-1): R = required for
  COMPLETED and CANCELED, RC = required if the condition holds, P = required for
  COMPLETED only, X = required for CANCELED only, O = optional,
* ``matching`` / ``returned`` - whether the C-FIND Match Key Type / Return Key Type
  column is something other than "-" (CC.2.8).  N-GET (CC.2.7) follows its own
  column and may return any stored attribute except Transaction UID.

"-" in ``create``/``set`` means "Not Allowed": the SCU shall not send the attribute
(for SOP Class/Instance UID the value travels in the DIMSE command instead).  The
table lists requirement pairs "SCU/SCP" (e.g. "2/1"); only the SCU half is kept here,
SCP obligations (e.g. the SCP fills an empty Worklist Label) are in ``note``.

Macros of the table are encoded once and reused: UPS Code Sequence Macro (Table
CC.2.5-2a), UPS Content Item Macro (CC.2.5-2b), Referenced Instances and Access
Macro (CC.2.5-2c), HL7v2 Hierarchic Designator Macro (CC.2.5-2d) and Issuer of
Patient ID Macro (CC.2.5-2e).

Sources: PS3.4 sect. CC.2.5 / CC.2.5.1.1 (current edition; the section text was
read, but of Table CC.2.5-3 itself only the ">Output Information Sequence" row, seen
verbatim in a copy of the standard's HTML kept as a test fixture by dwikler/dcmspec).
The row values come from two public implementations that encode this table
(Microsoft dicom-server ``WorkitemDatasetValidatorExtension`` /
``WorkitemFinalStateValidatorExtension`` / ``WorkitemQueryResponseBuilder``
"return key type 1 or 2" list, and dcm4chee-arc-light ``create-iod.xml`` /
``set-iod.xml``), checked against /work/shared/reference/ups-standard.md 1.5/1.13.
Rows where those sources are silent or disagree carry a ``# unverified:`` comment.  In
particular the C-FIND Match Key column was not readable anywhere; ``matching`` is
set True wherever the attribute is plausibly a matching key (an SCP that supports
a superset of matching keys stays conformant, one that ignores a required key
does not).

Invariants (enforced by the helper constructors below): a nested row cannot be
sent in an operation in which its enclosing sequence is not allowed, and cannot be
matched/returned if its enclosing sequence is not.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

__all__ = ["Requirement", "UPS_ATTRIBUTES", "BY_KEYWORD", "requirement"]


@dataclass(frozen=True)
class Requirement:
    """One row of PS3.4 Table CC.2.5-3."""

    keyword: str  # pydicom keyword, e.g. "ScheduledProcedureStepPriority"
    create: str  # N-CREATE SCU requirement: "1", "1C", "2", "2C", "3" or "-" (not allowed)
    set: str  # N-SET SCU requirement: "1", "1C", "2", "2C", "3" or "-" (not allowed)
    final: str  # Final State code: "R", "RC", "P", "X", "O"
    matching: bool  # usable as a C-FIND matching key (Match Key Type not "-")
    returned: bool  # returned in C-FIND/N-GET (Return Key Type not "-")
    items: tuple["Requirement", ...] = ()  # rows of the items of an SQ attribute
    note: str = ""  # condition of a 1C/2C/RC, value constraints, SCP duties


def _adjust(rows: tuple[Requirement, ...], **changes) -> tuple[Requirement, ...]:
    """Copy ``rows`` (recursively) with the given fields replaced."""
    return tuple(replace(r, items=_adjust(r.items, **changes), **changes) for r in rows)


def _r(
    keyword: str,
    create: str,
    set_: str,
    final: str = "O",
    *,
    match: bool = True,
    ret: bool = True,
    items: tuple[Requirement, ...] = (),
    note: str = "",
) -> Requirement:
    """Build a row; propagate "not allowed"/"not a key" of a sequence to its items."""
    if create == "-":
        items = _adjust(items, create="-")
    if set_ == "-":
        items = _adjust(items, set="-")
    if not match:
        items = _adjust(items, matching=False)
    if not ret:
        items = _adjust(items, returned=False)
    return Requirement(keyword, create, set_, final, match, ret, items, note)


# --- Table CC.2.5-2a UPS Code Sequence Macro ------------------------------------
# unverified: Match/Return key types of the macro rows (Code Meaning taken as not a
# matching key, as usual for C-FIND code sequence matching).
_CODE_1C = "exactly one of CodeValue, LongCodeValue, URNCodeValue (PS3.3 Table 8.8-1)"
CODE_VALUE = _r("CodeValue", "1C", "1C", note=_CODE_1C)
CODING_SCHEME_DESIGNATOR = _r("CodingSchemeDesignator", "1C", "1C", note="required if CodeValue/LongCodeValue")
CODING_SCHEME_VERSION = _r("CodingSchemeVersion", "1C", "1C", note="required if the designator is ambiguous")
CODE_MEANING = _r("CodeMeaning", "1", "1", match=False)
LONG_CODE_VALUE = _r("LongCodeValue", "1C", "1C", note=_CODE_1C)
URN_CODE_VALUE = _r("URNCodeValue", "1C", "1C", note=_CODE_1C)
CODE_SEQUENCE_MACRO: tuple[Requirement, ...] = (
    CODE_VALUE, CODING_SCHEME_DESIGNATOR, CODING_SCHEME_VERSION, CODE_MEANING, LONG_CODE_VALUE, URN_CODE_VALUE,
)
_CODE = CODE_SEQUENCE_MACRO

# --- Table CC.2.5-2b UPS Content Item Macro (processing/progress parameters) ----
_V = "required if ValueType is "
CONTENT_ITEM_MACRO: tuple[Requirement, ...] = (
    _r("ValueType", "1", "1"),
    _r("ConceptNameCodeSequence", "1", "1", items=_CODE),
    _r("DateTime", "1C", "1C", note=_V + "DATETIME"),
    _r("Date", "1C", "1C", note=_V + "DATE"),
    _r("Time", "1C", "1C", note=_V + "TIME"),
    _r("PersonName", "1C", "1C", note=_V + "PNAME"),
    _r("UID", "1C", "1C", note=_V + "UIDREF"),
    _r("TextValue", "1C", "1C", note=_V + "TEXT"),
    _r("ConceptCodeSequence", "1C", "1C", items=_CODE, note=_V + "CODE"),
    _r("NumericValue", "1C", "1C", note=_V + "NUMERIC"),
    _r("MeasurementUnitsCodeSequence", "1C", "1C", items=_CODE, note=_V + "NUMERIC"),
)

# --- Table CC.2.5-2c Referenced Instances and Access Macro ----------------------
_ACC = "at least one of the retrieval sequences shall be present"
REFERENCED_INSTANCES_AND_ACCESS_MACRO: tuple[Requirement, ...] = (
    _r("TypeOfInstances", "1", "1", note="DICOM, CDA, ..."),
    _r("StudyInstanceUID", "1C", "1C", note="required if TypeOfInstances is DICOM"),
    _r("SeriesInstanceUID", "1C", "1C", note="required if TypeOfInstances is DICOM"),
    _r("ReferencedSOPSequence", "1", "1", items=(
        _r("ReferencedSOPClassUID", "1", "1"),
        _r("ReferencedSOPInstanceUID", "1", "1"),
        _r("HL7InstanceIdentifier", "1C", "1C", note="required if TypeOfInstances is CDA"),
        _r("ReferencedFrameNumber", "1C", "1C", note="required if only some frames are referenced"),
        _r("ReferencedSegmentNumber", "1C", "1C", note="required if only some segments are referenced"),
    )),
    _r("DICOMRetrievalSequence", "1C", "1C", items=(_r("RetrieveAETitle", "1", "1"),), note=_ACC),
    _r("DICOMMediaRetrievalSequence", "1C", "1C", note=_ACC, items=(
        _r("StorageMediaFileSetID", "2", "2"), _r("StorageMediaFileSetUID", "1", "1"))),
    _r("WADORetrievalSequence", "1C", "1C", items=(_r("RetrieveURI", "1", "1"),), note=_ACC),
    _r("XDSRetrievalSequence", "1C", "1C", note=_ACC, items=(
        _r("RepositoryUniqueID", "1", "1"), _r("HomeCommunityID", "3", "3"))),
    _r("WADORSRetrievalSequence", "1C", "1C", items=(_r("RetrieveURL", "1", "1"),), note=_ACC),
)

# --- Table CC.2.5-2d HL7v2 Hierarchic Designator Macro --------------------------
_HL7 = "LocalNamespaceEntityID and/or UniversalEntityID shall be present"
HL7V2_HIERARCHIC_DESIGNATOR_MACRO: tuple[Requirement, ...] = (
    _r("LocalNamespaceEntityID", "1C", "1C", note=_HL7),
    _r("UniversalEntityID", "1C", "1C", note=_HL7),
    _r("UniversalEntityIDType", "1C", "1C", note="required if UniversalEntityID is present"),
)
_HL7V2 = HL7V2_HIERARCHIC_DESIGNATOR_MACRO

# --- Table CC.2.5-2e Issuer of Patient ID Macro (patient identity: no N-SET) ----
ISSUER_OF_PATIENT_ID_MACRO: tuple[Requirement, ...] = (
    _r("IssuerOfPatientID", "2", "-"),
    _r("IssuerOfPatientIDQualifiersSequence", "2", "-", items=(
        _r("UniversalEntityID", "2", "-"),
        _r("UniversalEntityIDType", "1C", "-", note="required if UniversalEntityID has a value"),
        _r("IdentifierTypeCode", "2", "-"),
        _r("AssigningFacilitySequence", "2", "-", items=_HL7V2),
        _r("AssigningJurisdictionCodeSequence", "2", "-", items=_CODE),
        _r("AssigningAgencyOrDepartmentCodeSequence", "2", "-", items=_CODE),
    )),
)

_EMPTY = "N-CREATE: sent empty (no items); the performer fills it in by N-SET"
_STORE = "one of the storage sequences shall be present"
_HUMAN = "final RC: required if a human performer was involved"

# ================================ Table CC.2.5-3 =================================
UPS_ATTRIBUTES: tuple[Requirement, ...] = (
    # Transaction UID is listed in the table (N-CREATE 2/2) but is really the lock of
    # CC.2.1.2; its N-SET use comes from CC.2.6.2.
    _r("TransactionUID", "2", "1C", match=False, ret=False, note=(
        "N-CREATE: present with an EMPTY value; N-SET: required (current lock UID) when the UPS "
        "is IN PROGRESS, absent when SCHEDULED; never returned by N-GET/C-FIND (CC.2.7.3)")),
    # ---- SOP Common Module ----
    # The digest (ups-standard.md 1.13) gives Specific Character Set final "O"; the
    # table-derived Microsoft encoding gives "RC", which is kept here.
    # unverified: final code of Specific Character Set (standard row not readable).
    _r("SpecificCharacterSet", "1C", "1C", "RC", match=False,
       note="required if an extended or replacement character set is used"),
    _r("SOPClassUID", "-", "-", "R", match=False,
       note="DIMSE: conveyed as Affected SOP Class UID; the SCP sets it (UPS Push SOP Class)"),
    # unverified: SOP Instance UID as a matching key (list-of-UID matching assumed).
    _r("SOPInstanceUID", "-", "-", "R", note=(
        "DIMSE: conveyed as Affected SOP Instance UID; UPS-RS Create Workitem may carry it in "
        "the body when it is not in the URI")),
    # ---- Unified Procedure Step Scheduled Procedure Information Module ----
    _r("ScheduledProcedureStepPriority", "1", "3", "R", note="HIGH, MEDIUM or LOW"),
    # unverified: SCU column "Not Allowed" (the SCP maintains it; Microsoft overwrites it).
    _r("ScheduledProcedureStepModificationDateTime", "-", "-", "R",
       note="SCP sets it on creation and on every change of the scheduling information"),
    _r("ProcedureStepLabel", "1", "3"),
    _r("WorklistLabel", "2", "3", note="SCP shall fill in a value if the SCU sends it empty (2/1)"),
    # unverified: match "-" for the processing parameters sequence.
    _r("ScheduledProcessingParametersSequence", "2", "3", match=False, items=CONTENT_ITEM_MACRO),
    _r("ScheduledStationNameCodeSequence", "2", "3", items=_CODE),
    _r("ScheduledStationClassCodeSequence", "2", "3", items=_CODE),
    _r("ScheduledStationGeographicLocationCodeSequence", "2", "3", items=_CODE),
    _r("ScheduledHumanPerformersSequence", "2C", "3", items=(
        _r("HumanPerformerCodeSequence", "1", "1", items=_CODE),
        _r("HumanPerformerName", "1", "1"),
        _r("HumanPerformerOrganization", "1", "1"),
    ), note="required if a human performer is scheduled; a value triggers UPS Assigned (CC.2.4.3)"),
    _r("ScheduledProcedureStepStartDateTime", "1", "3", "R"),
    _r("ExpectedCompletionDateTime", "3", "3"),
    _r("ScheduledProcedureStepExpirationDateTime", "3", "3"),
    _r("ScheduledWorkitemCodeSequence", "2", "3", items=_CODE),
    _r("CommentsOnTheScheduledProcedureStep", "2", "3", match=False),
    _r("InputReadinessState", "1", "3", "R", note="READY, UNAVAILABLE or INCOMPLETE"),
    # unverified: match "-" for Input Information Sequence.
    _r("InputInformationSequence", "2", "3", match=False, items=REFERENCED_INSTANCES_AND_ACCESS_MACRO),
    # unverified: wording of the 1C condition (SCP column is 2).
    _r("StudyInstanceUID", "1C", "3", note="required if the Study Instance UID of the output is known"),
    _r("OutputDestinationSequence", "3", "3", match=False, items=(
        _r("DICOMStorageSequence", "1C", "1C", items=(_r("DestinationAE", "1", "1"),), note=_STORE),
        _r("STOWRSStorageSequence", "1C", "1C", items=(_r("StorageURL", "1", "1"),), note=_STORE),
        _r("XDSStorageSequence", "1C", "1C", note=_STORE, items=(
            _r("RepositoryUniqueID", "1", "1"), _r("HomeCommunityID", "3", "3"))),
    )),
    # ---- Unified Procedure Step Relationship Module (not modifiable by N-SET) ----
    _r("PatientName", "2", "-"),
    # unverified: wording of the 1C condition (SCP column is 2).
    _r("PatientID", "1C", "-", note="required if the UPS relates to a known patient"),
    *ISSUER_OF_PATIENT_ID_MACRO,
    # Microsoft allows N-SET (3/3); dcm4chee set-iod.xml forbids it like the other
    # patient identity rows.
    # unverified: N-SET column; "-" chosen.
    _r("OtherPatientIDsSequence", "2", "-", items=(
        _r("PatientID", "1", "-"), *ISSUER_OF_PATIENT_ID_MACRO, _r("TypeOfPatientID", "3", "-"))),
    _r("PatientBirthDate", "2", "-"),
    _r("PatientSex", "2", "-"),
    _r("AdmissionID", "2", "-"),
    _r("IssuerOfAdmissionIDSequence", "2", "-", items=_HL7V2),
    _r("AdmittingDiagnosesDescription", "2", "-"),
    _r("AdmittingDiagnosesCodeSequence", "2", "-", items=_CODE),
    # unverified: which Referenced Request items are matching keys (identifiers and the
    # requested procedure description/code taken as keys; free text, names, dates not).
    _r("ReferencedRequestSequence", "2", "-", items=(
        _r("StudyInstanceUID", "1", "-"),
        _r("AccessionNumber", "2", "-"),
        _r("IssuerOfAccessionNumberSequence", "2", "-", items=_HL7V2),
        _r("PlacerOrderNumberImagingServiceRequest", "3", "-"),
        _r("OrderPlacerIdentifierSequence", "2", "-", items=_HL7V2),
        _r("FillerOrderNumberImagingServiceRequest", "3", "-"),
        _r("OrderFillerIdentifierSequence", "2", "-", items=_HL7V2),
        _r("RequestedProcedureID", "2", "-"),
        _r("RequestedProcedureDescription", "2", "-"),
        _r("RequestedProcedureCodeSequence", "2", "-", items=_CODE),
        _r("ReasonForTheRequestedProcedure", "3", "-", match=False),
        _r("ReasonForRequestedProcedureCodeSequence", "3", "-", match=False, items=_CODE),
        _r("RequestedProcedureComments", "3", "-", match=False),
        _r("ConfidentialityCode", "3", "-", match=False),
        _r("NamesOfIntendedRecipientsOfResults", "3", "-", match=False),
        _r("ImagingServiceRequestComments", "3", "-", match=False),
        _r("RequestingPhysician", "3", "-", match=False),
        _r("RequestingService", "3", "-", match=False),
        _r("RequestingServiceCodeSequence", "3", "-", match=False, items=_CODE),
        _r("IssueDateOfImagingServiceRequest", "3", "-", match=False),
        _r("IssueTimeOfImagingServiceRequest", "3", "-", match=False),
        _r("ReferringPhysicianName", "3", "-", match=False),
    )),
    # unverified: C-FIND key types (match "-", return "3" assumed).
    _r("ReplacedProcedureStepSequence", "1C", "-", match=False, items=(
        _r("ReferencedSOPClassUID", "1", "-"), _r("ReferencedSOPInstanceUID", "1", "-"),
    ), note="required if this UPS replaces another one (e.g. rescheduling a canceled UPS)"),
    # Patient Medical Module rows of the table (SCP 2; Microsoft: return key type 2).
    # unverified: N-SET column (3 assumed) and matching (taken as keys).
    _r("MedicalAlerts", "3", "3"),
    _r("Allergies", "3", "3"),
    _r("PregnancyStatus", "3", "3"),
    _r("SpecialNeeds", "3", "3"),
    # ---- Unified Procedure Step Progress Information Module ----
    _r("ProcedureStepState", "1", "-", "R",
       note="value must be SCHEDULED in N-CREATE (else C309); changed only via N-ACTION"),
    # unverified: match "-" for the progress sequence (and so for its items).
    _r("ProcedureStepProgressInformationSequence", "2", "3", "X", match=False, note=_EMPTY, items=(
        _r("ProcedureStepProgress", "-", "3", note="percentage complete"),
        _r("ProcedureStepProgressDescription", "-", "3"),
        _r("ProcedureStepProgressParametersSequence", "-", "3", items=(
            *CONTENT_ITEM_MACRO, _r("ContentItemModifierSequence", "3", "3", items=CONTENT_ITEM_MACRO))),
        _r("ProcedureStepCommunicationsURISequence", "-", "3", items=(
            _r("ContactURI", "1", "1"), _r("ContactDisplayName", "3", "3"))),
        _r("ProcedureStepCancellationDateTime", "-", "3", "X"),
        _r("ReasonForCancellation", "-", "3"),
        _r("ProcedureStepDiscontinuationReasonCodeSequence", "-", "3", "X", items=_CODE),
    )),
    # ---- Unified Procedure Step Performed Procedure Information Module ----
    # Read verbatim from the standard: ">Output Information Sequence (0040,4033) |
    # Not Allowed | 2/2 | P | -/2 | - | -" (N-CREATE, N-SET, Final, N-GET, Match, Return).
    # unverified: the other nested rows are given the same C-FIND types (match "-",
    # return "-"); the sequence itself is taken as return key type 3.
    _r("UnifiedProcedureStepPerformedProcedureSequence", "2", "3", "P", match=False, note=_EMPTY,
       items=_adjust((
           # unverified: N-SET types of the Actual Human Performers rows (3, as Microsoft).
           _r("ActualHumanPerformersSequence", "-", "3", "RC", items=(
               _r("HumanPerformerCodeSequence", "-", "3", "RC", items=_CODE, note=_HUMAN),
               _r("HumanPerformerName", "-", "3", "RC", note=_HUMAN),
               _r("HumanPerformerOrganization", "-", "3"),
           ), note=_HUMAN),
           _r("PerformedStationNameCodeSequence", "-", "3", "P", items=_CODE),
           _r("PerformedStationClassCodeSequence", "-", "3", items=_CODE),
           _r("PerformedStationGeographicLocationCodeSequence", "-", "3", items=_CODE),
           _r("PerformedProcedureStepStartDateTime", "-", "3", "P"),
           _r("PerformedProcedureStepDescription", "-", "3"),
           _r("CommentsOnThePerformedProcedureStep", "-", "3"),
           _r("PerformedWorkitemCodeSequence", "-", "3", "P", items=_CODE),
           _r("PerformedProcessingParametersSequence", "-", "3", items=CONTENT_ITEM_MACRO),
           _r("PerformedProcedureStepEndDateTime", "-", "3", "P"),
           _r("OutputInformationSequence", "-", "2", "P", items=REFERENCED_INSTANCES_AND_ACCESS_MACRO,
              note="may have no items if there are no relevant output objects"),
       ), matching=False, returned=False)),
)

BY_KEYWORD: dict[str, Requirement] = {r.keyword: r for r in UPS_ATTRIBUTES}


def requirement(path: tuple[str, ...]) -> Requirement | None:
    """Row for a keyword path, e.g. ("ScheduledHumanPerformersSequence", "HumanPerformerName").

    Returns None if the path is empty or any step of it is not in the table.
    """
    if isinstance(path, str):
        path = (path,)
    rows: tuple[Requirement, ...] = UPS_ATTRIBUTES
    found: Requirement | None = None
    for keyword in path:
        found = next((r for r in rows if r.keyword == keyword), None)
        if found is None:
            return None
        rows = found.items
    return found
