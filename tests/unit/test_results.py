"""Result checks at completion and the result index (issue 6, points 5 and 6), with the
in-memory image store: each refusal names the object and the attribute and leaves the
workitem IN PROGRESS with nothing indexed; a success indexes every item; the reviewer's
query filters, pages and writes CSV; the HTTP endpoints negotiate and refuse properly."""

from __future__ import annotations

import copy
import csv
import io
import json
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from starlette.exceptions import StarletteDeprecationWarning

from seg.build import build_segmentation
from seg.synthetic import ct_volume, sphere_labels
from sr.build import REVIEW_VERDICT, build_measurement_report
from sr.review import build_review_report
from sr.measure import measure_segments
from worklist import errors
from worklist.labelsets import LabelSet, load_label_sets, to_processing_parameters
from worklist.orthanc import FakeImageStore
from worklist.provenance import Algorithm, Person, Provenance, ResultItem, ResultRecord
from worklist.results import (ROW_FIELDS, VERDICT_CONCEPTS, ResultQuery, index_results,
                              parse_query, to_csv)
from worklist.sample import code_item, final_state_attributes, sample_workitem
from worklist.service import Actor, WorklistService
from worklist.status import Status
from worklist.store import open_store

with warnings.catch_warnings():
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

ACTOR = Actor.internal("test")
READER = Person("jroe", "Roe^Jane", "Reading Lab")
OTHER = Person("jdoe", "Doe^John", "Reading Lab")
REVIEWER = Person("boss", "Boss^Big", "Reading Lab", role="Reviewer")
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"


# -- fixtures -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def label_set() -> LabelSet:
    return load_label_sets()["liver-lesions"]


@pytest.fixture(scope="module")
def ct() -> list[Dataset]:
    return ct_volume(32, 32, 6, patient_id="RES-0001")


@pytest.fixture(scope="module")
def label_map() -> np.ndarray:
    return sphere_labels((6, 32, 32), 2)


def _inputs(series: list[Dataset]) -> list[Dataset]:
    item = Dataset()
    item.TypeOfInstances = "DICOM"
    item.StudyInstanceUID, item.SeriesInstanceUID = (series[0].StudyInstanceUID,
                                                     series[0].SeriesInstanceUID)
    refs = []
    for ds in series:
        ref = Dataset()
        ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
        refs.append(ref)
    item.ReferencedSOPSequence = refs
    return [item]


def _task(service: WorklistService, ct: list[Dataset], label_set: LabelSet | None, *,
          worklist: str = "liver", performer: Person | None = READER,
          inputs: list[Dataset] | None = None) -> tuple[str, str]:
    """An IN PROGRESS workitem over ``ct`` carrying ``label_set``: (uid, transaction)."""
    uid, tx = generate_uid(), generate_uid()
    ds = sample_workitem(worklist_label=worklist, performer=performer.login if performer else None,
                         study_uid=ct[0].StudyInstanceUID)
    ds.InputInformationSequence = _inputs(inputs or ct)
    if label_set is not None:
        ds.ScheduledProcessingParametersSequence = to_processing_parameters(label_set)
    service.create(ds, uid, ACTOR)
    service.change_state(uid, "IN PROGRESS", tx, ACTOR)
    return uid, tx


def _link(service: WorklistService, uid: str, tx: str, outputs: list[Dataset], *,
          performer: Person | None = READER, sop_class: str | None = None) -> None:
    """N-SET the final-state attributes with one Output Information item per output."""
    if performer is not None:
        changes = final_state_attributes(performer=performer.login, name=performer.name)
    else:
        changes = final_state_attributes()
        del changes.UnifiedProcedureStepPerformedProcedureSequence[0].ActualHumanPerformersSequence
    items = []
    for ds in outputs:
        item, ref = Dataset(), Dataset()
        item.TypeOfInstances = "DICOM"
        item.StudyInstanceUID, item.SeriesInstanceUID = ds.StudyInstanceUID, ds.SeriesInstanceUID
        ref.ReferencedSOPClassUID = sop_class or ds.SOPClassUID
        ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
        item.ReferencedSOPSequence = [ref]
        items.append(item)
    changes.UnifiedProcedureStepPerformedProcedureSequence[0].OutputInformationSequence = items
    service.update(uid, changes, tx, ACTOR)


