"""Tests for worklist.ups_table (PS3.4 Table CC.2.5-3)."""

from __future__ import annotations

from pydicom.datadict import dictionary_VR, tag_for_keyword

from worklist import ups_table
from worklist.ups_table import BY_KEYWORD, UPS_ATTRIBUTES, Requirement, requirement

TYPES = {"1", "1C", "2", "2C", "3", "-"}
FINAL_CODES = {"R", "RC", "P", "X", "O"}


def walk(rows=UPS_ATTRIBUTES, parents=()):
    """Yield (path, row) for every row, depth first."""
    for row in rows:
        path = (*parents, row.keyword)
        yield path, row
        yield from walk(row.items, path)


def parent_of(path):
    return requirement(path[:-1]) if len(path) > 1 else None


def test_public_api():
    assert ups_table.__all__ == ["Requirement", "UPS_ATTRIBUTES", "BY_KEYWORD", "requirement"]
    assert isinstance(UPS_ATTRIBUTES, tuple) and UPS_ATTRIBUTES
    assert all(isinstance(r, Requirement) for _, r in walk())


def test_every_keyword_is_in_pydicom_dictionary():
    missing = [path for path, r in walk() if tag_for_keyword(r.keyword) is None]
    assert missing == []


def test_sequences_and_only_sequences_have_items():
    for path, r in walk():
        is_sq = dictionary_VR(tag_for_keyword(r.keyword)) == "SQ"
        assert bool(r.items) == is_sq, path


def test_codes_are_from_allowed_sets():
    for path, r in walk():
        assert r.create in TYPES, path
        assert r.set in TYPES, path
        assert r.final in FINAL_CODES, path
        assert isinstance(r.matching, bool) and isinstance(r.returned, bool), path
        assert isinstance(r.note, str), path


def test_conditional_types_carry_a_note():
    for path, r in walk():
        if r.create in ("1C", "2C") or r.set in ("1C", "2C") or r.final == "RC":
            # macro rows share a note; every conditional needs one
            assert r.note, path


def test_keywords_unique_within_each_item_level():
    for path, r in [((), None), *walk()]:
        rows = UPS_ATTRIBUTES if r is None else r.items
        names = [x.keyword for x in rows]
        assert len(names) == len(set(names)), path


def test_by_keyword_matches_top_level():
    assert list(BY_KEYWORD) == [r.keyword for r in UPS_ATTRIBUTES]
    assert all(BY_KEYWORD[r.keyword] is r for r in UPS_ATTRIBUTES)


def test_nested_rows_respect_their_sequence():
    for path, r in walk():
        parent = parent_of(path)
        if parent is None:
            continue
        if parent.create == "-":
            assert r.create == "-", path
        if parent.set == "-":
            assert r.set == "-", path
        if not parent.matching:
            assert not r.matching, path
        if not parent.returned:
            assert not r.returned, path


def test_spot_values_from_the_standard():
    state = BY_KEYWORD["ProcedureStepState"]
    assert (state.create, state.set, state.final) == ("1", "-", "R")
    assert "SCHEDULED" in state.note

    tx = BY_KEYWORD["TransactionUID"]
    assert tx.create == "2" and "empty" in tx.note.lower()
    assert not tx.returned and not tx.matching

    assert BY_KEYWORD["PatientName"].set == "-"
    assert BY_KEYWORD["PatientName"].create == "2"
    assert BY_KEYWORD["ScheduledProcedureStepPriority"].create == "1"
    assert BY_KEYWORD["ScheduledProcedureStepPriority"].final == "R"
    assert BY_KEYWORD["WorklistLabel"].create == "2"
    assert BY_KEYWORD["ProcedureStepLabel"].create == "1"
    assert BY_KEYWORD["InputReadinessState"].create == "1"
    assert BY_KEYWORD["ScheduledProcedureStepStartDateTime"].final == "R"
    assert BY_KEYWORD["UnifiedProcedureStepPerformedProcedureSequence"].final == "P"
    assert BY_KEYWORD["ProcedureStepProgressInformationSequence"].final == "X"
    assert BY_KEYWORD["SOPInstanceUID"].create == "-"
    assert BY_KEYWORD["ReplacedProcedureStepSequence"].create == "1C"
    for kw in ("PatientID", "PatientBirthDate", "PatientSex", "AdmissionID",
               "ReferencedRequestSequence", "ReplacedProcedureStepSequence", "SOPClassUID"):
        assert BY_KEYWORD[kw].set == "-", kw

    cancel = requirement(("ProcedureStepProgressInformationSequence", "ProcedureStepCancellationDateTime"))
    assert cancel is not None and cancel.final == "X" and cancel.create == "-"
    reason = requirement(
        ("ProcedureStepProgressInformationSequence", "ProcedureStepDiscontinuationReasonCodeSequence")
    )
    assert reason is not None and reason.final == "X"

    # The one row read verbatim: ">Output Information Sequence | Not Allowed | 2/2 | P | -/2 | - | -"
    out = requirement(("UnifiedProcedureStepPerformedProcedureSequence", "OutputInformationSequence"))
    assert out is not None
    assert (out.create, out.set, out.final, out.matching, out.returned) == ("-", "2", "P", False, False)


