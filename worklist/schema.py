"""Database schema (SQLAlchemy Core) and its versioned migrations.

A workitem row holds the full UPS dataset as DICOM JSON (without the Transaction UID,
which lives in its own column and is never returned) and, beside it, the indexed
columns people filter on.  Multi-valued keys inside sequences (performers, workitem
codes, requests) live in side tables with one row per item, so sequence matching in
SQL tests one item at a time, as PS3.4 C.2.2.2.6 requires.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean, Column, Float, ForeignKey, Index, Integer, MetaData, String, Table, Text,
    UniqueConstraint, text,
)
from sqlalchemy.engine import Connection

__all__ = ["metadata", "workitems", "performers", "workitem_codes", "requests", "history",
           "tombstones", "schema_version", "SCHEMA_VERSION", "migrate", "orthanc_cursor",
           "routed", "subscriptions", "events", "subscriber_cursors", "results", "result_items",
           "result_refs"]

metadata = MetaData()


schema_version = Table(
    "schema_version", metadata,
    Column("version", Integer, nullable=False),
)

workitems = Table(
    "workitems", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("uid", String(64), nullable=False, unique=True),
    Column("state", String(16), nullable=False),
    Column("transaction_uid", String(64)),
    Column("version", Integer, nullable=False),
    Column("worklist_label", String(64)),
    Column("procedure_step_label", String(64)),
    Column("priority", String(16)),
    Column("start_datetime", String(21)),
    Column("expected_completion_datetime", String(21)),
    Column("input_readiness_state", String(16)),
    Column("patient_id", String(64)),
    Column("patient_name", String(324)),
    Column("patient_name_folded", String(324)),
    Column("study_instance_uid", String(64)),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    Column("created_at", String(32), nullable=False),
    Column("updated_at", String(32), nullable=False),
    Column("dataset", Text, nullable=False),
)
Index("ix_workitems_label_state", workitems.c.worklist_label, workitems.c.state, workitems.c.id)
Index("ix_workitems_state", workitems.c.state, workitems.c.id)
Index("ix_workitems_start", workitems.c.start_datetime)
Index("ix_workitems_expected", workitems.c.expected_completion_datetime)
Index("ix_workitems_patient_id", workitems.c.patient_id)
Index("ix_workitems_patient_name", workitems.c.patient_name)
Index("ix_workitems_patient_name_folded", workitems.c.patient_name_folded)
Index("ix_workitems_study", workitems.c.study_instance_uid)
Index("ix_workitems_step_label", workitems.c.procedure_step_label)

_fk = dict(ondelete="CASCADE")

performers = Table(
    "workitem_performers", metadata,
    Column("workitem_id", Integer, ForeignKey("workitems.id", **_fk), nullable=False),
    Column("code_value", String(64)),
    Column("coding_scheme", String(64)),
    Column("name", String(324)),
    Column("name_folded", String(324)),
    Column("organization", String(64)),
    # Copies of the workitem's state and worklist label, so that "the SCHEDULED items of
    # this worklist for this reader" is counted from one index alone.
    Column("state", String(16)),
    Column("worklist_label", String(64)),
    # 1 on the first row of each code value of a workitem: counting those rows counts
    # workitems, without DISTINCT.
    Column("first_of_code", Integer, nullable=False, default=1),
)
Index("ix_performers_workitem", performers.c.workitem_id)
Index("ix_performers_code", performers.c.code_value, performers.c.worklist_label,
      performers.c.state, performers.c.first_of_code, performers.c.workitem_id)
Index("ix_performers_name", performers.c.name)
Index("ix_performers_org", performers.c.organization)

workitem_codes = Table(
    "workitem_codes", metadata,
    Column("workitem_id", Integer, ForeignKey("workitems.id", **_fk), nullable=False),
    Column("code_value", String(64)),
    Column("coding_scheme", String(64)),
    Column("state", String(16)),
    Column("worklist_label", String(64)),
    Column("first_of_code", Integer, nullable=False, default=1),
)
Index("ix_codes_workitem", workitem_codes.c.workitem_id)
Index("ix_codes_code", workitem_codes.c.code_value, workitem_codes.c.worklist_label,
      workitem_codes.c.state, workitem_codes.c.first_of_code, workitem_codes.c.workitem_id)

requests = Table(
    "workitem_requests", metadata,
    Column("workitem_id", Integer, ForeignKey("workitems.id", **_fk), nullable=False),
    Column("accession_number", String(16)),
    Column("requested_procedure_id", String(16)),
)
Index("ix_requests_workitem", requests.c.workitem_id)
Index("ix_requests_accession", requests.c.accession_number)

history = Table(
    "history", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("workitem_uid", String(64), nullable=False),
    Column("at", String(32), nullable=False),
    Column("actor", String(128), nullable=False),
    Column("protocol", String(16), nullable=False),
    Column("action", String(32), nullable=False),
    Column("state_before", String(16)),
    Column("state_after", String(16)),
    Column("changes", Text, nullable=False),
)
Index("ix_history_uid", history.c.workitem_uid, history.c.id)

tombstones = Table(
    "tombstones", metadata,
    Column("uid", String(64), primary_key=True),
    Column("deleted_at", String(32), nullable=False),
)

# The history is append-only: the database itself refuses to edit it.
_SQLITE_GUARDS = [
    "CREATE TRIGGER IF NOT EXISTS history_no_update BEFORE UPDATE ON history "
    "BEGIN SELECT RAISE(ABORT, 'the workitem history is append-only'); END",
    "CREATE TRIGGER IF NOT EXISTS history_no_delete BEFORE DELETE ON history "
    "BEGIN SELECT RAISE(ABORT, 'the workitem history is append-only'); END",
]
_POSTGRES_GUARDS = [
    "CREATE OR REPLACE FUNCTION history_append_only() RETURNS trigger AS $$ BEGIN "
    "RAISE EXCEPTION 'the workitem history is append-only'; END; $$ LANGUAGE plpgsql",
    "DROP TRIGGER IF EXISTS history_no_edit ON history",
    "CREATE TRIGGER history_no_edit BEFORE UPDATE OR DELETE ON history "
    "FOR EACH STATEMENT EXECUTE FUNCTION history_append_only()",
]


def _v1(conn: Connection) -> None:
    metadata.create_all(conn)
    guards = _POSTGRES_GUARDS if conn.dialect.name == "postgresql" else _SQLITE_GUARDS
    for stmt in guards:
        conn.exec_driver_sql(stmt)


# -- issue 5: following Orthanc (migration 3) -------------------------------------------
# Own MetaData: _v1's create_all must not create these, or migration 3 would fail on a
# fresh database.
routing_metadata = MetaData()

orthanc_cursor = Table(
    "orthanc_cursor", routing_metadata,
    Column("source", String(255), primary_key=True),
    Column("seq", Integer, nullable=False),
)
"""The last Orthanc change (``/changes`` Seq) fully processed, per Orthanc URL."""

routed = Table(
    "routed_studies", routing_metadata,
    Column("study_uid", String(64), primary_key=True),
    Column("rule", String(64), primary_key=True),
    Column("reader", String(64), primary_key=True),
    Column("workitem_uid", String(64), nullable=False),
    Column("ready", Boolean, nullable=False, default=False),
)
"""One row per (study, rule, reader) a rule was applied to: idempotent routing."""


def _v2(conn: Connection) -> None:
    """Orthanc follower: the change-feed cursor and the routed studies."""
    routing_metadata.create_all(conn)


# -- issue 4: subscriptions and the event outbox (migration 3) ----------------------------
subscription_metadata = MetaData()

subscriptions = Table(
    "subscriptions", subscription_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("ae_title", String(16), nullable=False),
    Column("kind", String(16), nullable=False),  # WORKITEM | GLOBAL | FILTERED
    Column("workitem_uid", String(64)),  # WORKITEM only
    Column("deletion_lock", Boolean, nullable=False, default=False),
    Column("filter", Text),  # FILTERED: the Matching Keys as DICOM JSON
    Column("suspended", Boolean, nullable=False, default=False),
    # GLOBAL/FILTERED suspended: the last workitem id that existed at suspension (PS3.4
    # CC.2.3.1: existing subscriptions stay, new workitems are no longer covered).
    Column("covers_up_to", Integer),
    # WORKITEM: True when the AE unsubscribed from this workitem while globally
    # subscribed (PS3.4 CC.2.3.1: instance instructions override global ones).
    Column("unsubscribed", Boolean, nullable=False, default=False),
    Column("created_at", String(32), nullable=False),
    UniqueConstraint("ae_title", "kind", "workitem_uid", name="uq_subscription"),
)
Index("ix_subscriptions_workitem", subscriptions.c.workitem_uid)

events = Table(
    "events", subscription_metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("at", String(32), nullable=False),
    Column("workitem_uid", String(64), nullable=False),
    Column("event_type", Integer, nullable=False),
    Column("payload", Text, nullable=False),
    Column("recipients", Text, nullable=False),
)
"""The append-only event outbox, written in the transaction of the change."""

subscriber_cursors = Table(
    "subscriber_cursors", subscription_metadata,
    Column("ae_title", String(16), primary_key=True),
    # "WS" (the UPS-RS WebSocket) or "DIMSE" (N-EVENT-REPORT): an AE may use both.
    Column("channel", String(8), primary_key=True),
    Column("delivered_seq", Integer, nullable=False),
)


def _v3(conn: Connection) -> None:
    """Subscriptions (PS3.4 CC.2.3), the event outbox and per-subscriber cursors.

    SQLite: a unique constraint treats NULL workitem UIDs as distinct, so global rows
    are kept unique by the service (one write transaction at a time) as well."""
    subscription_metadata.create_all(conn)


# -- issue 6: the result index, provenance of every linked SEG/SR (migration 4) ------------
results_metadata = MetaData()

results = Table(
    "results", results_metadata,
    Column("sop_instance_uid", String(64), primary_key=True),
    Column("workitem_uid", String(64), nullable=False),
    Column("worklist_label", String(64)),
    Column("kind", String(8), nullable=False),  # SEG | SR
    Column("sop_class_uid", String(64), nullable=False),
    Column("study_uid", String(64)),
    Column("series_uid", String(64)),
    Column("person_login", String(64)),
    Column("person_name", String(324)),
    Column("organization", String(64)),
    Column("role", String(64)),
    Column("device_name", String(64)),
    Column("algorithm", String(324)),  # "name version" of each algorithm, "; "-joined
    Column("content_datetime", String(21)),  # normalised UTC, as workitems.start_datetime
    Column("verification_flag", String(16)),
    Column("verifying_observer", String(324)),
    Column("predecessors", Text),  # space-separated SOP Instance UIDs
    Column("indexed_at", String(32), nullable=False),
)
"""One row per indexed SEG/SR instance, written with its workitem's change to COMPLETED.
No foreign key to ``workitems``: the index outlives purged workitems."""
Index("ix_results_worklist_reader", results.c.worklist_label, results.c.person_login)
Index("ix_results_workitem", results.c.workitem_uid)
Index("ix_results_reader", results.c.person_login, results.c.content_datetime)
Index("ix_results_content_datetime", results.c.content_datetime)
Index("ix_results_study", results.c.study_uid)

result_items = Table(
    "result_items", results_metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("result_uid", String(64),
           ForeignKey("results.sop_instance_uid", ondelete="CASCADE"), nullable=False),
    Column("kind", String(16), nullable=False),  # segment | measurement | evaluation
    Column("label", String(64)),
    Column("segment_number", Integer),
    Column("property_type", String(64)),
    Column("algorithm_type", String(16)),
    Column("algorithm_name", String(64)),
    Column("algorithm_version", String(64)),
    Column("concept", String(64)),
    Column("value", Float),
    Column("unit", String(64)),
    Column("text", Text),
)
Index("ix_result_items_result", result_items.c.result_uid, result_items.c.id)
Index("ix_result_items_label", result_items.c.label)
Index("ix_result_items_concept", result_items.c.concept, result_items.c.label)
Index("ix_result_items_algorithm", result_items.c.algorithm_name)

result_refs = Table(
    "result_refs", results_metadata,
    Column("result_uid", String(64),
           ForeignKey("results.sop_instance_uid", ondelete="CASCADE"), primary_key=True),
    Column("referenced_uid", String(64), primary_key=True),
    Column("relation", String(16), primary_key=True),  # PREDECESSOR | INSTANCE | SERIES
)
"""What a result points at: a review SR's predecessors and evidence are how a verdict
reaches the results it judges."""
Index("ix_result_refs_referenced", result_refs.c.referenced_uid, result_refs.c.relation)


def _v4(conn: Connection) -> None:
    """The result index (issue 6): results, their items, their references."""
    results_metadata.create_all(conn)


MIGRATIONS = {1: _v1, 2: _v2, 3: _v3, 4: _v4}
"""Version → the step that brings the schema from version-1 to it."""

SCHEMA_VERSION = max(MIGRATIONS)


class SchemaTooNew(RuntimeError):
    """The database was written by a newer release."""


def migrate(conn: Connection) -> int:
    """Create the schema on first start, or bring an older one up to date."""
    dialect = conn.dialect.name
    if dialect == "postgresql":
        # Serialise concurrent first starts of several processes.
        conn.exec_driver_sql("SELECT pg_advisory_xact_lock(4242424242)")
    has_table = conn.dialect.has_table(conn, "schema_version")
    current = 0
    if has_table:
        row = conn.execute(text("SELECT max(version) FROM schema_version")).scalar()
        current = int(row or 0)
    if current > SCHEMA_VERSION:
        raise SchemaTooNew(f"The database schema is version {current}; this release knows "
                           f"versions up to {SCHEMA_VERSION}. Upgrade worklist.")
    for version in range(current + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[version](conn)
        conn.execute(schema_version.delete())
        conn.execute(schema_version.insert().values(version=version))
    return SCHEMA_VERSION

