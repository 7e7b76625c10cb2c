"""Routing rules: which arriving studies become which annotation workitems (issue 5).

A PACS administrator writes the rules in the server's TOML file::

    [[routing.rules]]
    name = "liver-ct"
    match = { Modality = "CT", StudyDescription = "re:(?i)liver", StudyDate = "20260101-" }
    worklist_label = "liver-2026"             # the project
    procedure_step_label = "Liver lesions {AccessionNumber}"   # {Keyword} from the study
    workitem_code = ["SEG", "99WORKLIST", "Segmentation"]
    priority = "MEDIUM"                        # HIGH, MEDIUM, LOW
    expected_completion = "24h"                # after arrival: 30m, 24h, 7d
    label_set = "liver-lesions"
    readers = ["reader1", { login = "reader2", name = "Reader^Two", organization = "Lab" }]

A match value is an exact value, a wildcard (``*``, ``?``: PS3.4 C.2.2.2.4), a regular
expression (``re:...``, searched), a range ``A-B`` / ``A-`` / ``-B`` for DA, DT and TM
attributes (PS3.4 C.2.2.2.5), or a list of those (any).  Multi-valued attributes (e.g.
the Modality of several series) match when any value does; an absent attribute never
matches.  Each listed reader gets a workitem (Scheduled Human Performers); no readers
gives one unassigned workitem for a pull pool (annotation-model.md §3.5).

Rules are checked at start-up (:func:`parse_rules`); a bad one is refused with the rule
and field named.  Workitem UIDs derive from (study, rule, reader), so applying a rule to
a study twice creates nothing new: the second creation is a duplicate and is ignored.
"""

from __future__ import annotations

import datetime as _dt
import logging
import re
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from sqlalchemy import select

from . import errors
from .dicomjson import dataset_to_json_dict
from .labelsets import LabelSet, LabelSetError, load_label_sets, to_processing_parameters
from .orthanc import OrthancClient, OrthancNotFound
from .sample import code_item, instances_item
from .schema import routed
from .service import Actor, WorklistService, now_dt
from .store import Store

__all__ = ["RoutingError", "Reader", "Rule", "StudyInfo", "SeriesInfo", "parse_rules",
           "DEFAULT_RULES", "read_study", "build_workitem", "workitem_uid", "Router"]

log = logging.getLogger("worklist.routing")

DEFAULT_RULES: list[dict[str, Any]] = [{
    "name": "default", "match": {}, "worklist_label": "default",
    "procedure_step_label": "Segmentation", "workitem_code": ["SEG", "99WORKLIST", "Segmentation"],
    "priority": "MEDIUM", "label_set": "default",
}]
"""Every new study → one unassigned segmentation workitem in the ``default`` worklist,
with the ``default`` label set when the label sets define one."""

_FIELDS = {"name", "match", "worklist_label", "procedure_step_label", "workitem_code",
           "priority", "expected_completion", "label_set", "readers"}
_OFFSET = re.compile(r"^\s*(\d+)\s*(m|min|minutes?|h|hours?|d|days?)\s*$")
_RANGE_VRS = {"DA", "DT", "TM"}
_RANGE_BOUND = {"DA": re.compile(r"^\d{8}$"), "TM": re.compile(r"^\d{2,6}(\.\d{1,6})?$"),
                "DT": re.compile(r"^\d{4,14}(\.\d{1,6})?([+-]\d{4})?$")}


class RoutingError(ValueError):
    """A routing rule is invalid; the message names the rule and the field."""


@dataclass(frozen=True)
class Reader:
    login: str
    name: str
    organization: str = ""


@dataclass(frozen=True)
class _Pattern:
    kind: str  # "equal", "wildcard", "regex", "range"
    value: Any

    def matches(self, candidate: str) -> bool:
        if self.kind == "equal":
            return candidate == self.value
        if self.kind == "wildcard":  # PS3.4 C.2.2.2.4: * any run, ? one character
            return self.value.fullmatch(candidate) is not None
        if self.kind == "regex":
            return self.value.search(candidate) is not None
        low, high = self.value  # PS3.4 C.2.2.2.5: inclusive, either end open
        return (not low or candidate >= low) and (not high or candidate[:len(high)] <= high)


