"""Output verification at completion (issue 5, point 5) with the in-memory image store,
and the routing rules' parsing and matching (no Orthanc: see tests/integration for it)."""

from __future__ import annotations


import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from worklist import errors
from worklist.orthanc import FakeImageStore, output_references
from worklist.routing import RoutingError, parse_rules
from worklist.sample import final_state_attributes, sample_workitem
from worklist.service import Actor, WorklistService
from worklist.status import Status

ACTOR = Actor.internal("test")


def _in_progress_with_outputs(service: WorklistService, outputs: list[str]) -> tuple[str, str]:
    uid, tx = generate_uid(), generate_uid()
    service.create(sample_workitem(), uid, ACTOR)
    service.change_state(uid, "IN PROGRESS", tx, ACTOR)
    performed = final_state_attributes()
    item = Dataset()
    item.TypeOfInstances = "DICOM"
    item.StudyInstanceUID, item.SeriesInstanceUID = generate_uid(), generate_uid()
    refs = []
    for sop in outputs:
        ref = Dataset()
        # CT Image Storage: only checked for existence (SEG/SR outputs are also read and
        # checked, issue 6: tests/unit/test_results.py)
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = "1.2.840.10008.5.1.4.1.1.2", sop
        refs.append(ref)
    item.ReferencedSOPSequence = refs
    performed.UnifiedProcedureStepPerformedProcedureSequence[0].OutputInformationSequence = \
        [item] if outputs else []
    service.update(uid, performed, tx, ACTOR)
    return uid, tx


def test_completion_names_every_missing_output(service: WorklistService,
                                               images: FakeImageStore) -> None:
    present, missing1, missing2 = generate_uid(), generate_uid(), generate_uid()
    images.uids.add(present)
    uid, tx = _in_progress_with_outputs(service, [present, missing1, missing2])
    with pytest.raises(errors.FinalStateRequirementsNotMet) as exc:
        service.change_state(uid, "COMPLETED", tx, ACTOR)
    assert exc.value.status is Status.FINAL_STATE_REQUIREMENTS_NOT_MET
    assert exc.value.http_status == 400
    assert missing1 in exc.value.message and missing2 in exc.value.message
    assert present not in exc.value.message
    assert service.state_of(uid) == "IN PROGRESS"
    images.uids |= {missing1, missing2}
    service.change_state(uid, "COMPLETED", tx, ACTOR)
    assert service.state_of(uid) == "COMPLETED"


def test_unreachable_store_is_retryable_and_changes_nothing(service: WorklistService,
                                                           images: FakeImageStore) -> None:
    out = generate_uid()
    images.uids.add(out)
    uid, tx = _in_progress_with_outputs(service, [out])
    images.available = False
    with pytest.raises(errors.ServiceUnavailable) as exc:
        service.change_state(uid, "COMPLETED", tx, ACTOR)
    assert exc.value.status == 0x0110 and exc.value.http_status == 503
    assert service.state_of(uid) == "IN PROGRESS"
    # Claims and cancellations do not need the image store.
    other, other_tx = _in_progress_with_outputs(service, [])
    service.change_state(other, "CANCELED", other_tx, ACTOR)
    assert service.state_of(other) == "CANCELED"


def test_state_errors_come_before_the_image_store(service: WorklistService,
                                                  images: FakeImageStore) -> None:
    uid, _tx = _in_progress_with_outputs(service, [generate_uid()])
    images.available = False
    with pytest.raises(errors.WrongTransactionUID):
        service.change_state(uid, "COMPLETED", generate_uid(), ACTOR)


def test_no_outputs_needs_no_image_store(service: WorklistService,
                                         images: FakeImageStore) -> None:
    uid, tx = _in_progress_with_outputs(service, [])
    images.available = False
    service.change_state(uid, "COMPLETED", tx, ACTOR)


def test_output_references_of_a_workitem_without_outputs() -> None:
    assert output_references({}) == []


@pytest.mark.parametrize("spec, field", [
    ({"match": {"NotAKeyword": "x"}}, "field match.NotAKeyword"),
    ({"match": {"StudyDate": "2026-01-01"}}, "field match.StudyDate"),
    ({"match": {"ReferencedStudySequence": "x"}}, "sequences cannot be matched"),
    ({"readers": "reader1"}, "field readers"),
    ({"readers": ["a", "a"]}, "listed twice"),
    ({"workitem_code": ["SEG"]}, "field workitem_code"),
    ({"worklist_label": "x" * 65}, "field worklist_label"),
])
def test_bad_rules_name_rule_and_field(spec: dict, field: str) -> None:
    with pytest.raises(RoutingError, match="routing rule 1") as exc:
        parse_rules([{"name": "r", **spec}])
    assert field in str(exc.value)


@pytest.mark.parametrize("pattern, value, matches", [
    ("CT", "CT", True), ("CT", "MR", False),
    ("LIVER*", "LIVER CT", True), ("?T", "CT", True), ("[CT]", "C", False),
    ("re:(?i)liver", "Abdomen LIVER", True), ("re:^MR", "CT", False),
])
def test_patterns(pattern: str, value: str, matches: bool) -> None:
    (rule,) = parse_rules([{"name": "r", "match": {"StudyDescription": pattern}}])
    assert (rule.why_not({"StudyDescription": [value]}) is None) is matches


@pytest.mark.parametrize("pattern, value, matches", [
    ("20260101-20261231", "20260315", True), ("20260101-20261231", "20270101", False),
    ("20260101-", "20300101", True), ("-20251231", "20260101", False),
    ("20260315", "20260315", True),
])
def test_date_ranges(pattern: str, value: str, matches: bool) -> None:
    (rule,) = parse_rules([{"name": "r", "match": {"StudyDate": pattern}}])
    assert (rule.why_not({"StudyDate": [value]}) is None) is matches


def test_absent_attribute_never_matches_and_says_why() -> None:
    (rule,) = parse_rules([{"name": "r", "match": {"BodyPartExamined": "LIVER"}}])
    assert rule.why_not({}) == "BodyPartExamined is absent"


def test_default_rules_route_everything_to_one_unassigned_task() -> None:
    (rule,) = parse_rules(None)
    assert rule.why_not({}) is None and rule.readers == () and rule.worklist_label == "default"