def _seg(ct: list[Dataset], label_map: np.ndarray, label_set: LabelSet, task: str,
         person: Person | None = READER, algorithm: Algorithm | None = None) -> Dataset:
    return build_segmentation(ct, label_map, label_set,
                              Provenance(task_uid=task, person=person, algorithm=algorithm))


def _sr(seg: Dataset, ct: list[Dataset], label_map: np.ndarray, label_set: LabelSet, task: str,
        person: Person = READER) -> Dataset:
    stats = measure_segments(label_map, ct, [1, 2])
    return build_measurement_report(seg, ct, stats, Provenance(task_uid=task, person=person),
                                    label_set)


def _refused(service: WorklistService, uid: str, tx: str) -> errors.FinalStateRequirementsNotMet:
    with pytest.raises(errors.FinalStateRequirementsNotMet) as exc:
        service.change_state(uid, "COMPLETED", tx, ACTOR)
    assert exc.value.status is Status.FINAL_STATE_REQUIREMENTS_NOT_MET
    assert exc.value.http_status == 400
    assert service.state_of(uid) == "IN PROGRESS"
    assert service.search_results(ResultQuery(task=uid)).rows == []  # nothing half-stored
    return exc.value


def _completed_reading(service: WorklistService, images: FakeImageStore, ct: list[Dataset],
                       label_map: np.ndarray, label_set: LabelSet, *, worklist: str = "liver",
                       person: Person = READER) -> tuple[str, Dataset, Dataset]:
    uid, tx = _task(service, ct, label_set, worklist=worklist, performer=person)
    seg = _seg(ct, label_map, label_set, uid, person)
    report = _sr(seg, ct, label_map, label_set, uid, person)
    images.add(seg, report)
    _link(service, uid, tx, [seg, report], performer=person)
    service.change_state(uid, "COMPLETED", tx, ACTOR)
    return uid, seg, report


# -- success --------------------------------------------------------------------------------
def test_completion_indexes_every_item_of_seg_and_sr(service, images, ct, label_map,
                                                     label_set) -> None:
    uid, seg, report = _completed_reading(service, images, ct, label_map, label_set)
    assert service.state_of(uid) == "COMPLETED"
    rows = service.search_results(ResultQuery(task=uid)).rows
    assert {r["sop_instance_uid"] for r in rows} == {seg.SOPInstanceUID, report.SOPInstanceUID}
    segments = [r for r in rows if r["item"] == "segment"]
    assert [(r["label"], r["property_type"], r["algorithm_type"]) for r in segments] == [
        ("Liver", "Liver", "MANUAL"), ("Liver lesion", "Lesion", "MANUAL")]
    assert {r["reader"] for r in rows} == {"jroe"} and {r["worklist"] for r in rows} == {"liver"}
    assert {r["role"] for r in rows} == {"Reader"}  # the SEG takes the role of its SR
    volumes = [r for r in rows if r["concept"] == "Volume"]
    assert service.search_results(parse_query([("finding", "Lesion"), ("concept", "Volume"),
                                               ("task", uid)])).rows == volumes[1:]
    assert len(volumes) == 2 and all(r["unit"] == "mm3" and r["value"] > 0 for r in volumes)
    assert all(r["content_datetime"].endswith("Z") for r in rows)
    one = service.result(seg.SOPInstanceUID)
    assert one["workitem_uid"] == uid and one["kind"] == "SEG" and len(one["items"]) == 2
    assert ct[0].SeriesInstanceUID in one["references"]["series"]
    # Only metadata was asked of the image store (the fake holds no Pixel Data at all).
    assert images.metadata_requests == 2


