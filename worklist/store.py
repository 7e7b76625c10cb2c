"""Persistence: the engine, units of work and the workitem repository.

SQLite (the embedded default: WAL, a busy timeout, ``BEGIN IMMEDIATE`` for writes so
that concurrent writers queue instead of failing) and PostgreSQL behave the same.
Claims and updates are compare-and-set on the row's ``version`` (and, for claims,
on its state), so of any number of concurrent claims, in threads or in separate
processes on the same database, exactly one wins.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import and_, create_engine, distinct, event, exists, func, insert, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.pool import NullPool

from . import matching
from .dicomjson import first, values
from .errors import DuplicateWorkitem, ServiceUnavailable
from .schema import (history, migrate, performers, requests, tombstones, workitem_codes,
                     workitems)

__all__ = ["WorkitemRow", "RawJson", "IndexFields", "Store", "open_store", "sqlite_url", "index_fields"]


class RawJson(str):
    """JSON text that is stored as it is (already serialised by the caller)."""


@dataclass(frozen=True)
class WorkitemRow:
    id: int
    uid: str
    state: str
    transaction_uid: str | None
    version: int
    cancel_requested: bool
    dataset: str


@dataclass
class IndexFields:
    """The indexed columns and side-table rows of one workitem."""

    columns: dict[str, Any]
    performers: list[dict[str, Any]]
    codes: list[dict[str, Any]]
    requests: list[dict[str, Any]]


def sqlite_url(path: str | os.PathLike[str]) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def _sqlite_connect(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
    dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA journal_mode=WAL")
    cur.execute("PRAGMA synchronous=NORMAL")
    cur.execute("PRAGMA busy_timeout=30000")
    # Fewer, larger checkpoints (each one syncs the database file), and 8 MB of page
    # cache per connection (at most 16 connections: see open_store).
    cur.execute("PRAGMA wal_autocheckpoint=10000")
    cur.execute("PRAGMA cache_size=-8192")
    cur.execute("PRAGMA foreign_keys=ON")
    cur.execute("PRAGMA case_sensitive_like=ON")  # PS3.4 C.2.2.2.4 is case-sensitive
    cur.close()


def _sqlite_begin(conn: Connection) -> None:
    # A write transaction takes the write lock at once, so it never has to upgrade a
    # read lock (which SQLite answers with SQLITE_BUSY, not a wait).
    conn.exec_driver_sql("BEGIN IMMEDIATE" if conn.get_execution_options().get("write")
                         else "BEGIN")


# Statements built once: SQLAlchemy then only binds parameters per call.
_INSERT_WORKITEM = insert(workitems)
_INSERT_HISTORY = insert(history)
_INSERTS = {t.name: insert(t) for t in (performers, workitem_codes, requests)}
_DENORMALISED = (performers, workitem_codes)


class Store:
    """The workitem repository over one SQLAlchemy engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.dialect = engine.dialect.name
        # SQLite has one writer at a time, and a waiting writer sleeps in SQLite's busy
        # handler (1, 2, 5, 10 ms...).  Threads of this process queue here instead and
        # wake the moment the writer before them commits; other processes still meet
        # the busy timeout.
        self._write_lock = threading.Lock() if self.dialect == "sqlite" else None
        self._watch: Any = None
        self._watch_lock = threading.Lock()

    def version(self) -> int | None:
        """A number that changes whenever any connection, in any process, commits a
        change to the database; None where the database cannot say cheaply.

        SQLite: PRAGMA data_version of a connection of our own that never writes, so
        every commit (ours included) is another connection's."""
        if self.dialect != "sqlite":
            return None
        with self._watch_lock:
            try:
                if self._watch is None:
                    self._watch = self.engine.raw_connection()
                cur = self._watch.cursor()
                cur.execute("PRAGMA data_version")
                value = cur.fetchone()[0]
                cur.close()
                return int(value)
            except DBAPIError:
                self._watch = None
                return None

    # -- units of work ---------------------------------------------------------
    @contextlib.contextmanager
    def transaction(self, *, write: bool = False) -> Iterator[Connection]:
        """One unit of work: commits on success, rolls back on any exception."""
        lock = self._write_lock if write else None
        try:
            with lock or contextlib.nullcontext(), self.engine.connect() as conn:
                conn = conn.execution_options(write=write)
                with conn.begin():
                    yield conn
        except OperationalError as exc:
            raise ServiceUnavailable(f"The database is not available: {exc.orig}") from exc

    # -- reads -----------------------------------------------------------------
    def get(self, conn: Connection, uid: str) -> WorkitemRow | None:
        if "\x00" in uid:
            return None  # no UID holds one, and PostgreSQL cannot compare it
        row = conn.execute(select(
            workitems.c.id, workitems.c.uid, workitems.c.state, workitems.c.transaction_uid,
            workitems.c.version, workitems.c.cancel_requested, workitems.c.dataset,
        ).where(workitems.c.uid == uid)).first()
        return WorkitemRow(*row) if row else None

    def is_tombstoned(self, conn: Connection, uid: str) -> bool:
        if "\x00" in uid:
            return False
        return conn.execute(select(tombstones.c.uid).where(tombstones.c.uid == uid)).first() \
            is not None

    def history(self, conn: Connection, uid: str) -> list[dict[str, Any]]:
        if "\x00" in uid:
            return []
        rows = conn.execute(select(history).where(history.c.workitem_uid == uid)
                            .order_by(history.c.id)).mappings()
        return [dict(r, changes=json.loads(r["changes"])) for r in rows]

    # -- writes ----------------------------------------------------------------
    def insert(self, conn: Connection, uid: str, state: str, fields: IndexFields,
               dataset: str, now: str) -> int:
        try:
            with conn.begin_nested() if self.dialect == "postgresql" else contextlib.nullcontext():
                result = conn.execute(_INSERT_WORKITEM, dict(
                    uid=uid, state=state, transaction_uid=None, version=1,
                    cancel_requested=False, created_at=now, updated_at=now, dataset=dataset,
                    **fields.columns))
        except IntegrityError:
            raise DuplicateWorkitem(f"A workitem with UID {uid} already exists") from None
        wid = result.inserted_primary_key[0]
        self._insert_side_rows(conn, wid, fields, state)
        return wid

    def compare_and_set(self, conn: Connection, row: WorkitemRow, *, state: str,
                        transaction_uid: str | None, dataset: str | None,
                        fields: IndexFields | None, now: str,
                        cancel_requested: bool | None = None) -> bool:
        """Write the new state if the row is still at ``row.version``; False if it moved."""
        values: dict[str, Any] = dict(state=state, transaction_uid=transaction_uid,
                                      version=row.version + 1, updated_at=now)
        if dataset is not None:
            values["dataset"] = dataset
        if cancel_requested is not None:
            values["cancel_requested"] = cancel_requested
        if fields is not None:
            values.update(fields.columns)
        result = conn.execute(update(workitems).where(and_(
            workitems.c.id == row.id, workitems.c.version == row.version)).values(**values))
        if result.rowcount != 1:
            return False
        if fields is not None:
            for table in (performers, workitem_codes, requests):
                conn.execute(table.delete().where(table.c.workitem_id == row.id))
            self._insert_side_rows(conn, row.id, fields, state)
        elif state != row.state:
            for table in _DENORMALISED:
                conn.execute(update(table).where(table.c.workitem_id == row.id)
                             .values(state=state))
        return True

    def _insert_side_rows(self, conn: Connection, wid: int, fields: IndexFields,
                          state: str) -> None:
        label = fields.columns.get("worklist_label")
        for table, rows in ((performers, fields.performers), (workitem_codes, fields.codes),
                            (requests, fields.requests)):
            if rows:
                extra = ({"state": state, "worklist_label": label} if table in _DENORMALISED
                         else {})
                conn.execute(_INSERTS[table.name],
                             [dict(r, workitem_id=wid, **extra) for r in rows])

    def append_history(self, conn: Connection, *, uid: str, at: str, actor: str,
                       protocol: str, action: str, state_before: str | None,
                       state_after: str | None, changes: dict[str, Any]) -> None:
        conn.execute(_INSERT_HISTORY, dict(
            workitem_uid=uid, at=at, actor=actor, protocol=protocol, action=action,
            state_before=state_before, state_after=state_after,
            changes=changes if isinstance(changes, RawJson)
            else json.dumps(changes, separators=(",", ":"), ensure_ascii=False)))

    # -- search ----------------------------------------------------------------
    def search(self, conn: Connection, query: matching.Query, *, offset: int, limit: int,
               decode: Any = json.loads) -> tuple[list[str], int]:
        """The stored datasets matching ``query`` in creation order, and how many more
        matches lie beyond ``offset + limit``.

        Conditions on indexed keys become SQL; the rest are tested in Python on the
        candidates (``decode`` parses the stored JSON), so every key counts.
        """
        clauses, residual = sql_conditions(query)
        base = select(workitems.c.id, workitems.c.dataset).where(*clauses).order_by(workitems.c.id)
        if not residual:
            rows = conn.execute(base.offset(offset).limit(limit + 1)).all()
            page = [r.dataset for r in rows[:limit]]
            more = 0
            if len(rows) > limit:
                count = _side_count(query)
                if count is None:
                    count = select(func.count()).select_from(workitems).where(*clauses)
                total = conn.execute(count).scalar_one()
                more = max(total - offset - limit, 0)
            return page, more
        page, matched, last_id = [], 0, 0
        while True:
            batch = conn.execute(base.where(workitems.c.id > last_id).limit(500)).all()
            if not batch:
                break
            for r in batch:
                if all(c.matches(decode(r.dataset)) for c in residual):
                    if offset <= matched < offset + limit:
                        page.append(r.dataset)
                    matched += 1
            last_id = batch[-1].id
        return page, max(matched - offset - limit, 0)

    def scan(self, conn: Connection, query: matching.Query, *, after_id: int, batch: int,
             decode: Any = json.loads) -> tuple[list[str], int | None]:
        """Up to ``batch`` matches with ``id > after_id`` in creation order, and the id to
        continue after (None when the table is exhausted).  Keyset paging: no count, no
        offset, nothing skipped or repeated when rows change between batches."""
        clauses, residual = sql_conditions(query)
        base = select(workitems.c.id, workitems.c.dataset).where(*clauses).order_by(workitems.c.id)
        found: list[str] = []
        last = after_id
        while len(found) < batch:
            rows = conn.execute(base.where(workitems.c.id > last).limit(batch)).all()
            if not rows:
                return found, None
            for r in rows:
                last = r.id
                if not residual or all(c.matches(decode(r.dataset)) for c in residual):
                    found.append(r.dataset)
                    if len(found) == batch:
                        break
        return found, last

    def count(self, conn: Connection) -> int:
        return conn.execute(select(func.count()).select_from(workitems)).scalar_one()


