"""Subscriptions to UPS events (PS3.4 CC.2.3) and the event outbox (PS3.4 CC.2.4).

A subscription is one row of ``subscriptions``: to one workitem (``WORKITEM``), to
the whole worklist (``GLOBAL``, the well-known UID 1.2.840.10008.5.1.4.34.5) or to the
part of it that matches a set of Matching Keys (``FILTERED``, …34.5.1).  The state
model of PS3.4 CC.2.3.1 is kept without copying global subscriptions onto every
workitem: the recipients of an event are computed, in the transaction of the change,
from the rows as they are at that moment:

* instance subscriptions of the workitem, unless marked ``unsubscribed`` (an AE that
  unsubscribed from one workitem while globally subscribed: instance instructions
  override global ones);
* global subscriptions: a global subscription covers current *and future* workitems,
  so workitems created by any path (internal rules, the command line) reach global
  subscribers without an auto-subscription step (CC.2.5.3); a *suspended* global
  subscription keeps covering the workitems that existed when it was suspended
  (``covers_up_to`` = the highest workitem id then) and no newer ones;
* filtered global subscriptions whose Matching Keys match the workitem as it is after
  the change (:func:`worklist.matching.parse_identifier`).

Each event is written to the append-only ``events`` outbox, with its recipients, in
the same transaction as the change: an event exists if and only if its change was
committed, and it survives a restart.  Delivery (WebSocket, later DIMSE) reads the
outbox after a per-subscriber cursor (:mod:`worklist.delivery`).

Bounds (documented in the README): the initial State Reports after a global subscribe
with Deletion Lock cover the newest :data:`INITIAL_REPORT_LIMIT` workitems; a
reconnecting subscriber is replayed at most its newest :data:`REPLAY_LIMIT`
undelivered events.
"""

from __future__ import annotations

import datetime
import functools
import json
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from sqlalchemy import and_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.engine import Connection

from . import errors, matching
from .dicomjson import dataset_to_json_dict, dumps, put, sorted_json, tag_key, values
from .events import EventType, UPSEvent
from .schema import events as events_table
from .schema import subscriber_cursors, subscriptions, tombstones, workitems
from .values import UPS_PUSH, Protocol

if TYPE_CHECKING:
    from .service import Actor

__all__ = ["GLOBAL_UID", "FILTERED_UID", "Kind", "check_ae_title", "kind_of", "event_payload",
           "recipients", "write_outbox", "SubscriptionOperations", "REPLAY_LIMIT",
           "INITIAL_REPORT_LIMIT", "PendingEvent"]

GLOBAL_UID = "1.2.840.10008.5.1.4.34.5"
"""Well-known UID of the global subscription (PS3.4 CC.2.3.1; PS3.6 Annex A)."""
FILTERED_UID = "1.2.840.10008.5.1.4.34.5.1"
"""Well-known UID of the filtered global subscription."""
REPLAY_LIMIT = 10_000
INITIAL_REPORT_LIMIT = 10_000

PendingEvent = tuple[int, str]
"""(seq, the event as DICOM JSON text)."""


class Kind(str, Enum):
    WORKITEM = "WORKITEM"
    GLOBAL = "GLOBAL"
    FILTERED = "FILTERED"


def kind_of(uid: str) -> Kind:
    """The subscription scope a Requested SOP Instance UID / ``{workitem}`` selects."""
    if uid == GLOBAL_UID:
        return Kind.GLOBAL
    if uid == FILTERED_UID:
        return Kind.FILTERED
    return Kind.WORKITEM