def test_the_issue_examples(service, images, ct, label_map, label_set) -> None:
    """All lesion volumes by reader for one worklist; all results a reviewer rejected."""
    _completed_reading(service, images, ct, label_map, label_set, person=READER)
    _, _, other_report = _completed_reading(service, images, ct, label_map, label_set,
                                            person=OTHER)
    _completed_reading(service, images, ct, label_map, label_set, worklist="lung")
    query = parse_query([("worklist", "liver"), ("label", "Liver lesion"),
                         ("concept", "Volume")])
    rows = service.search_results(query).rows
    assert [(r["reader"], r["label"], r["concept"]) for r in rows] == [
        ("jdoe", "Liver lesion", "Volume"), ("jroe", "Liver lesion", "Volume")]
    # A reviewer rejects jdoe's report: a review task whose input is that report.
    review_uid, tx = _task(service, ct, None, worklist="liver-review", performer=REVIEWER,
                           inputs=[other_report])
    review = build_review_report(other_report, Provenance(task_uid=review_uid, person=REVIEWER),
                                 "REJECTED", "lesion 2 misses the rim")
    images.add(review)
    _link(service, review_uid, tx, [review], performer=REVIEWER)
    service.change_state(review_uid, "COMPLETED", tx, ACTOR)
    rejected = service.search_results(parse_query([("verdict", "rejected")])).rows
    judged = {r["sop_instance_uid"] for r in rejected}
    assert other_report.SOPInstanceUID in judged  # the predecessor
    assert {r["reader"] for r in rejected} == {"jdoe"}  # its SEG too (referenced segments)
    assert {r["verdict"] for r in rejected} == {"Rejected"}
    assert {r["verdict_by"] for r in rejected} == {"boss"}
    assert review.SOPInstanceUID not in judged
    assert service.search_results(parse_query([("verdict", "ACCEPTED")])).rows == []
    reviews = service.search_results(parse_query([("role", "reviewer"),
                                                  ("concept", "Review verdict")])).rows
    assert [(r["reader"], r["text"]) for r in reviews] == [("boss", "Rejected")]
    view = service.result(other_report.SOPInstanceUID)
    assert [(v["reviewer"], v["verdict"]) for v in view["verdicts"]] == [("boss", "Rejected")]


def test_verdict_concept_is_the_builders() -> None:
    assert REVIEW_VERDICT.meaning in VERDICT_CONCEPTS


def test_automatic_result_without_a_person_is_accepted_only_without_a_performer(
        service, images, ct, label_map, label_set) -> None:
    algorithm = Algorithm("LiverNet", "2.1")
    uid, tx = _task(service, ct, label_set, performer=None)
    seg = _seg(ct, label_map, label_set, uid, person=None, algorithm=algorithm)
    images.add(seg)
    _link(service, uid, tx, [seg], performer=None)
    service.change_state(uid, "COMPLETED", tx, ACTOR)
    rows = service.search_results(parse_query([("algorithm_type", "automatic"),
                                               ("algorithm", "LiverNet")])).rows
    assert [(r["reader"], r["algorithm_name"], r["algorithm_version"]) for r in rows] == [
        ("", "LiverNet", "2.1")] * 2
    # The same algorithm's SEG for a task a person performs: refused.
    uid, tx = _task(service, ct, label_set)
    seg = _seg(ct, label_map, label_set, uid, person=None, algorithm=algorithm)
    images.add(seg)
    _link(service, uid, tx, [seg])
    exc = _refused(service, uid, tx)
    assert "Content Creator's Name (0070,0084) is empty" in exc.message
    assert "'Roe^Jane' (login jroe)" in exc.message


def test_sr_may_reach_the_inputs_through_its_seg(service, images, ct, label_map,
                                                 label_set) -> None:
    uid, tx = _task(service, ct, label_set)
    seg = _seg(ct, label_map, label_set, uid)
    report = _sr(seg, ct, label_map, label_set, uid)
    source = ct[0].SeriesInstanceUID
    for study in report.CurrentRequestedProcedureEvidenceSequence:
        study.ReferencedSeriesSequence = [s for s in study.ReferencedSeriesSequence
                                          if s.SeriesInstanceUID != source]
    _drop_source_series(report, source)
    images.add(seg, report)
    _link(service, uid, tx, [seg, report])
    service.change_state(uid, "COMPLETED", tx, ACTOR)
    # Alone, it does not.
    uid, tx = _task(service, ct, label_set)
    seg = _seg(ct, label_map, label_set, uid)
    report = _sr(seg, ct, label_map, label_set, uid)
    report.CurrentRequestedProcedureEvidenceSequence = []
    _drop_source_series(report, source)
    _drop_images(report)
    images.add(seg, report)
    _link(service, uid, tx, [report])
    exc = _refused(service, uid, tx)
    assert f"SR {report.SOPInstanceUID}: references none of the workitem's inputs" in exc.message
    assert exc.attribute == "CurrentRequestedProcedureEvidenceSequence"


def _items(ds: Dataset) -> Iterator[Dataset]:
    for item in ds.get("ContentSequence") or []:
        yield item
        yield from _items(item)


def _drop_source_series(report: Dataset, series: str) -> None:
    for item in list(_items(report)):
        item.ContentSequence = [c for c in item.get("ContentSequence") or []
                                if not (c.ValueType == "UIDREF" and c.UID == series)]