# -- conditions on indexed keys as SQL ------------------------------------------
_COLUMNS = {
    0x00741000: workitems.c.state,                       # ProcedureStepState
    0x00741202: workitems.c.worklist_label,              # WorklistLabel
    0x00741204: workitems.c.procedure_step_label,        # ProcedureStepLabel
    0x00741200: workitems.c.priority,                    # ScheduledProcedureStepPriority
    0x00404005: workitems.c.start_datetime,              # ScheduledProcedureStepStartDateTime
    0x00404011: workitems.c.expected_completion_datetime,  # ExpectedCompletionDateTime
    0x00404041: workitems.c.input_readiness_state,       # InputReadinessState
    0x00100020: workitems.c.patient_id,                  # PatientID
    0x00100010: workitems.c.patient_name,                # PatientName
    0x0020000D: workitems.c.study_instance_uid,          # StudyInstanceUID
    0x00080018: workitems.c.uid,                         # SOPInstanceUID
}
_FOLDED = {workitems.c.patient_name: workitems.c.patient_name_folded,
           performers.c.name: performers.c.name_folded}
_CODE_ITEM = {0x00080100: "code_value", 0x00080102: "coding_scheme"}
# Sequence → (side table, {tag of an item key: column}, {nested code sequence tag})
_SEQUENCES = {
    0x00404018: (workitem_codes, _CODE_ITEM, None),      # ScheduledWorkitemCodeSequence
    0x00404034: (performers, {0x00404037: "name", 0x00404036: "organization"},
                 0x00404009),                            # ScheduledHumanPerformersSequence
    0x0040A370: (requests, {0x00080050: "accession_number",
                            0x00401001: "requested_procedure_id"}, None),  # ReferencedRequestSequence
}


