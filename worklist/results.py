"""The result index: provenance of every SEG/SR linked to a completed workitem (issue 6).

At completion (:meth:`ResultOperations._check_results`, called by
:meth:`worklist.service.WorklistService.change_state`) each SEG/SR output is checked
(:mod:`worklist.resultcheck`) and its provenance record written to ``results``,
``result_items`` and ``result_refs`` (schema v4) in the transaction that makes the
workitem COMPLETED: a result is indexed if and only if its task completed.

The reviewer's query (:func:`parse_query`, :meth:`ResultOperations.search_results`)
answers from these tables alone, never from Orthanc: one flat row per item (segment,
measurement, evaluation) joined with its result.  A result's *verdict* is the latest
verdict of a review SR that names it as a predecessor (Predecessor Documents Sequence,
PS3.3 C.17.2.3) or references it; ``verdict=REJECTED`` finds every result some review
rejected.

A SOP instance is the result of one task: a completion linking an instance already
indexed for another workitem is refused (C304).  A reviewer who changes a reader's
report writes a new SR with the reader's as predecessor, as PS3.3 C.17.2.3 intends.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from sqlalchemy import and_, exists, func, insert, select
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from . import errors
from .dicomjson import first, normalize_dt
from .orthanc import ImageStore
from .provenance import ResultRecord, RoleValues
from .resultcheck import check_results, result_outputs
from .resultfilters import DEFAULT_LIMIT, FILTERS, MAX_LIMIT
from .schema import result_items, result_refs, results
from .status import Status

__all__ = ["ResultQuery", "parse_query", "FILTERS", "ROW_FIELDS", "to_csv", "ResultOperations",
           "NoSuchResult", "index_results", "VERDICT_CONCEPTS"]

Json = dict[str, Any]

VERDICT_CONCEPTS = ("Review verdict",)
"""Concept meanings of an SR evaluation that is a reviewer's verdict on the results the
review names: ``sr.build.REVIEW_VERDICT`` (VERDICT, 99WORKLIST); its value's meaning
(Accepted, Rejected, Needs revision) is the verdict, compared case-insensitively."""


ROW_FIELDS = (
    "task", "worklist", "kind", "sop_instance_uid", "study_uid", "series_uid", "reader",
    "reader_name", "organization", "role", "device", "content_datetime", "verification_flag",
    "verifying_observer", "predecessors", "verdict", "verdict_by", "item", "label",
    "segment_number", "property_type", "algorithm_type", "algorithm_name", "algorithm_version",
    "concept", "value", "unit", "text", "sop_class_uid", "indexed_at")
"""The columns of a query row, in CSV order."""


class NoSuchResult(errors.UPSError):
    """No indexed result has this SOP Instance UID (0x0112 / 404)."""

    status = Status.NO_SUCH_SOP_INSTANCE
    http_status = 404


# -- the query -------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResultQuery:
    worklist: str | None = None
    task: str | None = None
    reader: str | None = None
    role: str | None = None
    kind: str | None = None
    study: str | None = None
    label: str | None = None
    concept: str | None = None
    finding: str | None = None
    verdict: str | None = None
    algorithm: str | None = None
    algorithm_type: str | None = None
    since: str | None = None
    """Normalised (UTC, :func:`normalize_dt`) lower bound."""
    until: str | None = None
    limit: int = DEFAULT_LIMIT
    offset: int = 0


def _when(name: str, text: str, upper: bool) -> str:
    raw = text.strip()
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}([T ][\d:.]+)?(Z|[+-]\d{2}:?\d{2})?", raw):
        try:  # ISO 8601, as people and spreadsheets write it
            when = _dt.datetime.fromisoformat(raw.replace("Z", "+00:00"))
        except ValueError:
            raise errors.InvalidRequest(f"{name}: '{text}' is not a valid date-time") from None
        raw = when.strftime("%Y%m%d") if len(raw) == 10 else (
            when.strftime("%Y%m%d%H%M%S") + (f".{when.microsecond:06d}" if when.microsecond
                                              else "") + when.strftime("%z"))
    try:
        return normalize_dt(raw, upper=upper)
    except errors.UPSError:
        raise errors.InvalidRequest(f"{name}: '{text}' is not a date (YYYYMMDD), a DICOM "
                                    "date-time (YYYYMMDDHHMMSS) or an ISO 8601 date-time") \
            from None


def _int(name: str, text: str, low: int, high: int) -> int:
    if not re.fullmatch(r"\d+", text.strip()):
        raise errors.InvalidRequest(f"{name}: '{text}' is not a whole number")
    value = int(text)
    if not low <= value <= high:
        raise errors.InvalidRequest(f"{name}: {value} is outside {low}..{high}")
    return value


def parse_query(params: Iterable[tuple[str, str]]) -> ResultQuery:
    """A query from ``(name, value)`` pairs (URL query or command-line options); an
    unknown name, a repeated one or a bad value is InvalidRequest naming it."""
    given: dict[str, str] = {}
    for name, value in params:
        key = name.strip().lower().replace("-", "_")
        if key not in FILTERS:
            raise errors.InvalidRequest(f"Unknown filter '{name}': use "
                                        f"{', '.join(FILTERS)} (and format=csv)")
        if key in given:
            raise errors.InvalidRequest(f"Filter '{name}' is given twice")
        if "\x00" in value:
            raise errors.InvalidRequest(f"Filter '{name}' holds a NUL character")
        given[key] = value
    out: dict[str, Any] = {}
    for key, value in given.items():
        value = value.strip()
        if not value:
            continue
        if key == "kind":
            if value.upper() not in ("SEG", "SR"):
                raise errors.InvalidRequest(f"kind: '{value}' is not SEG or SR")
            value = value.upper()
        elif key == "algorithm_type":
            if value.upper() not in ("MANUAL", "SEMIAUTOMATIC", "AUTOMATIC"):
                raise errors.InvalidRequest(f"algorithm_type: '{value}' is not MANUAL, "
                                            "SEMIAUTOMATIC or AUTOMATIC")
            value = value.upper()
        elif key == "role":
            known = {r.value.lower(): r.value for r in RoleValues}
            value = known.get(value.lower(), value)
        elif key == "verdict":
            value = value.upper()
        elif key in ("since", "until"):
            value = _when(key, value, upper=key == "until")
        elif key == "limit":
            value = _int(key, value, 1, MAX_LIMIT)
        elif key == "offset":
            value = _int(key, value, 0, 1 << 62)
        out[key] = value
    return ResultQuery(**out)


def _like(column: Any, pattern: str) -> Any:
    """Exact, or a DICOM-style wildcard match (``*`` any run, ``?`` one character)."""
    if "*" not in pattern and "?" not in pattern:
        return column == pattern
    escaped = re.sub(r"([%_\\])", r"\\\1", pattern).replace("*", "%").replace("?", "_")
    return column.like(escaped, escape="\\")


def _verdict_source(judged: Any) -> tuple[Any, Any, Any, list[Any]]:
    """The review results and their verdict items that judge ``judged``."""
    ref, review, item = result_refs.alias("vref"), results.alias("review"), \
        result_items.alias("vitem")
    where = [ref.c.referenced_uid == judged, ref.c.relation.in_(("PREDECESSOR", "INSTANCE")),
             review.c.sop_instance_uid == ref.c.result_uid,
             item.c.result_uid == review.c.sop_instance_uid, item.c.kind == "evaluation",
             item.c.concept.in_(VERDICT_CONCEPTS)]
    return ref, review, item, where


def _latest_verdict(column: str) -> Any:
    _ref, review, item, where = _verdict_source(results.c.sop_instance_uid)
    value = item.c.text if column == "text" else review.c.person_login
    return (select(value).where(*where)
            .order_by(review.c.content_datetime.desc(), review.c.indexed_at.desc())
            .limit(1).scalar_subquery())


def _conditions(q: ResultQuery) -> list[Any]:
    r, i = results.c, result_items.c
    where: list[Any] = []
    if q.worklist:
        where.append(_like(r.worklist_label, q.worklist))
    if q.task:
        where.append(r.workitem_uid == q.task)
    if q.reader:
        where.append(r.person_login == q.reader)
    if q.role:
        where.append(func.lower(r.role) == q.role.lower())
    if q.kind:
        where.append(r.kind == q.kind)
    if q.study:
        where.append(r.study_uid == q.study)
    if q.since:
        where.append(r.content_datetime >= q.since)
    if q.until:
        where.append(r.content_datetime <= q.until)
    if q.label:
        where.append(_like(i.label, q.label))
    if q.concept:
        where.append(_like(i.concept, q.concept))
    if q.finding:
        where.append(_like(i.property_type, q.finding))
    if q.algorithm:
        where.append(_like(i.algorithm_name, q.algorithm))
    if q.algorithm_type:
        where.append(i.algorithm_type == q.algorithm_type)
    if q.verdict:
        _ref, _review, item, clauses = _verdict_source(r.sop_instance_uid)
        where.append(exists().where(*clauses, func.upper(item.c.text) == q.verdict))
    return where


def _row_columns() -> list[Any]:
    r, i = results.c, result_items.c
    return [r.workitem_uid.label("task"), r.worklist_label.label("worklist"), r.kind,
            r.sop_instance_uid, r.study_uid, r.series_uid, r.person_login.label("reader"),
            r.person_name.label("reader_name"), r.organization, r.role,
            r.device_name.label("device"), r.content_datetime, r.verification_flag,
            r.verifying_observer, r.predecessors, _latest_verdict("text").label("verdict"),
            _latest_verdict("login").label("verdict_by"), i.kind.label("item"), i.label,
            i.segment_number, i.property_type, i.algorithm_type, i.algorithm_name,
            i.algorithm_version, i.concept, i.value, i.unit, i.text, r.sop_class_uid,
            r.indexed_at]


def _iso(dt: str | None) -> str | None:
    """A normalised UTC date-time (``YYYYMMDDHHMMSS.ffffff``) as ISO 8601."""
    if not dt:
        return None
    try:
        when = _dt.datetime.strptime(dt, "%Y%m%d%H%M%S.%f")
    except ValueError:
        return dt
    return when.strftime("%Y-%m-%dT%H:%M:%S") + (f".{when.microsecond:06d}"
                                                  if when.microsecond else "") + "Z"


def _row(mapping: Any) -> Json:
    row = {name: mapping[name] for name in ROW_FIELDS}
    row["content_datetime"] = _iso(row["content_datetime"])
    row["predecessors"] = (row["predecessors"] or "").split() or []
    for name, value in row.items():
        if value is None and name not in ("value", "segment_number", "content_datetime"):
            row[name] = ""
    return row


def to_csv(rows: list[Json]) -> str:
    """RFC 4180: a header row, CRLF line ends, fields quoted when they need it."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\r\n", quoting=csv.QUOTE_MINIMAL)
    writer.writerow(ROW_FIELDS)
    for row in rows:
        writer.writerow(["" if row[k] is None else " ".join(row[k]) if isinstance(row[k], list)
                         else repr(row[k]) if isinstance(row[k], float) else row[k]
                         for k in ROW_FIELDS])
    return buf.getvalue()