def _drop_images(report: Dataset) -> None:
    for item in list(_items(report)):
        for child in item.get("ContentSequence") or []:
            if child.ValueType == "IMAGE":
                for ref in child.ReferencedSOPSequence:
                    if ref.ReferencedSOPClassUID != SEG_CLASS:
                        ref.ReferencedSOPInstanceUID = generate_uid()


# -- refusals -------------------------------------------------------------------------------
def test_seg_naming_another_reader_is_refused_naming_the_attribute(
        service, images, ct, label_map, label_set) -> None:
    uid, tx = _task(service, ct, label_set)
    seg = _seg(ct, label_map, label_set, uid, person=OTHER)
    images.add(seg)
    _link(service, uid, tx, [seg])
    exc = _refused(service, uid, tx)
    assert exc.message.endswith(
        f"SEG {seg.SOPInstanceUID}: Content Creator's Name (0070,0084) 'Doe^John', login "
        "'jdoe' in Content Creator's Identification Code Sequence (0070,0086), is not the "
        "performer 'Roe^Jane' (login jroe)")
    assert exc.attribute == "ContentCreatorIdentificationCodeSequence"


def test_a_name_alone_is_compared_as_a_person_name(service, images, ct, label_map,
                                                   label_set) -> None:
    uid, tx = _task(service, ct, label_set)
    seg = _seg(ct, label_map, label_set, uid)
    del seg.ContentCreatorIdentificationCodeSequence
    seg.ContentCreatorName = "ROE^JANE^^"  # same name, other case and padding
    images.add(seg)
    _link(service, uid, tx, [seg])
    service.change_state(uid, "COMPLETED", tx, ACTOR)
    uid, tx = _task(service, ct, label_set)
    seg = _seg(ct, label_map, label_set, uid)
    del seg.ContentCreatorIdentificationCodeSequence
    seg.ContentCreatorName = "Doe^John"
    images.add(seg)
    _link(service, uid, tx, [seg])
    exc = _refused(service, uid, tx)
    assert "Content Creator's Name (0070,0084) 'Doe^John' is not the performer 'Roe^Jane' " \
           "(login jroe)" in exc.message
    assert exc.attribute == "ContentCreatorName"


def test_sr_of_another_observer_is_refused(service, images, ct, label_map, label_set) -> None:
    uid, tx = _task(service, ct, label_set)
    seg = _seg(ct, label_map, label_set, uid)
    report = _sr(seg, ct, label_map, label_set, uid, person=OTHER)
    images.add(seg, report)
    _link(service, uid, tx, [seg, report])
    exc = _refused(service, uid, tx)
    assert f"SR {report.SOPInstanceUID}: Person Observer Name (121008) 'Doe^John', login " \
           "'jdoe' in Person Observer's Login Name (128774), is not the performer" in exc.message
    assert f"SEG {seg.SOPInstanceUID}" not in exc.message


def test_seg_not_over_the_inputs_is_refused(service, images, label_map, label_set, ct) -> None:
    other = ct_volume(32, 32, 6, patient_id="RES-0002")
    uid, tx = _task(service, ct, label_set)
    seg = _seg(other, label_map, label_set, uid)
    images.add(seg)
    _link(service, uid, tx, [seg])
    exc = _refused(service, uid, tx)
    assert f"SEG {seg.SOPInstanceUID}: Referenced Series Sequence (0008,1115) names none of " \
           f"the workitem's inputs (Input Information Sequence (0040,4021): " \
           f"{ct[0].SeriesInstanceUID})" in exc.message


def test_segment_outside_the_label_set_is_refused(service, images, ct, label_map) -> None:
    sets = load_label_sets()
    uid, tx = _task(service, ct, sets["lung-nodules"])
    seg = _seg(ct, label_map, sets["abdomen-organs"], uid)
    images.add(seg)
    _link(service, uid, tx, [seg])
    exc = _refused(service, uid, tx)
    assert f"SEG {seg.SOPInstanceUID}: segment 1 'Liver': Segmented Property Type Code " \
           "Sequence (0062,000F) (10200004, SCT, 'Liver') is not in the task's label set " \
           "'lung-nodules' (Lung nodule)" in exc.message
    assert "segment 2 'Spleen'" in exc.message
    assert exc.attribute == "SegmentedPropertyTypeCodeSequence"