def sql_conditions(query: matching.Query) -> tuple[list[Any], list[matching.Condition]]:
    """SQL clauses for the conditions on indexed keys; the conditions left for Python."""
    clauses, residual = [], []
    for cond in query.filtering:
        clause = _sql_for(cond)
        if clause is None:
            residual.append(cond)
        else:
            clauses.append(clause)
    return clauses, residual


def _sql_for(cond: matching.Condition) -> Any:
    column = _COLUMNS.get(cond.tag)
    if column is not None:
        return _column_clause(cond, column)
    side = _side_parts(cond)
    if side is None:
        return None
    table, parts = side
    return exists().where(table.c.workitem_id == workitems.c.id, *parts)


def _side_count(query: matching.Query) -> Any:
    """A count of the matches from one side-table index alone, when the query is a
    sequence key on performers or workitem codes plus, at most, single values of
    Procedure Step State and Worklist Label (copied into those tables); else None."""
    side, same = None, []
    for cond in query.filtering:
        if cond.tag in _COPIED and isinstance(cond, matching.SingleValue):
            same.append(cond)
        elif side is None and cond.tag in _SEQUENCES and \
                _SEQUENCES[cond.tag][0] in _DENORMALISED:
            side = _side_parts(cond)
            if side is None:
                return None
        else:
            return None
    if side is None:
        return None
    table, parts = side
    parts += [table.c[_COPIED[c.tag]] == c.value for c in same]
    if set(_columns_of(parts)) <= {"code_value", "state", "worklist_label"}:
        # One row per workitem and code value: count rows, straight from the index.
        return select(func.count()).select_from(table).where(*parts, table.c.first_of_code == 1)
    return select(func.count(distinct(table.c.workitem_id))).where(*parts)


