"""UPS subscriptions over UPS-RS (PS3.18 11.10-11.12) and event delivery over the
subscriber's WebSocket (PS3.18 8.10), against a real server on a free port, on SQLite
and on PostgreSQL.

Covers the statuses of subscribe / unsubscribe / suspend, every workitem event type
produced by a UPS-RS change arriving as DICOM JSON with Event Type ID (0000,1002),
ordering, replay after a reconnect and after a server restart, the CC.2.3.1 state
model (global covers new workitems, instance unsubscribe overrides global, suspend),
filtered subscriptions, and the refusals for bad input.
"""

from __future__ import annotations

import pytest

from tests.integration.subscription_helpers import (EVERY_EVENT_TYPE, FILTERED, GLOBAL,
                                                    EventReader, event_type,
                                                    produce_every_event_type, served, value)
from tests.integration.upsrs_helpers import claim, create, new_uid
from worklist.values import UPS_PUSH

STATE = "00741000"
READINESS = "00404041"


@pytest.fixture
def db(database_url: str) -> str:
    """A fresh SQLite file, then a fresh PostgreSQL database (tests/conftest.py)."""
    return database_url


@pytest.fixture
def srv(db: str):
    with served(db) as s:
        yield s


def subscribe(client, uid: str, ae: str, **params):
    # ``ae`` goes into the path as it is: percent-encode what a URL cannot hold
    return client.post(f"/workitems/{uid}/subscribers/{ae}", params=params)


# -- statuses ------------------------------------------------------------------------
def test_subscribe_answers_201_with_the_websocket_url(srv) -> None:
    with srv.client() as c:
        uid = create(c)
        r = subscribe(c, uid, "VIEWER1", deletionlock="true")
        assert r.status_code == 201, r.text
        url = f"ws://127.0.0.1:{srv.port}/dicom-web/ws/subscribers/VIEWER1"
        assert r.headers["Content-Location"] == url
        assert r.headers["Location"] == url
        subs = srv.service.subscriptions_of("VIEWER1")
        assert [(s["kind"], s["workitem_uid"], s["deletion_lock"]) for s in subs] == \
            [("WORKITEM", uid, True)]
        assert subscribe(c, GLOBAL, "VIEWER1").status_code == 201
        assert subscribe(c, FILTERED, "VIEWER1",
                         filter="WorklistLabel=ct,ScheduledProcedureStepPriority=HIGH"
                         ).status_code == 201
        kinds = {s["kind"]: s for s in srv.service.subscriptions_of("VIEWER1")}
        assert kinds["GLOBAL"]["deletion_lock"] is False
        assert "00741200" in kinds["FILTERED"]["filter"]  # Scheduled Procedure Step Priority
        # the subscription is in the workitem's history
        actions = [h["action"] for h in c.get(f"/../api/workitems/{uid}/history").json()]
        assert "SUBSCRIBE" in actions


def test_deletion_lock_not_granted_is_a_warning(db: str) -> None:
    with served(db, grant_deletion_locks=False) as s, s.client() as c:
        r = subscribe(c, create(c), "VIEWER1", deletionlock="true")
        assert r.status_code == 201
        assert r.headers["Warning"].endswith("Deletion Lock not granted.")
        assert s.service.subscriptions_of("VIEWER1")[0]["deletion_lock"] is False


@pytest.mark.parametrize("ae", ["A" * 17, "BAD%5CAE", "%20%20%20", "TAB%09AE", "%C3%84E"])
def test_malformed_ae_titles_are_400(srv, ae: str) -> None:
    with srv.client() as c:
        uid = create(c)
        r = subscribe(c, uid, ae)
        assert r.status_code == 400, r.text
        assert r.json()["status"] == "0x0115"


def test_bad_requests(srv) -> None:
    with srv.client() as c:
        assert subscribe(c, new_uid(), "VIEWER1").status_code == 404  # C307
        uid = create(c)
        assert subscribe(c, uid, "VIEWER1", deletionlock="maybe").status_code == 400
        # filtered without filter, with an unknown attribute, with a non-attribute
        assert subscribe(c, FILTERED, "VIEWER1").status_code == 400
        assert subscribe(c, FILTERED, "VIEWER1", filter="NoSuchKeyword=1").status_code == 400
        assert subscribe(c, FILTERED, "VIEWER1", filter="00991234=1").status_code == 400
        # suspend of an instance subscription: C314 -> 400
        assert subscribe(c, uid, "VIEWER1").status_code == 201
        r = c.post(f"/workitems/{uid}/subscribers/VIEWER1/suspend")
        assert r.status_code == 400 and r.json()["status"] == "0xC314"