def test_result_of_another_task_is_refused(service, images, ct, label_map, label_set) -> None:
    uid, tx = _task(service, ct, label_set)
    seg = _seg(ct, label_map, label_set, generate_uid())
    images.add(seg)
    _link(service, uid, tx, [seg])
    exc = _refused(service, uid, tx)
    assert "Referenced Performed Procedure Step Sequence (0008,1111) names workitem" in exc.message
    assert exc.attribute == "ReferencedPerformedProcedureStepSequence"


def test_a_modality_performed_procedure_step_is_not_a_task(service, images, ct, label_map,
                                                          label_set) -> None:
    uid, tx = _task(service, ct, label_set)
    seg = _seg(ct, label_map, label_set, uid)
    mpps = Dataset()
    mpps.ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.3"  # Modality Performed Procedure Step
    mpps.ReferencedSOPInstanceUID = generate_uid()
    seg.ReferencedPerformedProcedureStepSequence.append(mpps)
    images.add(seg)
    _link(service, uid, tx, [seg])
    service.change_state(uid, "COMPLETED", tx, ACTOR)


def test_object_that_is_not_what_the_reference_says(service, images, ct, label_map,
                                                    label_set) -> None:
    uid, tx = _task(service, ct, label_set)
    seg = _seg(ct, label_map, label_set, uid)
    images.add(seg)
    _link(service, uid, tx, [seg], sop_class="1.2.840.10008.5.1.4.1.1.88.34")
    exc = _refused(service, uid, tx)
    assert f"SR {seg.SOPInstanceUID}: SOP Class UID (0008,0016) is {SEG_CLASS} (Segmentation " \
           "Storage), not the 1.2.840.10008.5.1.4.1.1.88.34 the Output Information Sequence " \
           "names" in exc.message


def _break_units(report: Dataset) -> None:
    for item in _items(report):
        if item.ValueType == "NUM":
            del item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence
            return


@pytest.mark.parametrize("damage, expected, attribute", [
    (_break_units, "Measured Value Sequence (0040,A300) needs Numeric Value (0040,A30A) and "
                   "Measurement Units Code Sequence (0040,08EA)", "MeasuredValueSequence"),
    (lambda ds: delattr(ds, "ContentSequence"), "Content Sequence (0040,A730) is absent",
     "ContentSequence"),
    (lambda ds: setattr(ds, "ValueType", "TEXT"), "Value Type (0040,A040) of the document root "
                                                  "is TEXT, not CONTAINER", "ValueType"),
])
def test_malformed_sr_is_refused(service, images, ct, label_map, label_set, damage, expected,
                                 attribute) -> None:
    uid, tx = _task(service, ct, label_set)
    seg = _seg(ct, label_map, label_set, uid)
    report = copy.deepcopy(_sr(seg, ct, label_map, label_set, uid))
    damage(report)
    images.add(seg, report)
    _link(service, uid, tx, [seg, report])
    exc = _refused(service, uid, tx)
    assert f"SR {report.SOPInstanceUID}" in exc.message and expected in exc.message
    assert exc.attribute == attribute


@pytest.mark.parametrize("damage, expected", [
    (lambda ds: delattr(ds, "SegmentSequence"), "Segment Sequence (0062,0002) is absent"),
    (lambda ds: setattr(ds.SegmentSequence[0], "SegmentAlgorithmType", "GUESSED"),
     "Segment Sequence item 1: Segment Algorithm Type (0062,0008) is GUESSED"),
    (lambda ds: setattr(ds.SegmentSequence[1], "SegmentedPropertyTypeCodeSequence", []),
     "Segment Sequence item 2: Segmented Property Type Code Sequence (0062,000F) must hold "
     "one code"),
])
def test_malformed_seg_is_refused(service, images, ct, label_map, label_set, damage,
                                  expected) -> None:
    uid, tx = _task(service, ct, label_set)
    seg = _seg(ct, label_map, label_set, uid)
    damage(seg)
    images.add(seg)
    _link(service, uid, tx, [seg])
    assert expected in _refused(service, uid, tx).message


def test_a_result_belongs_to_one_task(service, images, ct, label_map, label_set) -> None:
    first_uid, seg, _report = _completed_reading(service, images, ct, label_map, label_set)
    uid, tx = _task(service, ct, label_set)
    seg.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID = uid
    images.add(seg)
    _link(service, uid, tx, [seg])
    exc = _refused(service, uid, tx)
    assert f"{seg.SOPInstanceUID} is already the result of workitem {first_uid}" in exc.message


