"""The store on real databases: schema versioning, the append-only history, restarts."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from worklist import errors
from worklist.sample import sample_workitem
from worklist.schema import SCHEMA_VERSION, SchemaTooNew
from worklist.service import Actor, WorklistService
from worklist.store import open_store
from worklist.values import Protocol

ACTOR = Actor(Protocol.CLI, "tester")


def test_schema_created_once_and_versioned(database_url: str) -> None:
    store = open_store(database_url)
    with store.transaction() as conn:
        assert conn.execute(text("SELECT version FROM schema_version")).scalar_one() == \
            SCHEMA_VERSION
    # A second start finds the schema and leaves the data alone.
    svc = WorklistService(store)
    uid = svc.create(sample_workitem(with_uid=True), None, ACTOR).uid
    store.engine.dispose()
    again = WorklistService(open_store(database_url))
    assert again.retrieve(uid).ProcedureStepState == "SCHEDULED"


def test_newer_schema_is_refused(database_url: str) -> None:
    store = open_store(database_url)
    with store.transaction(write=True) as conn:
        conn.execute(text("UPDATE schema_version SET version = :v"), {"v": SCHEMA_VERSION + 1})
    store.engine.dispose()
    with pytest.raises(SchemaTooNew, match="Upgrade worklist"):
        open_store(database_url)


def test_history_cannot_be_edited_or_deleted(database_url: str) -> None:
    store = open_store(database_url)
    svc = WorklistService(store)
    uid = svc.create(sample_workitem(with_uid=True), None, ACTOR).uid
    for stmt in ("UPDATE history SET actor = 'mallory'", "DELETE FROM history"):
        with pytest.raises(DBAPIError, match="append-only"):
            with store.transaction(write=True) as conn:
                conn.execute(text(stmt))
    rows = svc.history(uid)
    assert [r["actor"] for r in rows] == ["tester"]
    assert rows[0]["action"] == "CREATE" and rows[0]["protocol"] == "CLI"


def test_history_records_every_change(database_url: str) -> None:
    svc = WorklistService(open_store(database_url))
    uid = svc.create(sample_workitem(with_uid=True), None, ACTOR).uid
    change = sample_workitem()
    upd = type(change)()
    upd.ProcedureStepLabel = "Segment the spleen"
    svc.update(uid, upd, None, Actor(Protocol.UPS_RS, "alice"))
    svc.change_state(uid, "IN PROGRESS", "1.2.3.4", Actor(Protocol.DIMSE, "VIEWER1"))
    rows = svc.history(uid)
    assert [(r["action"], r["actor"], r["protocol"], r["state_after"]) for r in rows] == [
        ("CREATE", "tester", "CLI", "SCHEDULED"),
        ("UPDATE", "alice", "UPS-RS", "SCHEDULED"),
        ("CHANGE STATE", "VIEWER1", "DIMSE", "IN PROGRESS"),
    ]
    update = rows[1]["changes"]
    assert update["set"]["00741204"]["Value"] == ["Segment the spleen"]
    assert update["before"]["00741204"]["Value"] == ["Segment liver lesions"]
    # The Transaction UID is a lock, not content: it is in no stored dataset.
    assert "00081195" not in rows[0]["changes"]["dataset"]


def test_unknown_workitem_history(database_url: str) -> None:
    svc = WorklistService(open_store(database_url))
    with pytest.raises(errors.NoSuchWorkitem):
        svc.history("1.2.3.999")


def test_unreachable_database_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(errors.ServiceUnavailable, match="database"):
        open_store("postgresql+psycopg://postgres@127.0.0.1:1/none")