def test_unsubscribe_and_suspend_statuses(srv) -> None:
    with srv.client() as c:
        uid = create(c)
        assert c.delete(f"/workitems/{uid}/subscribers/VIEWER1").status_code == 404
        assert c.delete(f"/workitems/{GLOBAL}/subscribers/VIEWER1").status_code == 404
        assert c.post(f"/workitems/{GLOBAL}/subscribers/VIEWER1/suspend").status_code == 404
        assert subscribe(c, uid, "VIEWER1").status_code == 201
        assert c.delete(f"/workitems/{uid}/subscribers/VIEWER1").status_code == 200
        assert c.delete(f"/workitems/{uid}/subscribers/VIEWER1").status_code == 404
        assert subscribe(c, GLOBAL, "VIEWER1").status_code == 201
        assert c.post(f"/workitems/{GLOBAL}/subscribers/VIEWER1/suspend").status_code == 200
        assert srv.service.subscriptions_of("VIEWER1")[0]["suspended"] is True
        assert c.delete(f"/workitems/{GLOBAL}/subscribers/VIEWER1").status_code == 200
        assert srv.service.subscriptions_of("VIEWER1") == []


# -- events over the WebSocket --------------------------------------------------------
def test_every_workitem_event_type_arrives_in_order(srv) -> None:
    with srv.client() as c:
        assert subscribe(c, GLOBAL, "VIEWER1").status_code == 201
        with EventReader(srv.ws_url("VIEWER1")) as reader:
            uid = produce_every_event_type(c)
            events = reader.wait_for(len(EVERY_EVENT_TYPE))
            assert len(reader.quiet()) == len(EVERY_EVENT_TYPE)
    assert [event_type(e) for e in events] == EVERY_EVENT_TYPE, events
    for e in events:
        assert value(e, "00000002") == UPS_PUSH
        assert value(e, "00001000") == uid
    assert [value(e, STATE) for e in events if event_type(e) == 1] == \
        ["SCHEDULED", "IN PROGRESS", "IN PROGRESS", "COMPLETED"]
    assert value(events[4], READINESS) == "UNAVAILABLE"
    assert value(events[5], "00741238") == "no longer needed"
    assert value(events[5], "00741236") == "127.0.0.1"  # Requesting AE: the client
    assert "00741002" in events[3]  # Procedure Step Progress Information Sequence
    assert "00404034" in events[1]  # Scheduled Human Performers Sequence


def test_instance_subscription_gets_the_initial_report_and_only_its_workitem(srv) -> None:
    with srv.client() as c:
        mine, other = create(c), create(c)
        with EventReader(srv.ws_url("VIEWER2")) as reader:
            pass  # closed at once: no subscription yet
        assert reader.closed is not None and reader.closed[0] == 1008
        assert subscribe(c, mine, "VIEWER2").status_code == 201
        with EventReader(srv.ws_url("VIEWER2")) as reader:
            claim(c, other)
            claim(c, mine)
            events = reader.wait_for(2)
            assert len(reader.quiet()) == 2
    assert [(event_type(e), value(e, "00001000"), value(e, STATE)) for e in events] == \
        [(1, mine, "SCHEDULED"), (1, mine, "IN PROGRESS")]


def test_unknown_subscriber_websocket_is_closed_1008(srv) -> None:
    with EventReader(srv.ws_url("NOBODY")) as reader:
        reader.quiet(0.2)
    assert reader.closed is not None
    assert reader.closed[0] == 1008 and "subscri" in reader.closed[1]


def test_global_with_lock_sends_a_report_per_existing_workitem(srv) -> None:
    with srv.client() as c:
        uids = [create(c) for _ in range(3)]
        assert subscribe(c, GLOBAL, "LOCKER", deletionlock="true").status_code == 201
        assert subscribe(c, GLOBAL, "NOLOCK").status_code == 201
        with EventReader(srv.ws_url("LOCKER")) as locker, \
                EventReader(srv.ws_url("NOLOCK")) as nolock:
            got = locker.wait_for(3)
            assert nolock.quiet() == []
    assert [value(e, "00001000") for e in got][-3:] == uids