@dataclass(frozen=True)
class Rule:
    name: str
    match: tuple[tuple[str, tuple[_Pattern, ...]], ...]
    worklist_label: str = "default"
    procedure_step_label: str = "Segmentation"
    workitem_code: tuple[str, str, str] = ("SEG", "99WORKLIST", "Segmentation")
    priority: str = "MEDIUM"
    expected_completion: _dt.timedelta | None = None
    label_set: LabelSet | None = None
    """The picklist the tasks carry (issue 6: Scheduled Processing Parameters)."""
    readers: tuple[Reader, ...] = ()

    def why_not(self, attrs: dict[str, list[str]]) -> str | None:
        """None when the study matches; otherwise the reason, for the log."""
        for keyword, patterns in self.match:
            vals = attrs.get(keyword) or []
            if not vals:
                return f"{keyword} is absent"
            if not any(p.matches(v) for p in patterns for v in vals):
                return f"{keyword} does not match"
        return None


def _pattern(keyword: str, text: Any, where: str) -> _Pattern:
    if not isinstance(text, (str, int)):
        raise RoutingError(f"{where}: a match value must be a string, not {text!r}")
    text = str(text)
    if text.startswith("re:"):
        try:
            return _Pattern("regex", re.compile(text[3:]))
        except re.error as exc:
            raise RoutingError(f"{where}: invalid regular expression {text[3:]!r}: {exc}") \
                from None
    vr = dictionary_VR(tag_for_keyword(keyword))
    if vr in _RANGE_VRS and "-" in text and not _RANGE_BOUND[vr].fullmatch(text):
        low, _, high = text.partition("-")
        for bound in (low, high):
            if bound and not _RANGE_BOUND[vr].match(bound):
                raise RoutingError(f"{where}: {bound!r} is not a valid {vr} bound in range "
                                   f"{text!r}")
        if not low and not high:
            raise RoutingError(f"{where}: the range {text!r} has no bounds")
        return _Pattern("range", (low, high))
    if "*" in text or "?" in text:
        regex = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in text)
        return _Pattern("wildcard", re.compile(regex, re.DOTALL))
    return _Pattern("equal", text)


def _reader(value: Any, where: str) -> Reader:
    if isinstance(value, str) and value:
        return Reader(value, value.title())
    if isinstance(value, dict) and isinstance(value.get("login"), str) and value["login"]:
        extra = set(value) - {"login", "name", "organization"}
        if extra:
            raise RoutingError(f"{where}: unknown reader field(s) {', '.join(sorted(extra))}")
        return Reader(value["login"], str(value.get("name") or value["login"].title()),
                      str(value.get("organization") or ""))
    raise RoutingError(f"{where}: a reader is a login or {{login=, name=, organization=}}, "
                       f"not {value!r}")