def test_unreachable_store_is_retryable(service, images, ct, label_map, label_set) -> None:
    uid, tx = _task(service, ct, label_set)
    seg = _seg(ct, label_map, label_set, uid)
    images.add(seg)
    _link(service, uid, tx, [seg])
    images.available = False
    with pytest.raises(errors.ServiceUnavailable):
        service.change_state(uid, "COMPLETED", tx, ACTOR)
    assert service.state_of(uid) == "IN PROGRESS"
    images.available = True
    service.change_state(uid, "COMPLETED", tx, ACTOR)
    assert service.result(seg.SOPInstanceUID)["kind"] == "SEG"


def test_every_problem_is_reported_at_once(service, images, ct, label_map, label_set) -> None:
    uid, tx = _task(service, ct, label_set)
    seg = _seg(ct, label_map, label_set, uid, person=OTHER)
    report = _sr(seg, ct, label_map, label_set, uid, person=OTHER)
    images.add(seg, report)
    _link(service, uid, tx, [seg, report])
    message = _refused(service, uid, tx).message
    assert f"SEG {seg.SOPInstanceUID}" in message and f"SR {report.SOPInstanceUID}" in message


# -- the query ------------------------------------------------------------------------------
def _record(sop: str, task: str, login: str, *, kind: str = "SR", role: str = "Reader",
            when: str = "20260315101600", items: list[ResultItem] | None = None,
            predecessors: list[str] | None = None) -> ResultRecord:
    return ResultRecord(sop_instance_uid=sop, sop_class_uid="1.2.840.10008.5.1.4.1.1.88.34",
                        kind=kind, study_uid="1.2.3", series_uid="1.2.3.4", task_uid=task,
                        content_datetime=when, person_login=login, person_name=login.title(),
                        role=role, predecessors=predecessors or [], items=items or [])


@pytest.fixture
def indexed(database_url: str) -> Iterator[WorklistService]:
    """Hand-built records: two readers, a review rejecting one of them; on SQLite and on
    PostgreSQL (the query's SQL must mean the same on both)."""
    store = open_store(database_url)
    service = WorklistService(store, image_store=FakeImageStore())
    def vol(label: str, value: float) -> ResultItem:
        return ResultItem("measurement", label=label, concept="Volume", value=value, unit="mm3")

    records = [
        ("T1", "liver", _record("1.1", "T1", "ann", when="20260301120000+0100",
                                items=[vol("Liver lesion 1", 1.5), vol("Liver", 1500.0),
                                       ResultItem("evaluation", concept="Comment",
                                                  text='say "hi", then, go')])),
        ("T2", "liver", _record("1.2", "T2", "bob", when="20260310",
                                items=[vol("Liver lesion 1", 2.5)])),
        ("T3", "lung", _record("1.3", "T3", "ann", kind="SEG", when="20260320", items=[
            ResultItem("segment", label="Lung nodule", segment_number=1, algorithm_type="MANUAL"),
            ResultItem("segment", label="Nodule AI", segment_number=2, algorithm_type="AUTOMATIC",
                       algorithm_name="NoduleNet", algorithm_version="1")])),
        ("R1", "liver-review", _record("1.4", "R1", "boss", role="Reviewer", when="20260325",
                                       predecessors=["1.2"], items=[
                                           ResultItem("evaluation", concept="Review verdict",
                                                      text="Rejected")])),
    ]
    with service.store.transaction(write=True) as conn:
        for task, worklist, record in records:
            from worklist.resultcheck import content_datetime
            record.content_datetime = content_datetime(Dataset(), record) or ""
            index_results(conn, [record], workitem_uid=task, worklist_label=worklist,
                          now="20260401")
    yield service
    store.engine.dispose()


def _sops(service: WorklistService, *params: tuple[str, str]) -> list[tuple[str, str]]:
    return [(r["sop_instance_uid"], r["label"])
            for r in service.search_results(parse_query(params)).rows]