# -- the index --------------------------------------------------------------------------
def _fit(table: Any, values: dict[str, Any]) -> dict[str, Any]:
    """Values cut to their column's length: a value from another tool may be longer than
    its VR allows, and PostgreSQL refuses what does not fit."""
    out = {}
    for key, value in values.items():
        length = getattr(table.c[key].type, "length", None)
        if isinstance(value, str):
            value = value.replace("\x00", "")
            if length:
                value = value[:length]
        out[key] = value
    return out


def _normalised(dt: str) -> str | None:
    """A DICOM DT as the sortable UTC text of :func:`normalize_dt` (idempotent)."""
    try:
        return normalize_dt(dt) if dt else None
    except errors.UPSError:
        return None


def _algorithms(record: ResultRecord) -> str:
    seen: list[str] = []
    for item in record.items:
        if item.algorithm_name:
            text = f"{item.algorithm_name} {item.algorithm_version}".strip()
            if text not in seen:
                seen.append(text)
    return "; ".join(seen)


def index_results(conn: Connection, records: list[ResultRecord], *, workitem_uid: str,
                  worklist_label: str | None, now: str) -> None:
    """Write the records of one task (in the caller's transaction).

    A SEG states no role (PS3.3 10.9 has none); it takes the role its person has in an SR
    of the same task (a reader's SEG and report are indexed as the reader's)."""
    roles = {r.person_login: str(r.role) for r in records if r.person_login and r.role}
    for record in records:
        if not record.role and record.person_login in roles:
            record.role = roles[record.person_login]
        conn.execute(insert(results), _fit(results, dict(
            sop_instance_uid=record.sop_instance_uid, workitem_uid=workitem_uid,
            worklist_label=worklist_label, kind=record.kind, sop_class_uid=record.sop_class_uid,
            study_uid=record.study_uid or None, series_uid=record.series_uid or None,
            person_login=record.person_login or None, person_name=record.person_name or None,
            organization=record.organization or None, role=str(record.role or "") or None,
            device_name=record.device_name or None, algorithm=_algorithms(record) or None,
            content_datetime=_normalised(record.content_datetime),
            verification_flag=record.verification_flag or None,
            verifying_observer=record.verifying_observer or None,
            predecessors=" ".join(record.predecessors) or None, indexed_at=now)))
        items = [_fit(result_items, dict(
            result_uid=record.sop_instance_uid, kind=item.kind, label=item.label or None,
            segment_number=item.segment_number, property_type=item.property_type or None,
            algorithm_type=item.algorithm_type or None, algorithm_name=item.algorithm_name or None,
            algorithm_version=item.algorithm_version or None, concept=item.concept or None,
            value=item.value if item.value is not None and math.isfinite(item.value) else None,
            unit=item.unit or None, text=item.text or None))
            for item in record.items]
        if items:
            conn.execute(insert(result_items), items)
        refs: dict[tuple[str, str], None] = {}
        for relation, uids in (("PREDECESSOR", record.predecessors),
                               ("INSTANCE", record.referenced_instances),
                               ("SERIES", record.referenced_series)):
            for uid in uids:
                if uid and uid != record.sop_instance_uid:
                    refs[(str(uid)[:64], relation)] = None
        if refs:
            conn.execute(insert(result_refs), [
                dict(result_uid=record.sop_instance_uid, referenced_uid=uid, relation=rel)
                for uid, rel in refs])