def parse_rules(raw: list[dict[str, Any]] | None,
                label_sets: dict[str, LabelSet] | None = None) -> list[Rule]:
    """Check and compile the ``[[routing.rules]]`` tables (None: :data:`DEFAULT_RULES`).
    A rule's ``label_set`` must name one of ``label_sets`` (default: the sets of
    ``config/labelsets.toml``)."""
    if raw is None:
        raw = DEFAULT_RULES
        if label_sets is None:
            try:
                label_sets = load_label_sets()
            except LabelSetError as exc:
                raise RoutingError(str(exc)) from None
        if "default" not in label_sets:
            raw = [{k: v for k, v in rule.items() if k != "label_set"} for rule in raw]
    rules, names = [], set()
    for index, spec in enumerate(raw, 1):
        if not isinstance(spec, dict):
            raise RoutingError(f"routing rule {index}: must be a table")
        name = spec.get("name") or f"rule{index}"
        rule_id = f"routing rule {index} ('{name}')"
        if not isinstance(name, str) or name in names:
            raise RoutingError(f"{rule_id}, field name: must be a unique string")
        names.add(name)
        unknown = set(spec) - _FIELDS
        if unknown:
            raise RoutingError(f"{rule_id}: unknown field(s) {', '.join(sorted(unknown))}")
        match = spec.get("match", {})
        if not isinstance(match, dict):
            raise RoutingError(f"{rule_id}, field match: must be a table of keyword = pattern")
        compiled = []
        for keyword, value in match.items():
            where = f"{rule_id}, field match.{keyword}"
            tag = tag_for_keyword(keyword)
            if tag is None:
                raise RoutingError(f"{where}: '{keyword}' is not a DICOM keyword")
            if dictionary_VR(tag) == "SQ":
                raise RoutingError(f"{where}: sequences cannot be matched")
            items = value if isinstance(value, list) else [value]
            compiled.append((keyword, tuple(_pattern(keyword, v, where) for v in items)))
        kwargs: dict[str, Any] = {}
        for key in ("worklist_label", "procedure_step_label", "label_set"):
            if key in spec:
                if not isinstance(spec[key], str) or not spec[key] or len(spec[key]) > 64:
                    raise RoutingError(f"{rule_id}, field {key}: a text of 1-64 characters")
                kwargs[key] = spec[key]
        if "label_set" in kwargs:
            if label_sets is None:
                try:
                    label_sets = load_label_sets()
                except LabelSetError as exc:
                    raise RoutingError(str(exc)) from None
            if kwargs["label_set"] not in label_sets:
                known = ", ".join(sorted(label_sets)) or "none are defined"
                raise RoutingError(f"{rule_id}, field label_set: no label set "
                                   f"'{kwargs['label_set']}' (known: {known})")
            kwargs["label_set"] = label_sets[kwargs["label_set"]]
        if "workitem_code" in spec:
            code = spec["workitem_code"]
            if isinstance(code, dict):
                code = [code.get("value"), code.get("scheme"), code.get("meaning")]
            if not (isinstance(code, list) and len(code) == 3
                    and all(isinstance(c, str) and c for c in code)):
                raise RoutingError(f"{rule_id}, field workitem_code: [value, scheme, meaning]")
            kwargs["workitem_code"] = tuple(code)
        if "priority" in spec:
            if spec["priority"] not in ("HIGH", "MEDIUM", "LOW"):
                raise RoutingError(f"{rule_id}, field priority: HIGH, MEDIUM or LOW, not "
                                   f"{spec['priority']!r}")
            kwargs["priority"] = spec["priority"]
        if "expected_completion" in spec:
            m = _OFFSET.match(str(spec["expected_completion"]))
            if not m:
                raise RoutingError(f"{rule_id}, field expected_completion: an offset like "
                                   f"'30m', '24h' or '7d', not {spec['expected_completion']!r}")
            unit = {"m": "minutes", "h": "hours", "d": "days"}[m.group(2)[0]]
            kwargs["expected_completion"] = _dt.timedelta(**{unit: int(m.group(1))})
        readers = spec.get("readers", [])
        if not isinstance(readers, list):
            raise RoutingError(f"{rule_id}, field readers: a list of readers")
        kwargs["readers"] = tuple(_reader(r, f"{rule_id}, field readers")
                                  for r in readers)
        if len({r.login for r in kwargs["readers"]}) != len(kwargs["readers"]):
            raise RoutingError(f"{rule_id}, field readers: a reader is listed twice")
        rules.append(Rule(name, tuple(compiled), **kwargs))
    return rules


# -- what we know of a study in the image store -------------------------------------------
@dataclass
class SeriesInfo:
    uid: str
    instances: list[tuple[str, str]]
    """(SOP Class UID, SOP Instance UID) of each instance."""


@dataclass
class StudyInfo:
    orthanc_id: str
    uid: str
    attrs: dict[str, list[str]]
    series: list[SeriesInfo] = field(default_factory=list)

    def first(self, keyword: str) -> str:
        vals = self.attrs.get(keyword) or [""]
        return vals[0]


def _add(attrs: dict[str, list[str]], tags: dict[str, Any]) -> None:
    for keyword, value in tags.items():
        if isinstance(value, str) and value not in attrs.setdefault(keyword, []):
            attrs[keyword].extend(v for v in value.split("\\") if v not in attrs[keyword])