def _columns_of(clauses: list[Any]) -> Iterator[str]:
    from sqlalchemy.sql import visitors
    for clause in clauses:
        for col in visitors.iterate(clause):
            if getattr(col, "table", None) is not None and hasattr(col, "name"):
                yield col.name


_COPIED = {0x00741000: "state", 0x00741202: "worklist_label"}


def _side_parts(cond: matching.Condition) -> tuple[Any, list[Any]] | None:
    """The side table and the conditions on its columns for a sequence key on it."""
    if isinstance(cond, matching.SequenceMatch) and cond.tag in _SEQUENCES:
        table, keys, nested = _SEQUENCES[cond.tag]
        parts: list[Any] = []
        for sub in cond.conditions:
            if isinstance(sub, matching.Universal):
                continue
            if sub.tag in keys:
                clause = _column_clause(sub, table.c[keys[sub.tag]])
            elif nested is not None and sub.tag == nested and isinstance(
                    sub, matching.SequenceMatch):
                clause = _nested_code_clause(sub, table)
            else:
                clause = None
            if clause is None:
                return None  # not all of the item is indexed: test the sequence in Python
            parts.append(clause)
        return table, parts
    return None


def _nested_code_clause(cond: matching.SequenceMatch, table: Any) -> Any:
    parts = []
    for sub in cond.conditions:
        if isinstance(sub, matching.Universal):
            continue
        if sub.tag not in _CODE_ITEM:
            return None
        clause = _column_clause(sub, table.c[_CODE_ITEM[sub.tag]])
        if clause is None:
            return None
        parts.append(clause)
    return and_(*parts) if parts else and_(True)


def _column_clause(cond: matching.Condition, column: Any) -> Any:
    if isinstance(cond, matching.Universal):
        return and_(True)
    if isinstance(cond, matching.EmptyValue):
        if cond.vr == "PN":
            # PN columns hold the Alphabetic group only; a name with only an Ideographic
            # or Phonetic group is not empty (PS3.4 C.2.2.2.7): decide in Python.
            return None
        return (column.is_(None)) | (column == "")
    if isinstance(cond, matching.SingleValue):
        if cond.case_insensitive:
            folded = _FOLDED.get(column)
            return None if folded is None else folded == cond.value.casefold()
        if cond.vr in ("DA", "TM", "DT"):
            return None
        return column == cond.value
    if isinstance(cond, matching.ListOfUID):
        return column.in_(sorted(cond.uids))
    if isinstance(cond, matching.Wildcard):
        if cond.case_insensitive:
            folded = _FOLDED.get(column)
            if folded is None:
                return None
            return folded.like(cond.like_pattern(), escape="\\")
        return column.like(cond.like_pattern(), escape="\\")
    if isinstance(cond, matching.Range) and cond.vr == "DT":
        parts = [column.is_not(None)]
        if cond.low is not None:
            parts.append(column >= cond.low)
        if cond.high is not None:
            parts.append(column <= cond.high)
        return and_(*parts)
    return None