@pytest.mark.parametrize("params, expected", [
    ([("worklist", "liver"), ("concept", "Volume")],
     [("1.1", "Liver lesion 1"), ("1.1", "Liver"), ("1.2", "Liver lesion 1")]),
    ([("worklist", "liver*"), ("label", "Liver lesion*")],
     [("1.1", "Liver lesion 1"), ("1.2", "Liver lesion 1")]),
    ([("reader", "bob")], [("1.2", "Liver lesion 1")]),
    ([("kind", "seg")], [("1.3", "Lung nodule"), ("1.3", "Nodule AI")]),
    ([("algorithm", "Nodule*")], [("1.3", "Nodule AI")]),
    ([("algorithm_type", "MANUAL")], [("1.3", "Lung nodule")]),
    ([("verdict", "REJECTED")], [("1.2", "Liver lesion 1")]),
    ([("role", "REVIEWER")], [("1.4", "")]),
    ([("task", "T2")], [("1.2", "Liver lesion 1")]),
    ([("since", "2026-03-10"), ("until", "20260320"), ("concept", "Volume")],
     [("1.2", "Liver lesion 1")]),
    # 12:00 at +01:00 is 11:00 UTC
    ([("since", "2026-03-01T11:00:00Z"), ("until", "2026-03-01T11:00:00Z")],
     [("1.1", "Liver lesion 1"), ("1.1", "Liver"), ("1.1", "")]),
    ([("label", "Liver lesion")], []),
    ([("finding", "Les*"), ("kind", "SR")], []),
])
def test_filters(indexed: WorklistService, params, expected) -> None:
    assert _sops(indexed, *params) == expected


def test_pages_and_total(indexed: WorklistService) -> None:
    page = indexed.search_results(parse_query([("limit", "2"), ("offset", "1")]))
    assert len(page.rows) == 2 and page.total == 7


@pytest.mark.parametrize("params, message", [
    ([("colour", "red")], "Unknown filter 'colour'"),
    ([("kind", "CT")], "kind: 'CT' is not SEG or SR"),
    ([("algorithm_type", "magic")], "algorithm_type: 'magic' is not MANUAL"),
    ([("since", "yesterday")], "since: 'yesterday' is not a date"),
    ([("until", "2026-02-30")], "until: '2026-02-30' is not a valid date-time"),
    ([("limit", "0")], "limit: 0 is outside 1..100000"),
    ([("offset", "-1")], "offset: '-1' is not a whole number"),
    ([("reader", "a"), ("reader", "b")], "Filter 'reader' is given twice"),
    ([("label", "a\x00")], "Filter 'label' holds a NUL character"),
])
def test_bad_filters_are_named(params, message) -> None:
    with pytest.raises(errors.InvalidRequest) as exc:
        parse_query(params)
    assert message in exc.value.message


def test_csv_is_rfc_4180(indexed: WorklistService) -> None:
    rows = indexed.search_results(parse_query([("task", "T1")])).rows
    text = to_csv(rows)
    assert text.startswith(",".join(ROW_FIELDS) + "\r\n")
    assert '"say ""hi"", then, go"' in text
    parsed = list(csv.DictReader(io.StringIO(text, newline="")))
    assert [r["label"] for r in parsed] == ["Liver lesion 1", "Liver", ""]
    assert parsed[0]["value"] == "1.5" and parsed[2]["text"] == 'say "hi", then, go'
    assert parsed[0]["content_datetime"] == "2026-03-01T11:00:00Z"


def test_index_values_fit_their_columns(indexed: WorklistService) -> None:
    record = _record("9.9", "T9", "x" * 100, items=[ResultItem("evaluation", label="l" * 300,
                                                               value=float("nan"))])
    with indexed.store.transaction(write=True) as conn:
        index_results(conn, [record], workitem_uid="T9", worklist_label="w", now="now")
    row = indexed.result("9.9")
    assert len(row["person_login"]) == 64 and row["items"][0]["value"] is None


def test_a_result_indexed_by_a_concurrent_completion_is_refused(indexed: WorklistService) -> None:
    with pytest.raises(errors.FinalStateRequirementsNotMet, match="was just indexed"):
        with indexed.store.transaction(write=True) as conn:
            indexed._index_results(conn, "T9", {}, [_record("1.2", "T9", "eve")], "now")
    assert indexed.result("1.2")["workitem_uid"] == "T2"


def test_unknown_result_is_404(service: WorklistService) -> None:
    with pytest.raises(errors.UPSError) as exc:
        service.result("1.2.3.999")
    assert exc.value.http_status == 404 and exc.value.status == Status.NO_SUCH_SOP_INSTANCE