def read_study(client: OrthancClient, orthanc_id: str) -> StudyInfo:
    """Study, patient, series and shared instance attributes of a study in Orthanc.
    Raises OrthancNotFound when the study is gone."""
    study = client.study(orthanc_id)
    attrs: dict[str, list[str]] = {}
    _add(attrs, client.shared_tags("studies", orthanc_id))
    _add(attrs, study.get("PatientMainDicomTags", {}))
    _add(attrs, study.get("MainDicomTags", {}))
    info = StudyInfo(orthanc_id, study["MainDicomTags"]["StudyInstanceUID"], attrs)
    for series in client.study_series(orthanc_id):
        _add(attrs, series.get("MainDicomTags", {}))
        shared = client.shared_tags("series", series["ID"])
        sop_class = shared.get("SOPClassUID")
        instances = []
        for inst in client.series_instances(series["ID"]):
            cls = sop_class if isinstance(sop_class, str) else \
                client.get(f"/instances/{inst['ID']}/metadata/SopClassUid")
            instances.append((cls, inst["MainDicomTags"]["SOPInstanceUID"]))
        instances.sort(key=lambda i: i[1])
        info.series.append(SeriesInfo(series["MainDicomTags"]["SeriesInstanceUID"], instances))
    info.series.sort(key=lambda s: s.uid)
    attrs.setdefault("ModalitiesInStudy", attrs.get("Modality", []))
    return info


# -- the workitem a rule creates -------------------------------------------------------------
def workitem_uid(study_uid: str, rule: str, reader: str) -> str:
    """A UID fixed by (study, rule, reader): PS3.5 B.2, UUID-derived under 2.25."""
    return "2.25." + str(uuid.uuid5(uuid.NAMESPACE_OID, f"{study_uid}|{rule}|{reader}").int)


def input_information(study: StudyInfo, aet: str, dicomweb_url: str) -> list[Dataset]:
    """PS3.3 Table 10-3b Referenced Instances and Access Macro, one item per series, with
    both a DICOM Retrieval item (C-MOVE/C-GET from Orthanc's AE) and a WADO-RS one."""
    return [instances_item(study.uid, series.uid, series.instances, aet=aet,
                           dicomweb_root=dicomweb_url) for series in study.series]


def output_destination(aet: str, dicomweb_url: str) -> list[Dataset]:
    """PS3.4 Table CC.2.5-3 Output Destination Sequence: store results in Orthanc."""
    dicom, stow, item = Dataset(), Dataset(), Dataset()
    dicom.DestinationAE = aet
    stow.StorageURL = f"{dicomweb_url}/studies"
    item.DICOMStorageSequence = [dicom]
    item.STOWRSStorageSequence = [stow]
    return [item]


def _label(rule: Rule, study: StudyInfo, reader: Reader | None, k: int) -> str:
    text = re.sub(r"\{(\w+)\}", lambda m: reader.login if m.group(1) == "reader" and reader
                  else study.first(m.group(1)), rule.procedure_step_label)
    if len(rule.readers) > 1 and "{reader}" not in rule.procedure_step_label:
        text += f" - read {k}/{len(rule.readers)}"  # annotation-model §3.5
    return text[:64]


def build_workitem(rule: Rule, study: StudyInfo, reader: Reader | None, k: int, *,
                   ready: bool, aet: str, dicomweb_url: str, now: _dt.datetime) -> dict[str, Any]:
    """The N-CREATE dataset (PS3.4 Table CC.2.5-3, every Type 1 and 2 attribute)."""
    from .sample import new_workitem, performer_item

    params = to_processing_parameters(rule.label_set) if rule.label_set else []
    ds = new_workitem(
        label=_label(rule, study, reader, k), worklist_label=rule.worklist_label,
        priority=rule.priority, start=now_dt(lambda: now),
        workitem_code=code_item(*rule.workitem_code),
        # Human Performer's Organization is Type 1 (PS3.4 Table CC.2.5-3): the project
        # stands in when the rule names none.
        performers=([performer_item(reader.login, reader.name,
                                    reader.organization or rule.worklist_label)]
                    if reader else []),
        expected_completion=(now_dt(lambda: now + rule.expected_completion)
                             if rule.expected_completion is not None else None),
        readiness="READY" if ready else "INCOMPLETE",
        processing_parameters=params,
        inputs=input_information(study, aet, dicomweb_url),
        outputs=output_destination(aet, dicomweb_url),
        study_uid=study.uid,  # outputs join the input study (annotation-model §3.4)
        patient_name=study.first("PatientName"), patient_id=study.first("PatientID"),
        birth_date=study.first("PatientBirthDate"), sex=study.first("PatientSex"),
        accession=study.first("AccessionNumber")[:16],
        procedure_description=study.first("StudyDescription")[:64])
    return dataset_to_json_dict(ds)