def check_ae_title(value: Any, what: str = "Receiving AE") -> str:
    """A valid AE title (PS3.5 Table 6.2-1: 1-16 characters of the default repertoire,
    no backslash or control characters, not all spaces), without its insignificant
    leading and trailing spaces; else 0x0115 / 400."""
    text = str(value or "")
    stripped = text.strip(" ")
    if not stripped:
        raise errors.InvalidArgumentValue(f"{what} is missing or all spaces",
                                          attribute="ReceivingAE")
    if len(text) > 16:
        raise errors.InvalidArgumentValue(f"{what} '{text[:20]}' is longer than 16 characters",
                                          attribute="ReceivingAE")
    if "\\" in text or not text.isascii() or any(ord(c) < 0x20 or ord(c) == 0x7F
                                                 for c in text):
        raise errors.InvalidArgumentValue(
            f"{what} {text!r} holds a backslash, a control or a non-ASCII character",
            attribute="ReceivingAE")
    return stripped


def event_payload(event: UPSEvent) -> str:
    """The event as PS3.18 8.10.5 sends it: a DICOM JSON dataset with the N-EVENT-REPORT
    command fields Affected SOP Class UID (UPS Push, PS3.4 CC.2.4), Affected SOP
    Instance UID and Event Type ID, and the event's attributes (Table CC.2.4-1)."""
    ds: dict[str, Any] = dict(event.attributes)
    put(ds, "AffectedSOPClassUID", "UI", UPS_PUSH)
    put(ds, "AffectedSOPInstanceUID", "UI", event.uid)
    put(ds, "EventTypeID", "US", int(event.event_type))
    return dumps(sorted_json(ds))


@functools.lru_cache(maxsize=256)
def _filter_query(text: str) -> matching.Query:
    return matching.parse_identifier(Dataset.from_json(text))


# Built once: every change asks it, usually of an empty or small table.
_RECIPIENTS = select(
    subscriptions.c.ae_title, subscriptions.c.kind, subscriptions.c.filter,
    subscriptions.c.suspended, subscriptions.c.covers_up_to, subscriptions.c.unsubscribed,
).where(or_(subscriptions.c.workitem_uid == bindparam("uid"),
            subscriptions.c.kind.in_((Kind.GLOBAL.value, Kind.FILTERED.value))))


def recipients(conn: Connection, uid: str,
               load: Callable[[], tuple[int | None, dict[str, Any] | None]]) -> list[str]:
    """The AE titles an event about workitem ``uid`` goes to, now (see module doc).
    ``load()`` gives the workitem's id and dataset; it is called only when a suspended
    or filtered subscription needs them (most changes then cost one query)."""
    rows = conn.execute(_RECIPIENTS, {"uid": uid}).all()
    chosen: dict[str, None] = {}
    loaded: list[tuple[int | None, dict[str, Any] | None]] = []

    def workitem() -> tuple[int | None, dict[str, Any] | None]:
        if not loaded:
            loaded.append(load())
        return loaded[0]

    workitem_kind, filtered_kind = Kind.WORKITEM.value, Kind.FILTERED.value
    opted_out = {r[0] for r in rows if r[1] == workitem_kind and r[5]}
    # plain tuples, unpacked: this loop runs for every subscriber on every change
    for ae, kind, filter_text, suspended, covers_up_to, _unsubscribed in rows:
        if ae in opted_out or ae in chosen:
            continue
        if kind == workitem_kind:
            chosen[ae] = None
            continue
        if suspended:
            workitem_id = workitem()[0]
            if workitem_id is None or covers_up_to is None or workitem_id > covers_up_to:
                continue
        if kind == filtered_kind:
            dataset = workitem()[1]
            if dataset is None or not _filter_query(filter_text).matches(dataset):
                continue
        chosen[ae] = None
    return sorted(chosen)


def write_outbox(conn: Connection, at: str, rows: list[tuple[UPSEvent, list[str]]]) -> None:
    """Append events with their recipients (events nobody receives are not kept)."""
    values = [dict(at=at, workitem_uid=event.uid, event_type=int(event.event_type),
                   payload=event_payload(event), recipients=json.dumps(aes))
              for event, aes in rows if aes]
    if values:
        if conn.dialect.name == "postgresql":
            # Outbox sequence numbers must become visible in order: a reader that saw
            # seq N must never later find a committed N-1.  Writers that emit events
            # take this lock until they commit, so seq order is commit order.
            conn.exec_driver_sql("SELECT pg_advisory_xact_lock(4242424243)")
        conn.execute(insert(events_table), values)