# -- the service operations -----------------------------------------------------------------
@dataclass(frozen=True)
class ResultPage:
    rows: list[Json]
    total: int
    """Rows matching, over all pages."""


class ResultOperations:
    """Result checks at completion and the reviewer's query, as methods of
    :class:`worklist.service.WorklistService` (this mixin keeps service.py small)."""

    store: Any
    image_store: ImageStore | None

    def _fetch_results(self, uid: str) -> dict[str, Dataset | None]:
        """Before a change to COMPLETED, outside any write transaction: the attributes of
        the workitem's SEG/SR outputs (WADO-RS metadata: never Pixel Data)."""
        with self.store.transaction() as conn:
            row = self.store.get(conn, uid)
        if row is None or row.state != "IN PROGRESS":
            return {}
        return self._fetch_missing(json.loads(row.dataset), {})

    def _fetch_missing(self, ds: Json, objects: dict[str, Dataset | None]
                       ) -> dict[str, Dataset | None]:
        assert self.image_store is not None
        for output in result_outputs(ds):
            if output.sop_instance_uid not in objects:
                objects[output.sop_instance_uid] = self.image_store.instance_metadata(output.ref)
        return objects

    def _check_results(self, conn: Connection, uid: str, ds: Json,
                       objects: dict[str, Dataset | None]) -> list[ResultRecord]:
        """In the completing transaction: the records of the workitem's results as it is
        now (an output linked since :meth:`_fetch_results` is fetched here), or C304."""
        records = check_results(ds, self._fetch_missing(ds, objects))
        if records:
            taken = conn.execute(select(results.c.sop_instance_uid, results.c.workitem_uid).where(
                results.c.sop_instance_uid.in_([r.sop_instance_uid for r in records]))).all()
            if taken:
                raise errors.FinalStateRequirementsNotMet(
                    "A result belongs to one task: " + "; ".join(
                        f"{sop} is already the result of workitem {owner}" for sop, owner in taken),
                    attribute="OutputInformationSequence")
        return records

    def _index_results(self, conn: Connection, uid: str, ds: Json, records: list[ResultRecord],
                       now: str) -> None:
        try:
            index_results(conn, records, workitem_uid=uid,
                          worklist_label=first(ds, "WorklistLabel"), now=now)
        except IntegrityError:  # another task indexed one of them since the check above
            raise errors.FinalStateRequirementsNotMet(
                "A result belongs to one task: one of "
                + ", ".join(r.sop_instance_uid for r in records)
                + " was just indexed for another workitem", attribute="OutputInformationSequence"
            ) from None

    # -- the reviewer's query ------------------------------------------------------------
    def search_results(self, query: ResultQuery) -> ResultPage:
        """One page of flat rows (an item joined with its result), ordered by worklist,
        reader, content date-time, result and item."""
        join = results.outerjoin(result_items,
                                 result_items.c.result_uid == results.c.sop_instance_uid)
        where = _conditions(query)
        stmt = (select(*_row_columns()).select_from(join).where(and_(True, *where))
                # coalesce: SQLite sorts NULL first, PostgreSQL last; one order for both
                .order_by(*(func.coalesce(c, "") for c in (results.c.worklist_label,
                                                           results.c.person_login,
                                                           results.c.content_datetime)),
                          results.c.sop_instance_uid, result_items.c.id)
                .offset(query.offset).limit(query.limit))
        count = select(func.count()).select_from(join).where(and_(True, *where))
        with self.store.transaction() as conn:
            rows = [_row(m) for m in conn.execute(stmt).mappings()]
            total = conn.execute(count).scalar_one() if (
                len(rows) == query.limit or query.offset) else len(rows)
        return ResultPage(rows, total)

    def result(self, sop_instance_uid: str) -> Json:
        """One indexed result: its provenance, items, references and verdicts."""
        if "\x00" in sop_instance_uid:
            raise NoSuchResult("No indexed result has a SOP Instance UID with a NUL character")
        with self.store.transaction() as conn:
            found = conn.execute(select(results).where(
                results.c.sop_instance_uid == sop_instance_uid)).mappings().first()
            if found is None:
                raise NoSuchResult(f"No indexed result has SOP Instance UID {sop_instance_uid}")
            items = conn.execute(select(result_items).where(
                result_items.c.result_uid == sop_instance_uid)
                .order_by(result_items.c.id)).mappings().all()
            refs = conn.execute(select(result_refs).where(
                result_refs.c.result_uid == sop_instance_uid)).mappings().all()
            _ref, review, item, where = _verdict_source(results.c.sop_instance_uid)
            verdicts = conn.execute(
                select(review.c.sop_instance_uid, review.c.person_login, review.c.role,
                       review.c.content_datetime, item.c.text)
                .select_from(results).where(results.c.sop_instance_uid == sop_instance_uid,
                                            *where)
                .order_by(review.c.content_datetime, review.c.indexed_at)).all()
        out = {k: "" if v is None else v for k, v in found.items()}
        out["content_datetime"] = _iso(found["content_datetime"])
        out["predecessors"] = out["predecessors"].split()
        out["items"] = [{k: "" if v is None and k not in ("value", "segment_number") else v
                         for k, v in m.items() if k not in ("id", "result_uid")}
                        for m in items]
        out["references"] = {rel.lower(): sorted(m["referenced_uid"] for m in refs
                                                 if m["relation"] == rel)
                             for rel in ("SERIES", "INSTANCE")}
        out["verdicts"] = [dict(review=v[0], reviewer=v[1], role=v[2],
                                content_datetime=_iso(v[3]), verdict=v[4]) for v in verdicts]
        return out