def test_modules_are_covered():
    expected = {
        "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID",
        "ScheduledProcedureStepPriority", "ScheduledProcedureStepModificationDateTime", "ProcedureStepLabel",
        "WorklistLabel", "ScheduledProcessingParametersSequence", "ScheduledStationNameCodeSequence",
        "ScheduledStationClassCodeSequence", "ScheduledStationGeographicLocationCodeSequence",
        "ScheduledHumanPerformersSequence", "ScheduledProcedureStepStartDateTime", "ExpectedCompletionDateTime",
        "ScheduledProcedureStepExpirationDateTime", "ScheduledWorkitemCodeSequence",
        "CommentsOnTheScheduledProcedureStep", "InputReadinessState", "InputInformationSequence",
        "StudyInstanceUID", "OutputDestinationSequence",
        "PatientName", "PatientID", "IssuerOfPatientID", "OtherPatientIDsSequence", "PatientBirthDate",
        "PatientSex", "AdmissionID", "IssuerOfAdmissionIDSequence", "AdmittingDiagnosesDescription",
        "AdmittingDiagnosesCodeSequence", "ReferencedRequestSequence", "ReplacedProcedureStepSequence",
        "ProcedureStepState", "ProcedureStepProgressInformationSequence",
        "UnifiedProcedureStepPerformedProcedureSequence", "TransactionUID",
    }
    assert expected <= set(BY_KEYWORD)


def test_requirement_nested_paths():
    hpc = requirement(("ScheduledHumanPerformersSequence", "HumanPerformerCodeSequence"))
    assert hpc is not None and hpc.keyword == "HumanPerformerCodeSequence" and hpc.items
    meaning = requirement(("ScheduledHumanPerformersSequence", "HumanPerformerCodeSequence", "CodeMeaning"))
    assert meaning is not None and meaning.create == "1"

    assert requirement(("InputInformationSequence", "DICOMRetrievalSequence", "RetrieveAETitle")) is not None
    assert requirement(("InputInformationSequence", "WADORSRetrievalSequence", "RetrieveURL")) is not None
    assert requirement(("OutputDestinationSequence", "DICOMStorageSequence", "DestinationAE")) is not None
    assert requirement(("OutputDestinationSequence", "STOWRSStorageSequence", "StorageURL")) is not None
    assert requirement(("ReferencedRequestSequence", "AccessionNumber")) is not None
    assert requirement(("ScheduledProcessingParametersSequence", "ConceptNameCodeSequence", "CodeValue"))
    contact = requirement(
        ("ProcedureStepProgressInformationSequence", "ProcedureStepCommunicationsURISequence", "ContactURI")
    )
    assert contact is not None and contact.create == "-"
    actual = requirement(("UnifiedProcedureStepPerformedProcedureSequence", "ActualHumanPerformersSequence"))
    assert actual is not None and actual.final == "RC" and actual.create == "-"

    # top-level path and misses
    assert requirement(("PatientName",)) is BY_KEYWORD["PatientName"]
    assert requirement(()) is None
    assert requirement(("NoSuchKeyword",)) is None
    assert requirement(("PatientName", "CodeValue")) is None
    assert requirement(("ScheduledHumanPerformersSequence", "AccessionNumber")) is None


def test_rows_are_immutable():
    row = BY_KEYWORD["PatientName"]
    try:
        row.create = "1"  # type: ignore[misc]
    except AttributeError:
        pass
    else:  # pragma: no cover
        raise AssertionError("Requirement must be frozen")