# -- HTTP ---------------------------------------------------------------------------------
@pytest.fixture
def http(indexed: WorklistService) -> TestClient:
    from dicomweb.app import create_app
    client = TestClient(create_app(indexed, users={"rev": "tok"}))
    client.headers["Authorization"] = "Bearer tok"
    return client


def test_http_json_csv_and_paging(http: TestClient) -> None:
    r = http.get("/api/results", params={"worklist": "liver", "concept": "Volume", "limit": "2"})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    assert [row["label"] for row in r.json()] == ["Liver lesion 1", "Liver"]
    assert r.headers["x-total-count"] == "3"
    assert 'offset=2' in r.headers["link"] and r.headers["link"].endswith('rel="next"')
    r = http.get("/api/results", params={"verdict": "REJECTED"},
                 headers={"Accept": "application/xml;q=1, text/csv;q=0.5"})
    assert r.headers["content-type"] == "text/csv; charset=utf-8; header=present"
    assert r.text.splitlines()[1].startswith("T2,liver,SR,1.2,")
    r = http.get("/api/results", params={"format": "csv", "reader": "ann"})
    assert r.text.count("\r\n") == 6
    assert http.get("/api/results/1.2").json()["verdicts"][0]["verdict"] == "Rejected"


@pytest.mark.parametrize("path, params, headers, status, message", [
    ("/api/results", {"readr": "x"}, {}, 400, "Unknown filter 'readr'"),
    ("/api/results", {"format": "xml"}, {}, 400, "format: 'xml' is not csv or json"),
    ("/api/results", {}, {"Accept": "image/png"}, 406, "Cannot answer with image/png"),
    ("/api/results/1.2", {}, {"Accept": "text/csv"}, 406, "sends application/json"),
    ("/api/results/9.9.9", {}, {}, 404, "No indexed result has SOP Instance UID 9.9.9"),
    ("/api/results/1.2%00", {}, {}, 404, "No indexed result"),
    ("/api/results", {}, {"Authorization": ""}, 401, "Authentication required"),
])
def test_http_refusals(http: TestClient, path: str, params: dict[str, Any],
                       headers: dict[str, str], status: int, message: str) -> None:
    r = http.get(path, params=params, headers=headers)
    assert r.status_code == status and message in r.json()["message"]


def test_command_line(indexed: WorklistService, capsys: pytest.CaptureFixture[str]) -> None:
    from worklist.cli import main
    url = indexed.store.engine.url.render_as_string(hide_password=False)
    assert main(["results", "--database", url, "--verdict", "rejected", "--csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ",".join(ROW_FIELDS) and lines[1].startswith("T2,liver,SR,1.2,")
    assert main(["results", "--database", url, "--worklist", "liver", "--concept", "Volume",
                 "--limit", "1"]) == 0
    out = capsys.readouterr()
    assert [r["label"] for r in json.loads(out.out)] == ["Liver lesion 1"]
    assert "2 more rows: use --offset 1" in out.err
    assert main(["results", "--database", url, "1.4"]) == 0
    assert json.loads(capsys.readouterr().out)["role"] == "Reviewer"
    assert main(["results", "--database", url, "--since", "someday"]) == 1
    assert "since: 'someday' is not a date" in capsys.readouterr().err


def test_performer_code_of_another_scheme_is_no_login() -> None:
    from worklist.dicomjson import dataset_to_json_dict
    from worklist.resultcheck import performers
    ds = Dataset()
    item = Dataset()
    item.HumanPerformerCodeSequence = [code_item("E1234", "99HOSP", "Roe^Jane")]
    item.HumanPerformerName = "Roe^Jane"
    ds.ScheduledHumanPerformersSequence = [item]
    (performer,) = performers(dataset_to_json_dict(ds))
    assert (performer.login, performer.name) == ("", "Roe^Jane")


def test_seg_with_code_other_than_login_is_not_taken_for_a_login() -> None:
    from worklist.resultcheck import _seg_people
    ds = Dataset()
    ds.ContentCreatorName = "Roe^Jane"
    ident, code = Dataset(), code_item("E1234", "99HOSP", "Roe^Jane")
    ident.PersonIdentificationCodeSequence = [code]
    ds.ContentCreatorIdentificationCodeSequence = [ident]
    record = ResultRecord("1", SEG_CLASS, "SEG", "", "", None)
    (person,) = _seg_people(ds, record)
    assert (person.login, person.name) == ("", "Roe^Jane")