def test_instance_unsubscribe_overrides_global_and_suspend_keeps_existing(srv) -> None:
    with srv.client() as c:
        old, quiet = create(c), create(c)
        assert subscribe(c, GLOBAL, "V3").status_code == 201
        assert c.delete(f"/workitems/{quiet}/subscribers/V3").status_code == 200
        assert c.post(f"/workitems/{GLOBAL}/subscribers/V3/suspend").status_code == 200
        new = create(c)  # created after the suspension: not covered
        with EventReader(srv.ws_url("V3")) as reader:
            claim(c, new)
            claim(c, quiet)
            claim(c, old)
            events = reader.wait_for(1)
            assert len(reader.quiet()) == 1
    assert value(events[0], "00001000") == old


def test_filtered_subscription_gets_matching_workitems_only(srv) -> None:
    with srv.client() as c:
        assert subscribe(c, FILTERED, "CTVIEW",
                         filter="WorklistLabel=ct-reading").status_code == 201
        with EventReader(srv.ws_url("CTVIEW")) as reader:
            create(c, worklist_label="mr-reading")
            ct = create(c, worklist_label="ct-reading")
            events = reader.wait_for(1)
            assert len(reader.quiet()) == 1
    assert value(events[0], "00001000") == ct


def test_replay_after_reconnect_and_restart(db: str) -> None:
    with served(db) as s, s.client() as c:
        assert subscribe(c, GLOBAL, "OFFLINE").status_code == 201
        first = create(c)
        with EventReader(s.ws_url("OFFLINE")) as reader:
            assert len(reader.wait_for(1)) == 1
        # offline: kept in the outbox, replayed on reconnect, in order
        second = create(c)
        claim(c, second)
        with EventReader(s.ws_url("OFFLINE")) as reader:
            events = reader.wait_for(2)
            assert len(reader.quiet()) == 2
        assert [(value(e, "00001000"), value(e, STATE)) for e in events] == \
            [(second, "SCHEDULED"), (second, "IN PROGRESS")]
        third = create(c)
    # the server stops; the event for `third` must survive
    with served(db) as s, s.client() as c:
        fourth = create(c)
        with EventReader(s.ws_url("OFFLINE")) as reader:
            events = reader.wait_for(2)
            assert len(reader.quiet()) == 2
    assert [value(e, "00001000") for e in events] == [third, fourth]
    assert first != third


def test_a_subscriber_that_never_reads_does_not_stall_others(db: str) -> None:
    import socket

    with served(db) as s, s.client() as c:
        for ae in ("STUCK", "FAST"):
            assert subscribe(c, GLOBAL, ae).status_code == 201
        # a raw WebSocket handshake that then never reads a byte
        raw = socket.create_connection(("127.0.0.1", s.port))
        raw.sendall(b"GET /dicom-web/ws/subscribers/STUCK HTTP/1.1\r\nHost: x\r\n"
                    b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                    b"Sec-WebSocket-Version: 13\r\n\r\n")
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        try:
            with EventReader(s.ws_url("FAST")) as reader:
                uids = [create(c, label="x" * 60) for _ in range(40)]
                events = reader.wait_for(40)
            assert [value(e, "00001000") for e in events] == uids
        finally:
            raw.close()


def test_scp_status_change_reaches_every_subscriber(srv) -> None:
    with srv.client() as c:
        assert subscribe(c, create(c), "V4").status_code == 201
        with EventReader(srv.ws_url("V4")) as reader:
            reader.wait_for(1)  # the initial State Report
            srv.service.announce_scp_status("GOING DOWN")
            srv.service.announce_scp_status("RESTARTED")
            events = reader.wait_for(3)[1:]
    assert [event_type(e) for e in events] == [4, 4]
    assert value(events[0], "00741242") == "GOING DOWN"
    assert value(events[1], "00741242") == "RESTARTED"
    assert value(events[1], "00741244") == "WARM START"
    assert value(events[1], "00741246") == "WARM START"
    assert value(events[1], "00001000") == GLOBAL


