"""Checks of the SEG and SR a performer links to its workitem, at completion (issue 6, 5).

A workitem's results are the Output Information Sequence items of its Unified Procedure
Step Performed Procedure Sequence (PS3.4 Table CC.2.5-3; each item is the Referenced
Instances and Access Macro, PS3.3 Table 10-3b).  Those whose Referenced SOP Class UID is
Segmentation Storage or an SR storage class are read (attributes only, never Pixel
Data) and must, before the workitem may become COMPLETED:

(a) be what the reference says (SOP Class, SOP Instance, study, series) and well-formed
    enough to index (:mod:`worklist.resultform`);
(b) reference the task's inputs: a series or instance of its Input Information Sequence
    (an SR may do so through a SEG of the same completion);
(c) name the claiming performer (Actual Human Performers, else Scheduled Human
    Performers): SEG Content Creator's Identification / Name (PS3.3 10.9), SR person
    observer (TID 1002/1003) or author observer (PS3.3 C.17.2.2); a result naming no
    person must name its algorithm and is accepted only when the workitem has no human
    performer;
(d) SEG: every segment's Segmented Property Type is in the task's label set, if any;
(e) if it names a task (Referenced Performed Procedure Step Sequence), name this one.

Every problem found is reported, each naming the object and the attribute; the first
names the error's ``attribute``.  :func:`check_results` is pure: the caller fetches the
objects (:func:`result_outputs` says which) and indexes the records it returns.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from . import errors
from .dicomjson import first, normalize_dt, values
from .labelsets import LabelSet, LabelSetError, from_workitem
from .provenance import LOGIN_SCHEMES, UPS_PUSH_SOP_CLASS, ResultRecord
from .resultform import Problem, concept_code, seg_structure, sr_structure, walk, words

__all__ = ["SEGMENTATION_STORAGE", "SEG_STORAGE", "SR_STORAGE", "ResultOutput", "Performer",
           "result_outputs", "performers", "check_results", "describe_result", "content_datetime"]

Json = dict[str, Any]
Describe = Callable[[Dataset, str], ResultRecord]

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
SEG_STORAGE = {
    SEGMENTATION_STORAGE: "Segmentation Storage",
    "1.2.840.10008.5.1.4.1.1.66.7": "Label Map Segmentation Storage",
}
SR_STORAGE = {
    "1.2.840.10008.5.1.4.1.1.88.35": "Extensible SR",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR",
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR",
}
_KIND = {**{uid: "SEG" for uid in SEG_STORAGE}, **{uid: "SR" for uid in SR_STORAGE}}


@dataclass(frozen=True)
class ResultOutput:
    """One Output Information Sequence reference to a SEG or SR."""

    study_uid: str | None
    series_uid: str | None
    sop_instance_uid: str
    sop_class_uid: str

    @property
    def kind(self) -> str:
        return _KIND[self.sop_class_uid]

    @property
    def ref(self) -> tuple[str | None, str | None, str]:
        return self.study_uid, self.series_uid, self.sop_instance_uid


@dataclass(frozen=True)
class Performer:
    login: str
    name: str

    def __str__(self) -> str:
        return f"'{self.name}' (login {self.login})" if self.login else f"'{self.name}'"


def result_outputs(workitem: Json) -> list[ResultOutput]:
    """The SEG/SR references of a workitem's Output Information Sequence (PS3.4 Table
    CC.2.5-3 > Unified Procedure Step Performed Procedure Sequence > Output Information
    Sequence > Referenced SOP Sequence); other outputs are only checked for existence."""
    out = []
    for performed in values(workitem, "UnifiedProcedureStepPerformedProcedureSequence"):
        for item in values(performed, "OutputInformationSequence"):
            study, series = first(item, "StudyInstanceUID"), first(item, "SeriesInstanceUID")
            for ref in values(item, "ReferencedSOPSequence"):
                sop = first(ref, "ReferencedSOPInstanceUID")
                cls = first(ref, "ReferencedSOPClassUID")
                if sop and cls in _KIND:
                    out.append(ResultOutput(study, series, str(sop), str(cls)))
    return out


def performers(workitem: Json) -> list[Performer]:
    """Who performs the task: the Actual Human Performers Sequence (0040,4035) of the
    performed procedure when given ("shall be provided if known", PS3.4 Table CC.2.5-3),
    else the Scheduled Human Performers Sequence (0040,4034).  A Human Performer Code
    Sequence item written by the worklist is value = login, scheme L, meaning = name; a
    code of another scheme (an employee number...) is no login, the name is compared."""
    def read(items: list[Any]) -> list[Performer]:
        found = []
        for item in items:
            code = first(item, "HumanPerformerCodeSequence") or {}
            login = (str(first(code, "CodeValue") or "")
                     if first(code, "CodingSchemeDesignator") in LOGIN_SCHEMES else "")
            name = _pn(first(item, "HumanPerformerName")) or str(first(code, "CodeMeaning") or "")
            if login or name:
                found.append(Performer(login, name))
        return found

    actual = [p for performed in values(workitem, "UnifiedProcedureStepPerformedProcedureSequence")
              for p in read(values(performed, "ActualHumanPerformersSequence"))]
    return actual or read(values(workitem, "ScheduledHumanPerformersSequence"))


def _pn(value: Any) -> str:
    """A person name as text (DICOM JSON ``{"Alphabetic": ...}`` or a pydicom value)."""
    if value is None:
        return ""
    if isinstance(value, dict):
        value = value.get("Alphabetic", "")
    return str(value).split("=")[0].strip()


def _same_name(a: str, b: str) -> bool:
    """PN equality of the alphabetic group, ignoring trailing empty components and case."""
    def norm(name: str) -> str:
        return "^".join(part.strip() for part in _pn(name).split("^")).rstrip("^").casefold()
    return bool(a) and bool(b) and norm(a) == norm(b)


def _task_inputs(workitem: Json) -> tuple[set[str], set[str]]:
    """Series and SOP Instance UIDs of the Input Information Sequence (0040,4021)."""
    series, instances = set(), set()
    for item in values(workitem, "InputInformationSequence"):
        if first(item, "SeriesInstanceUID"):
            series.add(str(first(item, "SeriesInstanceUID")))
        for ref in values(item, "ReferencedSOPSequence"):
            if first(ref, "ReferencedSOPInstanceUID"):
                instances.add(str(first(ref, "ReferencedSOPInstanceUID")))
    return series, instances


def describe_result(ds: Dataset, kind: str) -> ResultRecord:
    """The provenance record of a SEG or SR (``seg.read`` / ``sr.read``)."""
    if kind == "SEG":
        from seg.read import describe
    else:
        from sr.read import describe
    return describe(ds)


def content_datetime(ds: Dataset, record: ResultRecord | None = None) -> str | None:
    """Content Date/Time (0008,0023/0033) with Timezone Offset From UTC (0008,0201), as
    the sortable UTC text of :func:`worklist.dicomjson.normalize_dt` (values without an
    offset are taken as UTC, as everywhere in the worklist); None when absent or invalid."""
    text = ""
    if ds.get("ContentDate"):
        text = str(ds.ContentDate) + str(ds.get("ContentTime") or "").replace(":", "")
        if ds.get("TimezoneOffsetFromUTC"):
            text += str(ds.TimezoneOffsetFromUTC)
    elif record is not None and record.content_datetime:
        text = record.content_datetime
        if text[4:5] == "-":  # ISO 8601 extended (Python reads DICOM DT text wrongly)
            try:
                when = _dt.datetime.fromisoformat(text)
                text = when.strftime("%Y%m%d%H%M%S.%f") + when.strftime("%z")
            except ValueError:
                return None
    if not text:
        return None
    try:
        return normalize_dt(text)
    except errors.UPSError:
        return None


# -- the checks ---------------------------------------------------------------------------
@dataclass
class _Task:
    uid: str
    performers: list[Performer]
    input_series: set[str]
    input_instances: set[str]
    label_set: LabelSet | None


def check_results(workitem: Json, objects: Mapping[str, Dataset | None], *,
                  describe: Describe = describe_result) -> list[ResultRecord]:
    """The records of a workitem's SEG/SR outputs (``objects``: SOP Instance UID → the
    object's attributes, None when the store no longer holds it), or
    FinalStateRequirementsNotMet naming every problem."""
    outputs = result_outputs(workitem)
    if not outputs:
        return []
    problems: list[Problem] = []
    try:
        label_set = from_workitem(workitem)
    except LabelSetError as exc:
        label_set = None
        problems.append(Problem(f"the workitem's label set cannot be read: {exc}",
                                "ScheduledProcessingParametersSequence"))
    series, instances = _task_inputs(workitem)
    task = _Task(str(first(workitem, "SOPInstanceUID") or ""), performers(workitem),
                 series, instances, label_set)
    records: list[ResultRecord] = []
    unanchored: list[tuple[ResultRecord, set[str], Problem]] = []
    anchored: set[str] = set()
    for output in outputs:
        ds = objects.get(output.sop_instance_uid)
        where = f"{output.kind} {output.sop_instance_uid}"
        if ds is None:
            problems.append(Problem(f"{where}: the image store does not return its "
                                    "attributes (WADO-RS metadata)", "OutputInformationSequence"))
            continue
        found = _check_one(output, ds, task, describe, where)
        if isinstance(found, list):
            problems += found
            continue
        record, refs, input_problem = found
        records.append(record)
        if input_problem is None:
            anchored.add(record.sop_instance_uid)
        else:
            unanchored.append((record, refs, input_problem))
    # (b) an SR may reach the inputs through a SEG of this completion that does.
    for record, refs, problem in unanchored:
        if record.kind != "SR" or not refs & anchored:
            problems.append(problem)
    if problems:
        raise errors.FinalStateRequirementsNotMet(
            "The workitem's results do not meet the completion checks: "
            + "; ".join(p.text for p in problems), attribute=problems[0].attribute)
    return records


def _check_one(output: ResultOutput, ds: Dataset, task: _Task, describe: Describe, where: str
               ) -> list[Problem] | tuple[ResultRecord, set[str], Problem | None]:
    # (a) what the reference says it is, and well-formed enough to index.
    problems = _identity_problems(output, ds, where)
    if problems:
        return problems
    problems = (seg_structure(ds, where) if output.kind == "SEG" else sr_structure(ds, where))
    if problems:
        return problems
    try:
        record = describe(ds, output.kind)
    except Exception as exc:  # a reader's complaint about a malformed object
        return [Problem(f"{where}: cannot be read: {exc}", "OutputInformationSequence")]
    record.content_datetime = content_datetime(ds, record) or ""
    # (e) the task it names, if any: Referenced Performed Procedure Step Sequence
    # (0008,1111) of the General Series (PS3.3 C.7.3.1) / SR Document Series (C.17.1)
    # Module.
    named = _named_tasks(ds) | ({record.task_uid} if record.task_uid else set())
    if named and task.uid not in named:
        problems.append(Problem(
            f"{where}: Referenced Performed Procedure Step Sequence (0008,1111) names "
            f"workitem {sorted(named)[0]}, not this workitem {task.uid}",
            "ReferencedPerformedProcedureStepSequence"))
    problems += _performer_problems(output.kind, ds, record, task, where)
    if output.kind == "SEG" and task.label_set is not None:
        problems += _label_problems(ds, task.label_set, where)
    if problems:
        return problems
    refs = _references(ds, record)
    return record, refs, _input_problem(output.kind, refs, task, where)


def _identity_problems(output: ResultOutput, ds: Dataset, where: str) -> list[Problem]:
    problems = []
    actual = str(ds.get("SOPClassUID") or "")
    if actual != output.sop_class_uid:
        what = SR_STORAGE.get(actual) or SEG_STORAGE.get(actual) or "another SOP Class"
        problems.append(Problem(
            f"{where}: SOP Class UID (0008,0016) is {actual or '(absent)'} ({what}), not the "
            f"{output.sop_class_uid} the Output Information Sequence names",
            "ReferencedSOPClassUID"))
    if str(ds.get("SOPInstanceUID") or "") != output.sop_instance_uid:
        problems.append(Problem(f"{where}: the image store answered with SOP Instance UID "
                                f"{ds.get('SOPInstanceUID')}", "ReferencedSOPInstanceUID"))
    for keyword, tag, given in (("StudyInstanceUID", "(0020,000D)", output.study_uid),
                                ("SeriesInstanceUID", "(0020,000E)", output.series_uid)):
        if given and str(ds.get(keyword) or "") != given:
            problems.append(Problem(
                f"{where}: {words(keyword)} {tag} is {ds.get(keyword) or '(absent)'}, not the "
                f"{given} the Output Information Sequence names", keyword))
    return problems


def _named_tasks(ds: Dataset) -> set[str]:
    """The UPS the object names; an item of another class (a Modality Performed
    Procedure Step of the acquisition, say) names no task."""
    return {str(item.ReferencedSOPInstanceUID)
            for item in ds.get("ReferencedPerformedProcedureStepSequence") or []
            if item.get("ReferencedSOPInstanceUID")
            and item.get("ReferencedSOPClassUID", UPS_PUSH_SOP_CLASS) == UPS_PUSH_SOP_CLASS}


# -- (c) the performer ---------------------------------------------------------------------
@dataclass
class _Person:
    login: str
    name: str
    name_source: str
    login_source: str

    def __str__(self) -> str:
        """The person as the object names it, with the attributes, for a message."""
        parts = []
        if self.name:
            parts.append(f"{self.name_source} '{self.name}'")
        if self.login:
            parts.append(f"login '{self.login}' in {self.login_source}")
        return ", ".join(parts) + ("," if len(parts) > 1 else "")


_SEG_NAME = "Content Creator's Name (0070,0084)"
_SEG_LOGIN = "Content Creator's Identification Code Sequence (0070,0086)"
_SR_NAME = "Person Observer Name (121008)"
_SR_LOGIN = "Person Observer's Login Name (128774)"


def _seg_people(ds: Dataset, record: ResultRecord) -> list[_Person]:
    # PS3.3 10.9 Content Identification Macro: Content Creator's Name (0070,0084),
    # Content Creator's Identification Code Sequence (0070,0086) > Person Identification
    # Code Sequence (0040,1101) (PS3.3 10.1); a login is a code of scheme L (other
    # codes, e.g. employee numbers, are not logins).
    name = _pn(ds.get("ContentCreatorName")) or record.person_name
    login = record.person_login
    for ident in ds.get("ContentCreatorIdentificationCodeSequence") or []:
        for code in ident.get("PersonIdentificationCodeSequence") or []:
            if code.get("CodingSchemeDesignator") in LOGIN_SCHEMES and code.get("CodeValue"):
                login = login or str(code.CodeValue)
    if not (login or name):
        return []
    return [_Person(login, name, _SEG_NAME, _SEG_LOGIN)]


def _sr_people(ds: Dataset, record: ResultRecord) -> list[_Person]:
    """Person observers of the document's observation context (TID 1002 Observer Context
    as HAS OBS CONTEXT children of the root: Observer Type (121005) starts an observer;
    TID 1003 Person Observer Name (121008), Person Observer's Login Name (128774)), then
    Author Observer Sequence (0040,A078) persons (PS3.3 C.17.2.2)."""
    people: list[_Person] = []
    current: dict[str, str] | None = None
    observers: list[dict[str, str]] = []
    for item in ds.get("ContentSequence") or []:
        if item.get("RelationshipType") != "HAS OBS CONTEXT":
            continue
        concept = concept_code(item)
        if concept == ("121005", "DCM"):
            code = (item.get("ConceptCodeSequence") or [Dataset()])[0]
            current = {"type": str(code.get("CodeValue", ""))}
            observers.append(current)
        elif concept in (("121008", "DCM"), ("128774", "DCM")):
            if current is None or current.get("type") == "121007":
                current = {"type": "121006"}  # Observer Type absent: a person (TID 1002)
                observers.append(current)
            key = "name" if concept[0] == "121008" else "login"
            current[key] = _pn(item.get("PersonName")) if key == "name" \
                else str(item.get("TextValue", ""))
    for obs in observers:
        if obs.get("type") == "121006" and (obs.get("login") or obs.get("name")):
            people.append(_Person(obs.get("login", ""), obs.get("name", ""), _SR_NAME,
                                  _SR_LOGIN))
    for author in ds.get("AuthorObserverSequence") or []:
        if author.get("ObserverType", "PSN") == "PSN" and author.get("PersonName"):
            people.append(_Person("", _pn(author.PersonName),
                                  "Author Observer Sequence (0040,A078) Person Name", ""))
    if not people and (record.person_login or record.person_name):
        people.append(_Person(record.person_login, record.person_name, _SR_NAME, _SR_LOGIN))
    return people


def _is(person: _Person, performer: Performer) -> bool:
    if person.login and performer.login:
        return person.login == performer.login  # a login decides over a name
    return _same_name(person.name, performer.name)


def _performer_problems(kind: str, ds: Dataset, record: ResultRecord, task: _Task,
                        where: str) -> list[Problem]:
    people = _seg_people(ds, record) if kind == "SEG" else _sr_people(ds, record)
    attribute = "ContentCreatorName" if kind == "SEG" else "ContentSequence"
    if people:
        if not task.performers or any(_is(p, q) for p in people for q in task.performers):
            return []
        person, performer = people[0], task.performers[0]
        others = "" if len(task.performers) == 1 else \
            f" (nor any of the workitem's {len(task.performers)} performers)"
        if kind == "SEG" and person.login and performer.login:
            attribute = "ContentCreatorIdentificationCodeSequence"
        return [Problem(f"{where}: {person} is not the performer {performer}{others}",
                        attribute)]
    nobody = ("names no person: Content Creator's Name (0070,0084) is empty" if kind == "SEG"
              else "names no person observer (TID 1002 Observer Context, Person Observer "
                   "Name (121008))")
    if task.performers:
        return [Problem(f"{where} {nobody}, but the workitem's performer is "
                        f"{task.performers[0]}", attribute)]
    # A result of an algorithm alone: accepted only when it names the algorithm.
    if kind == "SEG":
        manual = [s for s in ds.SegmentSequence if s.get("SegmentAlgorithmType") != "AUTOMATIC"]
        if manual:
            return [Problem(f"{where} {nobody}, yet segment {manual[0].get('SegmentNumber')} "
                            f"has Segment Algorithm Type (0062,0008) "
                            f"{manual[0].get('SegmentAlgorithmType')}: a result without a "
                            "person must be AUTOMATIC", "SegmentAlgorithmType")]
        return []
    devices = [item for item in ds.get("ContentSequence") or []
               if item.get("RelationshipType") == "HAS OBS CONTEXT"
               and concept_code(item) in (("121012", "DCM"), ("121013", "DCM"))]
    if devices or record.device_name or any(i.algorithm_name for i in record.items):
        return []
    return [Problem(f"{where} {nobody} and no device observer (TID 1004, Device Observer "
                    "UID (121012)) or algorithm (TID 4019)", "ContentSequence")]


# -- (d) the label set ---------------------------------------------------------------------
def _label_problems(ds: Dataset, label_set: LabelSet, where: str) -> list[Problem]:
    known = {(label.type.value, label.type.scheme) for label in label_set.labels}
    names = ", ".join(label.name for label in label_set.labels)
    problems = []
    for seg in ds.SegmentSequence:
        code = seg.SegmentedPropertyTypeCodeSequence[0]
        value = str(code.get("CodeValue") or code.get("LongCodeValue") or code.get("URNCodeValue"))
        if (value, str(code.CodingSchemeDesignator)) not in known:
            problems.append(Problem(
                f"{where}: segment {seg.get('SegmentNumber')} '{seg.get('SegmentLabel')}': "
                f"Segmented Property Type Code Sequence (0062,000F) ({value}, "
                f"{code.CodingSchemeDesignator}, '{code.get('CodeMeaning', '')}') is not in the "
                f"task's label set '{label_set.name}' ({names})",
                "SegmentedPropertyTypeCodeSequence"))
    return problems


# -- (b) the inputs --------------------------------------------------------------------------
def _references(ds: Dataset, record: ResultRecord) -> set[str]:
    """Every series and instance UID the object references: the reader's record, the
    Referenced Series Sequence (0008,1115, PS3.3 C.12.2 Common Instance Reference), the SR
    evidence sequences (0040,A375 / 0040,A385, PS3.3 C.17.2.3), its predecessors (a
    review's input is the report it supersedes) and SR content items (IMAGE/COMPOSITE
    references, UIDREF values such as 121232 Source series)."""
    refs = set(record.referenced_series) | set(record.referenced_instances) \
        | set(record.predecessors)

    def series_items(items: Any) -> None:
        for item in items or []:
            if item.get("SeriesInstanceUID"):
                refs.add(str(item.SeriesInstanceUID))
            for ref in item.get("ReferencedSOPSequence") or item.get("ReferencedInstanceSequence") \
                    or []:
                if ref.get("ReferencedSOPInstanceUID"):
                    refs.add(str(ref.ReferencedSOPInstanceUID))

    series_items(ds.get("ReferencedSeriesSequence"))
    for keyword in ("CurrentRequestedProcedureEvidenceSequence", "PertinentOtherEvidenceSequence",
                    "StudiesContainingOtherReferencedInstancesSequence"):
        for study in ds.get(keyword) or []:
            series_items(study.get("ReferencedSeriesSequence"))
    for _path, item in walk(ds.get("ContentSequence"), ""):
        for ref in item.get("ReferencedSOPSequence") or []:
            if ref.get("ReferencedSOPInstanceUID"):
                refs.add(str(ref.ReferencedSOPInstanceUID))
        if item.get("ValueType") == "UIDREF" and item.get("UID"):
            refs.add(str(item.UID))
    return refs


def _input_problem(kind: str, refs: set[str], task: _Task, where: str) -> Problem | None:
    inputs = task.input_series | task.input_instances
    if not inputs or refs & inputs:
        return None  # a workitem without inputs gives nothing to check against
    listed = sorted(task.input_series) or sorted(task.input_instances)
    more = f" and {len(listed) - 1} more" if len(listed) > 1 else ""
    if kind == "SEG":
        return Problem(f"{where}: Referenced Series Sequence (0008,1115) names none of the "
                       f"workitem's inputs (Input Information Sequence (0040,4021): "
                       f"{listed[0]}{more})", "ReferencedSeriesSequence")
    return Problem(f"{where}: references none of the workitem's inputs (Input Information "
                   f"Sequence (0040,4021): {listed[0]}{more}), neither in Current Requested "
                   "Procedure Evidence Sequence (0040,A375) nor through a SEG of this "
                   "completion", "CurrentRequestedProcedureEvidenceSequence")