# -- engine ------------------------------------------------------------------------
def open_store(url: str, *, create: bool = True) -> Store:
    """Open (and on first start create or migrate) the database at ``url``."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://"):]
    if url.startswith("sqlite"):
        path = url.split("///", 1)[1] if "///" in url else ""
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        pooling = ({"poolclass": NullPool} if path in ("", ":memory:")
                   else {"pool_size": 8, "max_overflow": 8})
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30},
                               **pooling)
        event.listen(engine, "connect", _sqlite_connect)
        event.listen(engine, "begin", _sqlite_begin)
    else:
        engine = create_engine(url, pool_size=10, max_overflow=20, pool_pre_ping=True)
    store = Store(engine)
    if create:
        try:
            with store.transaction(write=True) as conn:
                migrate(conn)
        except DBAPIError as exc:
            raise ServiceUnavailable(f"Cannot open the database {engine.url!r}: {exc.orig}") \
                from exc
    return store


# -- index fields ------------------------------------------------------------------
def _first(ds: dict[str, Any], keyword: str, vr: str = "LO") -> str | None:
    value = first(ds, keyword)
    if value is None:
        return None
    if vr == "PN":
        return matching.person_name_text(value) or None
    return matching.normalize_text(value, vr) or None


def _dt_column(ds: dict[str, Any], keyword: str) -> str | None:
    text = _first(ds, keyword, "DT")
    if text is None:
        return None
    try:
        return matching.normalize_stored(text, "DT")
    except Exception:
        return None


def _items(ds: dict[str, Any], keyword: str) -> list[dict[str, Any]]:
    return [i for i in values(ds, keyword) if isinstance(i, dict)]


def index_fields(ds: dict[str, Any]) -> IndexFields:
    """The indexed columns and side rows of a workitem (a DICOM JSON object)."""
    name = _first(ds, "PatientName", "PN")
    columns = dict(
        worklist_label=_first(ds, "WorklistLabel"),
        procedure_step_label=_first(ds, "ProcedureStepLabel"),
        priority=_first(ds, "ScheduledProcedureStepPriority", "CS"),
        start_datetime=_dt_column(ds, "ScheduledProcedureStepStartDateTime"),
        expected_completion_datetime=_dt_column(ds, "ExpectedCompletionDateTime"),
        input_readiness_state=_first(ds, "InputReadinessState", "CS"),
        patient_id=_first(ds, "PatientID"),
        patient_name=name,
        patient_name_folded=name.casefold() if name else None,
        study_instance_uid=_first(ds, "StudyInstanceUID", "UI"),
    )
    perf_rows = []
    for item in _items(ds, "ScheduledHumanPerformersSequence"):
        pname = _first(item, "HumanPerformerName", "PN")
        base = dict(name=pname, name_folded=pname.casefold() if pname else None,
                    organization=_first(item, "HumanPerformerOrganization"))
        for code in _items(item, "HumanPerformerCodeSequence") or [{}]:
            perf_rows.append(dict(base, code_value=_first(code, "CodeValue", "SH"),
                                  coding_scheme=_first(code, "CodingSchemeDesignator", "SH")))
    code_rows = [dict(code_value=_first(c, "CodeValue", "SH"),
                      coding_scheme=_first(c, "CodingSchemeDesignator", "SH"))
                 for c in _items(ds, "ScheduledWorkitemCodeSequence")]
    req_rows = [dict(accession_number=_first(r, "AccessionNumber", "SH"),
                     requested_procedure_id=_first(r, "RequestedProcedureID", "SH"))
                for r in _items(ds, "ReferencedRequestSequence")]
    for rows in (perf_rows, code_rows):
        seen = set()
        for r in rows:
            r["first_of_code"] = int(r["code_value"] not in seen)
            seen.add(r["code_value"])
    return IndexFields(columns, perf_rows, code_rows, req_rows)