def test_a_version_2_database_is_migrated_to_subscriptions(tmp_path) -> None:
    from sqlalchemy import inspect, text

    from worklist.schema import SCHEMA_VERSION
    from worklist.store import open_store

    url = f"sqlite:///{tmp_path / 'old.db'}"
    store = open_store(url)
    with store.transaction(write=True) as conn:
        v2_tables = {"workitems", "performers", "workitem_codes", "requests", "history",
                     "schema_version", "orthanc_cursor", "routed_studies"}
        later = [t for t in inspect(conn).get_table_names() if t not in v2_tables]
        for table in sorted(later, key=lambda t: t != "result_items"):  # children first
            conn.exec_driver_sql(f"DROP TABLE {table}")
        conn.execute(text("UPDATE schema_version SET version = 2"))
    store.engine.dispose()
    store = open_store(url)
    with store.transaction() as conn:
        names = set(inspect(conn).get_table_names())
        assert conn.execute(text("SELECT version FROM schema_version")).scalar_one() == \
            SCHEMA_VERSION
    assert {"subscriptions", "events", "subscriber_cursors"} <= names
    store.engine.dispose()


def test_retention_purges_finished_workitems_unless_locked(srv) -> None:
    from tests.integration.upsrs_helpers import bring_to

    with srv.client() as c:
        done, _ = bring_to(c, "COMPLETED")
        locked, _ = bring_to(c, "CANCELED")
        running, _ = bring_to(c, "IN PROGRESS")
        assert subscribe(c, locked, "KEEPER", deletionlock="true").status_code == 201
        assert subscribe(c, GLOBAL, "WATCHER").status_code == 201  # no lock: no effect
        purged = srv.service.purge_expired(0)
        assert done in purged and locked not in purged and running not in purged
        assert c.get(f"/workitems/{done}").status_code == 410
        assert c.get(f"/workitems/{locked}").status_code == 200
        assert c.get(f"/workitems/{running}").status_code == 200
        # a global lock holds every finished workitem it covers, until it goes
        assert subscribe(c, GLOBAL, "ARCHIVE", deletionlock="true").status_code == 201
        assert c.delete(f"/workitems/{locked}/subscribers/KEEPER").status_code == 200
        assert locked not in srv.service.purge_expired(0)
        assert c.delete(f"/workitems/{GLOBAL}/subscribers/ARCHIVE").status_code == 200
        assert locked in srv.service.purge_expired(0)
        assert c.get(f"/workitems/{locked}").status_code == 410
        assert subscribe(c, locked, "LATE").status_code == 410


def test_outbox_keeps_events_until_every_subscriber_has_them(srv) -> None:
    """Outbox rows go once every subscribed AE has received them, or when older than the
    replay bound; an AE that unsubscribed does not hold them."""
    from sqlalchemy import select

    from worklist.schema import events as events_table

    def seqs() -> list[int]:
        with srv.service.store.transaction() as conn:
            return [r[0] for r in conn.execute(select(events_table.c.seq)
                                               .order_by(events_table.c.seq))]

    with srv.client() as c:
        assert subscribe(c, GLOBAL, "FAST").status_code == 201
        assert subscribe(c, GLOBAL, "SLOW").status_code == 201
        for _ in range(4):
            create(c)
        all_seqs = seqs()
        assert len(all_seqs) == 4  # one State Report per creation, for both AEs
        srv.service.delivered("FAST", all_seqs[-1])
        srv.service.delivered("SLOW", all_seqs[1], channel="DIMSE")
        assert srv.service.prune_events(3600) == 2  # what SLOW has received
        assert seqs() == all_seqs[2:]
        assert [s for s, _ in srv.service.pending_events("SLOW", channel="DIMSE")] == \
            all_seqs[2:]  # the rest stays replayable for SLOW
        assert srv.service.prune_events(3600) == 0
        # once SLOW has gone, nobody needs them; the newest row always stays, so the
        # numbering continues after the cursors (SQLite reuses max(rowid) + 1)
        assert c.delete(f"/workitems/{GLOBAL}/subscribers/SLOW").status_code == 200
        assert srv.service.prune_events(3600) == 1
        assert seqs() == all_seqs[3:]
        create(c)
        create(c)
        head = all_seqs[3]
        assert seqs() == [head, head + 1, head + 2]
        assert srv.service.prune_events(3600) == 1  # FAST had the old head
        assert seqs() == [head + 1, head + 2]
        assert srv.service.prune_events(3600) == 0  # FAST has not received these
        assert srv.service.prune_events(0) == 1  # past the replay bound: gone anyway
        assert seqs() == [head + 2]