def _like_escape(text: str) -> str:
    return text.replace("!", "!!").replace("%", "!%").replace("_", "!_")


class SubscriptionOperations:
    """PS3.4 CC.2.3 Subscribe / Unsubscribe / Suspend Global Subscription, as methods of
    :class:`worklist.service.WorklistService` (this mixin keeps service.py small)."""

    store: Any
    clock: Any
    known_ae: Any
    grant_deletion_locks: bool

    # provided by WorklistService
    def _now(self) -> str: ...  # pragma: no cover
    def _load(self, conn: Any, uid: str) -> Any: ...  # pragma: no cover
    def _history(self, *args: Any) -> None: ...  # pragma: no cover
    def _emit(self, conn: Any, events: list[UPSEvent]) -> None: ...  # pragma: no cover
    def _publish(self, events: list[UPSEvent]) -> None: ...  # pragma: no cover

    # -- PS3.4 CC.2.3, N-ACTION 3; PS3.18 11.10 ---------------------------------------
    def subscribe(self, uid: str, ae_title: str, deletion_lock: bool,
                  filter_identifier: Dataset | None, actor: Actor) -> errors.Warning | None:
        """Subscribe ``ae_title`` to one workitem, globally or filtered globally.

        Returns the B301 warning when a Deletion Lock was asked and not granted."""
        ae = check_ae_title(ae_title)
        kind = kind_of(uid)
        # PS3.4 CC.2.3.3: events go to the Receiving AE, so its address must be known
        # (C308), never accepted and silently dropped.  Over UPS-RS the event channel is
        # the subscriber's WebSocket, which the subscriber opens itself.
        if actor.protocol is not Protocol.UPS_RS and not self.known_ae(ae):
            raise errors.ReceivingAEUnknown(
                f"Receiving AE {ae} is unknown to this SCP: configure it as a peer "
                "(--peer AET=HOST:PORT)")
        filter_text = None
        if kind is Kind.FILTERED:
            if filter_identifier is None or len(filter_identifier) == 0:
                raise errors.InvalidArgumentValue(
                    "A filtered global subscription needs Matching Keys (the filter)",
                    attribute="MatchingKeys")
            matching.parse_identifier(filter_identifier)  # refuse bad keys now (0106/400)
            filter_text = json.dumps(dataset_to_json_dict(filter_identifier),
                                     separators=(",", ":"))
        elif filter_identifier is not None and len(filter_identifier):
            raise errors.ActionNotAppropriate(
                "Matching Keys are only for the filtered global subscription "
                f"({FILTERED_UID})", attribute="MatchingKeys")
        warning = None
        lock = bool(deletion_lock)
        if lock and not self.grant_deletion_locks:
            lock, warning = False, errors.deletion_lock_not_granted()
        now = self._now()
        with self.store.transaction(write=True) as conn:
            initial: list[UPSEvent] = []
            if kind is Kind.WORKITEM:
                row = self._load(conn, uid)
                self._upsert(conn, ae, kind, uid, lock, None, now)
                self._history(conn, uid, actor, "SUBSCRIBE", row.state, row.state,
                              {"ae_title": ae, "deletion_lock": lock}, now)
                initial.append(_initial_report(uid, row.dataset))
            else:
                self._upsert(conn, ae, kind, None, lock, filter_text, now)
                if kind is Kind.GLOBAL:
                    # CC.2.3.1: a global subscribe subscribes the AE to every workitem,
                    # overriding earlier instance-level unsubscriptions.
                    conn.execute(delete(subscriptions).where(and_(
                        subscriptions.c.ae_title == ae,
                        subscriptions.c.kind == Kind.WORKITEM.value,
                        subscriptions.c.unsubscribed.is_(True))))
                if lock:
                    # CC.2.4.3: after a global subscribe with lock, a State Report for
                    # every workitem (the newest INITIAL_REPORT_LIMIT).
                    rows = conn.execute(
                        select(workitems.c.uid, workitems.c.dataset)
                        .order_by(workitems.c.id.desc()).limit(INITIAL_REPORT_LIMIT)).all()
                    query = _filter_query(filter_text) if filter_text else None
                    for wuid, text in reversed(rows):
                        if query is None or query.matches(json.loads(text)):
                            initial.append(_initial_report(wuid, text))
            write_outbox(conn, now, [(e, [ae]) for e in initial])
        self._publish(initial)
        return warning

    # -- N-ACTION 4; PS3.18 11.11 -----------------------------------------------------
    def unsubscribe(self, uid: str, ae_title: str, actor: Actor) -> None:
        """Unsubscribe; NoSuchSubscription when there was nothing to end."""
        ae = check_ae_title(ae_title)
        kind = kind_of(uid)
        now = self._now()
        with self.store.transaction(write=True) as conn:
            mine = subscriptions.c.ae_title == ae
            if kind is Kind.GLOBAL:
                # CC.2.3.1: unsubscribing globally also ends every instance subscription.
                gone = conn.execute(delete(subscriptions).where(mine)).rowcount
            elif kind is Kind.FILTERED:
                gone = conn.execute(delete(subscriptions).where(and_(
                    mine, subscriptions.c.kind == Kind.FILTERED.value))).rowcount
            else:
                row = self._load(conn, uid)
                gone = self._unsubscribe_instance(conn, ae, uid, now)
                if gone:
                    self._history(conn, uid, actor, "UNSUBSCRIBE", row.state, row.state,
                                  {"ae_title": ae}, now)
            if not gone:
                raise errors.NoSuchSubscription(f"{ae} has no subscription to {uid}")

    def _unsubscribe_instance(self, conn: Connection, ae: str, uid: str, now: str) -> int:
        has_global = conn.execute(select(subscriptions.c.id).where(and_(
            subscriptions.c.ae_title == ae,
            subscriptions.c.kind != Kind.WORKITEM.value)).limit(1)).first() is not None
        own = conn.execute(select(subscriptions.c.id, subscriptions.c.unsubscribed).where(and_(
            subscriptions.c.ae_title == ae, subscriptions.c.kind == Kind.WORKITEM.value,
            subscriptions.c.workitem_uid == uid))).first()
        if own is not None and own.unsubscribed:
            return 0
        if has_global:
            # Instance instructions override global ones: remember the opt-out.
            if own is None:
                self._upsert(conn, ae, Kind.WORKITEM, uid, False, None, now, unsubscribed=True)
            else:
                conn.execute(update(subscriptions).where(subscriptions.c.id == own.id)
                             .values(unsubscribed=True, deletion_lock=False))
            return 1
        if own is None:
            return 0
        return int(conn.execute(delete(subscriptions).where(subscriptions.c.id == own.id))
                   .rowcount)

    # -- N-ACTION 5; PS3.18 11.12 -----------------------------------------------------
    def suspend_global(self, uid: str, ae_title: str, actor: Actor) -> None:
        """Stop covering new workitems; the workitems covered so far stay covered."""
        ae = check_ae_title(ae_title)
        kind = kind_of(uid)
        if kind is Kind.WORKITEM:
            raise errors.ActionNotAppropriate(
                f"Suspend applies to the global subscription ({GLOBAL_UID}) or the filtered "
                f"one ({FILTERED_UID}), not to workitem {uid}")
        with self.store.transaction(write=True) as conn:
            last = conn.execute(select(func.max(workitems.c.id))).scalar() or 0
            kinds = ((Kind.GLOBAL.value, Kind.FILTERED.value) if kind is Kind.GLOBAL
                     else (Kind.FILTERED.value,))
            done = conn.execute(update(subscriptions).where(and_(
                subscriptions.c.ae_title == ae, subscriptions.c.kind.in_(kinds),
                subscriptions.c.suspended.is_(False))).values(suspended=True,
                                                              covers_up_to=last)).rowcount
            if not done:
                exists = conn.execute(select(subscriptions.c.id).where(and_(
                    subscriptions.c.ae_title == ae, subscriptions.c.kind.in_(kinds)))).first()
                if exists is None:
                    raise errors.NoSuchSubscription(
                        f"{ae} has no global subscription to suspend")

    # -- retention: finished workitems purged unless a subscriber holds a lock ---------
    def purge_expired(self, retention_seconds: float) -> list[str]:
        """Purge the finished workitems unchanged for ``retention_seconds`` (all batches)."""
        t = self.clock() - datetime.timedelta(seconds=retention_seconds)
        cutoff = t.strftime("%Y%m%d%H%M%S.%f") + t.strftime("%z")  # as service.now_dt
        purged: list[str] = []
        while True:
            batch = self.purge_finished(cutoff)
            purged += batch
            if len(batch) < 500:
                return purged

    def purge_finished(self, older_than: str, *, batch: int = 500) -> list[str]:
        """Delete COMPLETED and CANCELED workitems last changed before ``older_than`` (a
        DICOM DT as the service writes them) on which no subscriber holds a Deletion
        Lock (PS3.4 CC.2.3.1), leaving a tombstone (retrieval then answers 410 Gone) and
        the history.  Returns the purged UIDs (at most ``batch`` per call)."""
        with self.store.transaction(write=True) as conn:
            rows = conn.execute(
                select(workitems.c.id, workitems.c.uid, workitems.c.dataset)
                .where(and_(workitems.c.state.in_(("COMPLETED", "CANCELED")),
                            workitems.c.updated_at < older_than))
                .order_by(workitems.c.id).limit(batch)).all()
            if not rows:
                return []
            locks = conn.execute(select(subscriptions).where(or_(
                subscriptions.c.deletion_lock.is_(True),
                subscriptions.c.unsubscribed.is_(True)))).mappings().all()
            purged = [r.uid for r in rows if not _locked(r.id, r.uid, r.dataset, locks)]
            if purged:
                conn.execute(delete(workitems).where(workitems.c.uid.in_(purged)))
                conn.execute(delete(subscriptions).where(
                    subscriptions.c.workitem_uid.in_(purged)))
                conn.execute(insert(tombstones), [dict(uid=u, deleted_at=self._now())
                                                  for u in purged])
        return purged

    def prune_events(self, max_age_seconds: float, *, batch: int = 5000) -> int:
        """Delete outbox rows no subscriber can still need: those every subscribed AE
        has received (on the channel it reads: its most advanced cursor), and those
        older than ``max_age_seconds`` whether received or not (the documented bound of
        what an offline subscriber gets replayed).  Returns the number deleted."""
        t = self.clock() - datetime.timedelta(seconds=max_age_seconds)
        cutoff = t.strftime("%Y%m%d%H%M%S.%f") + t.strftime("%z")
        with self.store.transaction() as conn:
            aes = {r[0] for r in conn.execute(
                select(subscriptions.c.ae_title).where(
                    subscriptions.c.unsubscribed.is_(False)).distinct())}
            cursors: dict[str, int] = {}
            for ae, seq in conn.execute(select(subscriber_cursors.c.ae_title,
                                               subscriber_cursors.c.delivered_seq)):
                cursors[ae] = max(cursors.get(ae, 0), int(seq))
            head = conn.execute(select(func.max(events_table.c.seq))).scalar() or 0
            old = conn.execute(select(func.max(events_table.c.seq))
                               .where(events_table.c.at < cutoff)).scalar() or 0
        delivered = min((cursors.get(ae, 0) for ae in aes), default=head)
        # The newest row always stays: SQLite numbers a new row max(rowid) + 1, so an
        # emptied outbox would restart at 1, behind every subscriber's cursor.
        upto = min(max(delivered, old), head - 1)
        total = 0
        while True:  # in batches: never one long write transaction
            with self.store.transaction(write=True) as conn:
                ids = [r[0] for r in conn.execute(
                    select(events_table.c.seq).where(events_table.c.seq <= upto)
                    .order_by(events_table.c.seq).limit(batch))]
                if ids:
                    conn.execute(delete(events_table).where(events_table.c.seq <= ids[-1]))
            total += len(ids)
            if len(ids) < batch:
                return total

    # -- PS3.4 CC.2.4.3 SCP Status Change (Event Type ID 4) ---------------------------
    def announce_scp_status(self, scp_status: str) -> None:
        """Tell every subscribed AE that this SCP is RESTARTED (at start) or GOING DOWN
        (at shutdown).  Subscriptions and workitems are persisted, so a restart is a
        WARM START of both lists.  Affected SOP Instance UID: the global subscription's
        well-known UID (no workitem is concerned; dcm4chee does the same)."""
        if scp_status not in ("RESTARTED", "GOING DOWN"):
            raise ValueError(f"scp_status must be RESTARTED or GOING DOWN, not {scp_status!r}")
        attrs: dict[str, Any] = {}
        put(attrs, "SCPStatus", "CS", scp_status)
        if scp_status == "RESTARTED":
            put(attrs, "SubscriptionListStatus", "CS", "WARM START")
            put(attrs, "UnifiedProcedureStepListStatus", "CS", "WARM START")
        event = UPSEvent(EventType.SCP_STATUS_CHANGE, GLOBAL_UID, sorted_json(attrs))
        now = self._now()
        with self.store.transaction(write=True) as conn:
            aes = sorted(set(conn.execute(select(subscriptions.c.ae_title).where(
                subscriptions.c.unsubscribed.is_(False))).scalars()))
            write_outbox(conn, now, [(event, aes)])
        self._publish([event])

    # -- reads for the adapters and delivery ------------------------------------------
    def subscriptions_of(self, ae_title: str) -> list[dict[str, Any]]:
        ae = check_ae_title(ae_title)
        with self.store.transaction() as conn:
            rows = conn.execute(select(subscriptions).where(subscriptions.c.ae_title == ae)
                                .order_by(subscriptions.c.id)).mappings().all()
        return [dict(r) for r in rows]

    def has_subscriptions(self, ae_title: str) -> bool:
        with self.store.transaction() as conn:
            return conn.execute(select(subscriptions.c.id).where(
                subscriptions.c.ae_title == ae_title).limit(1)).first() is not None

    def pending_events(self, ae_title: str, after: int | None = None,
                       limit: int = REPLAY_LIMIT, channel: str = "WS",
                       newest: bool = True) -> list[PendingEvent]:
        """The AE's events after its delivery cursor on ``channel`` (or ``after``),
        oldest first: the newest ``limit`` of them (a bounded replay), or with
        ``newest=False`` the oldest ``limit`` (a batch of an in-order sender)."""
        with self.store.transaction() as conn:
            if after is None:
                after = self._cursor(conn, ae_title, channel)
            pattern = "%" + _like_escape(json.dumps(ae_title)) + "%"
            rows = conn.execute(
                select(events_table.c.seq, events_table.c.payload, events_table.c.recipients)
                .where(and_(events_table.c.seq > after,
                            events_table.c.recipients.like(pattern, escape="!")))
                .order_by(events_table.c.seq.desc() if newest else events_table.c.seq)
                .limit(limit)).all()
        if newest:
            rows = list(reversed(rows))
        return [(r.seq, r.payload) for r in rows if ae_title in json.loads(r.recipients)]

    def delivered(self, ae_title: str, seq: int, channel: str = "WS") -> None:
        """Advance the AE's delivery cursor on ``channel`` to ``seq`` (never backwards)."""
        self.delivered_many({(ae_title, channel): seq})

    def delivered_many(self, cursors: dict[tuple[str, str], int]) -> None:
        """Advance several ``(AE, channel)`` cursors in one write transaction (the hub
        flushes every subscriber's cursor together: one commit, not one per AE)."""
        if not cursors:
            return
        with self.store.transaction(write=True) as conn:
            current = {(ae, ch): int(seq) for ae, ch, seq in conn.execute(
                select(subscriber_cursors.c.ae_title, subscriber_cursors.c.channel,
                       subscriber_cursors.c.delivered_seq)
                .where(subscriber_cursors.c.ae_title.in_({ae for ae, _ in cursors})))}
            for (ae, channel), seq in cursors.items():
                known = current.get((ae, channel))
                if known is None:
                    conn.execute(insert(subscriber_cursors).values(
                        ae_title=ae, channel=channel, delivered_seq=seq))
                elif seq > known:
                    conn.execute(update(subscriber_cursors).where(and_(
                        subscriber_cursors.c.ae_title == ae,
                        subscriber_cursors.c.channel == channel)).values(delivered_seq=seq))

    def delivery_cursor(self, ae_title: str, channel: str = "WS") -> int:
        with self.store.transaction() as conn:
            return self._cursor(conn, ae_title, channel)

    @staticmethod
    def _cursor(conn: Connection, ae_title: str, channel: str) -> int:
        value = conn.execute(select(subscriber_cursors.c.delivered_seq).where(and_(
            subscriber_cursors.c.ae_title == ae_title,
            subscriber_cursors.c.channel == channel))).scalar()
        return int(value or 0)

    @staticmethod
    def _upsert(conn: Connection, ae: str, kind: Kind, uid: str | None, lock: bool,
                filter_text: str | None, now: str, *, unsubscribed: bool = False) -> None:
        where = and_(subscriptions.c.ae_title == ae, subscriptions.c.kind == kind.value,
                     subscriptions.c.workitem_uid.is_(None) if uid is None
                     else subscriptions.c.workitem_uid == uid)
        values = dict(deletion_lock=lock, filter=filter_text, suspended=False,
                      covers_up_to=None, unsubscribed=unsubscribed)
        if conn.execute(update(subscriptions).where(where).values(**values)).rowcount:
            return
        conn.execute(insert(subscriptions).values(ae_title=ae, kind=kind.value,
                                                  workitem_uid=uid, created_at=now, **values))