# -- applying rules, through the service layer ------------------------------------------------
class Router:
    """Applies the rules to studies in Orthanc; every workitem is made by the service."""

    def __init__(self, service: WorklistService, store: Store, client: OrthancClient,
                 rules: list[Rule], *, actor: Actor | None = None) -> None:
        self.service, self.store, self.client, self.rules = service, store, client, rules
        self.actor = actor or Actor.internal("routing")

    def route(self, orthanc_id: str, *, stable: bool,
              select_attrs: Iterable[tuple[str, Any]] = ()) -> list[str]:
        """Apply the rules to one study (idempotent); when ``stable``, its workitems get
        their final inputs and become READY.  Returns the UIDs created now."""
        try:
            study = read_study(self.client, orthanc_id)
        except OrthancNotFound:
            log.info("study %s is no longer in Orthanc: not routed", orthanc_id)
            return []
        for keyword, pattern in select_attrs:
            if not any(pattern.matches(v) for v in study.attrs.get(keyword, [])):
                return []
        created = []
        now = _dt.datetime.now(_dt.timezone.utc)
        with self.store.transaction() as conn:
            done = {(r.rule, r.reader) for r in conn.execute(
                select(routed.c.rule, routed.c.reader).where(routed.c.study_uid == study.uid))}
        for rule in self.rules:
            reason = rule.why_not(study.attrs)
            if reason is not None:
                log.info("study %s: rule '%s' does not apply (%s)", orthanc_id, rule.name, reason)
                continue
            targets: list[Reader | None] = list(rule.readers) or [None]
            for k, reader in enumerate(targets, 1):
                login = reader.login if reader else ""
                if (rule.name, login) in done:
                    continue  # routed before
                uid = workitem_uid(study.uid, rule.name, login)
                ds = build_workitem(rule, study, reader, k, ready=stable,
                                    aet=self.client.aet, dicomweb_url=self.client.dicomweb_url,
                                    now=now)
                try:
                    self.service.create(ds, uid, self.actor)
                    created.append(uid)
                except errors.DuplicateWorkitem:
                    pass  # routed before (perhaps before a crash): idempotent
                self._remember(study.uid, rule.name, login, uid,
                               ready=stable and uid in created)
        if stable:
            self._make_ready(study)
        return created

    def _remember(self, study_uid: str, rule: str, reader: str, uid: str, *,
                  ready: bool) -> None:
        with self.store.transaction(write=True) as conn:
            exists = conn.execute(select(routed.c.workitem_uid).where(
                routed.c.study_uid == study_uid, routed.c.rule == rule,
                routed.c.reader == reader)).first()
            if exists is None:
                conn.execute(routed.insert().values(study_uid=study_uid, rule=rule,
                                                    reader=reader, workitem_uid=uid,
                                                    ready=ready))

    def _make_ready(self, study: StudyInfo) -> None:
        """StableStudy: complete the Input Information Sequence and set READY (PS3.4
        CC.2.4: the change of Input Readiness State is reported as a UPS State Report)."""
        with self.store.transaction() as conn:
            rows = conn.execute(select(routed.c.workitem_uid).where(
                routed.c.study_uid == study.uid, routed.c.ready.is_(False))).all()
        if not rows:
            return
        changes = Dataset()
        changes.InputReadinessState = "READY"
        changes.InputInformationSequence = input_information(study, self.client.aet,
                                                             self.client.dicomweb_url)
        body = dataset_to_json_dict(changes)
        for (uid,) in rows:
            try:
                self.service.update(uid, body, None, self.actor)
            except (errors.MayNoLongerBeUpdated, errors.WrongTransactionUID,
                    errors.NoSuchWorkitem, errors.WorkitemGone) as exc:
                # claimed, finished or deleted meanwhile: its performer owns it now
                log.info("workitem %s not made READY: %s", uid, exc.message)
            with self.store.transaction(write=True) as conn:
                conn.execute(routed.update().where(routed.c.workitem_uid == uid)
                             .values(ready=True))