def _locked(workitem_id: int, uid: str, dataset_text: str, locks: Any) -> bool:
    """Whether any AE holds a Deletion Lock on the workitem, by the same rules as the
    recipients of its events (an instance opt-out cancels that AE's global lock)."""
    opted_out = {r["ae_title"] for r in locks
                 if r["kind"] == Kind.WORKITEM.value and r["workitem_uid"] == uid
                 and r["unsubscribed"]}
    dataset = None
    for r in locks:
        if not r["deletion_lock"] or r["ae_title"] in opted_out:
            continue
        if r["kind"] == Kind.WORKITEM.value:
            if r["workitem_uid"] == uid and not r["unsubscribed"]:
                return True
            continue
        if r["suspended"] and (r["covers_up_to"] is None or workitem_id > r["covers_up_to"]):
            continue
        if r["kind"] == Kind.FILTERED.value:
            dataset = dataset if dataset is not None else json.loads(dataset_text)
            if not _filter_query(r["filter"]).matches(dataset):
                continue
        return True
    return False


def _initial_report(uid: str, dataset_text: str) -> UPSEvent:
    """PS3.4 CC.2.4.3: the State Report sent on subscribing (state and readiness)."""
    ds = json.loads(dataset_text)
    report: dict[str, Any] = {}
    for keyword in ("ProcedureStepState", "InputReadinessState"):
        if values(ds, keyword):
            report[tag_key(keyword)] = ds[tag_key(keyword)]
    return UPSEvent(EventType.UPS_STATE_REPORT, uid, sorted_json(report))
