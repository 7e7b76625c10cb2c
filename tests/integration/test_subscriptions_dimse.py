"""Subscriptions over DIMSE: N-ACTION 3 (Subscribe), 4 (Unsubscribe), 5 (Suspend Global
Subscription) of PS3.4 CC.2.3 against the real DIMSE server on a free port, with the
statuses B301, C307, C308, C314 and 0115, and the events of a DIMSE change arriving
on a UPS-RS subscriber's WebSocket (one outbox, every path)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dimse import DimseServer, start_dimse
from tests.integration.subscription_helpers import (EVERY_EVENT_TYPE, FILTERED, GLOBAL,
                                                    EventReader, Served, event_type,
                                                    produce_every_event_type, serve, value)
from tests.integration.test_dimse import (_settings, assert_status, claimed, create, scu)
from worklist.values import UPS_EVENT, UPS_PUSH, UPS_WATCH

PEER = "EVENTSCU"


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Served, DimseServer]]:
    path: Path = tmp_path_factory.mktemp("subs-dimse") / "worklist.db"
    srv = serve(f"sqlite:///{path}", known_ae=lambda ae: ae == PEER)
    dimse = start_dimse(srv.service, _settings(), port=0)
    try:
        yield srv, dimse
    finally:
        dimse.stop()
        srv.stop()


def action(assoc: Any, kind: int, uid: str, ae: str | None = PEER,
           lock: str | None = "FALSE", **keys: Any) -> Dataset:
    info = Dataset()
    if ae is not None:
        info.ReceivingAE = ae
    if lock is not None and kind == 3:
        info.DeletionLock = lock
    for keyword, val in keys.items():
        setattr(info, keyword, val)
    status, _ = assoc.send_n_action(info, kind, UPS_PUSH, uid, meta_uid=UPS_WATCH)
    return status


def test_subscribe_unsubscribe_suspend_statuses(both) -> None:
    srv, dimse = both
    with scu(dimse.port) as assoc:
        status, uid = create(assoc)
        assert_status(status, 0)
        assert_status(action(assoc, 3, uid, lock="TRUE"), 0)
        subs = [s for s in srv.service.subscriptions_of(PEER) if s["workitem_uid"] == uid]
        assert subs[0]["deletion_lock"] is True
        assert_status(action(assoc, 3, generate_uid()), 0xC307)  # no such workitem
        assert_status(action(assoc, 3, uid, ae="UNKNOWNAE"), 0xC308)  # no address
        assert_status(action(assoc, 3, uid, ae=None), 0x0115)  # Receiving AE missing
        assert_status(action(assoc, 3, uid, lock="MAYBE"), 0x0115)
        assert_status(action(assoc, 3, uid, ae="BAD\\AE"), 0x0115)
        assert_status(action(assoc, 5, uid), 0xC314)  # suspend targets a global UID
        assert_status(action(assoc, 3, uid, WorklistLabel="x"), 0xC314)  # keys: filtered only
        assert_status(action(assoc, 4, uid), 0)
        assert not [s for s in srv.service.subscriptions_of(PEER) if s["workitem_uid"] == uid]
        assert_status(action(assoc, 3, GLOBAL), 0)
        assert_status(action(assoc, 5, GLOBAL), 0)
        assert srv.service.subscriptions_of(PEER)[0]["suspended"] is True
        assert_status(action(assoc, 3, FILTERED, WorklistLabel="ct"), 0)
        assert_status(action(assoc, 3, FILTERED), 0x0115)  # filtered needs Matching Keys
        assert_status(action(assoc, 4, GLOBAL), 0)
        assert srv.service.subscriptions_of(PEER) == []


def test_deletion_lock_not_granted_is_b301(tmp_path: Path) -> None:
    srv = serve(f"sqlite:///{tmp_path / 'w.db'}", known_ae=lambda ae: True,
                grant_deletion_locks=False)
    dimse = start_dimse(srv.service, _settings(), port=0)
    try:
        with scu(dimse.port) as assoc:
            status, uid = create(assoc)
            assert_status(action(assoc, 3, uid, lock="TRUE"), 0xB301)
            assert_status(action(assoc, 3, uid, lock="FALSE"), 0)
    finally:
        dimse.stop()
        srv.stop()


def test_dimse_changes_reach_a_websocket_subscriber(both) -> None:
    srv, dimse = both
    with srv.client() as c:
        assert c.post(f"/workitems/{GLOBAL}/subscribers/WSVIEW").status_code == 201
    with EventReader(srv.ws_url("WSVIEW")) as reader, scu(dimse.port) as assoc:
        uid, tx = claimed(assoc)
        cancel = Dataset()
        cancel.ReasonForCancellation = "stop"
        status, _ = assoc.send_n_action(cancel, 2, UPS_PUSH, uid, meta_uid=UPS_WATCH)
        assert_status(status, 0)
        events = reader.wait_for(3)
    assert [(event_type(e), value(e, "00001000")) for e in events] == \
        [(1, uid), (1, uid), (2, uid)]
    assert value(events[2], "00741236") == "TESTSCU"  # Requesting AE: the calling AE


# -- N-EVENT-REPORT delivery (dimse.events) --------------------------------------------
class Receiver:
    """A pynetdicom subscriber: accepts UPS Event with the worklist as SCP (role
    selection) and records every N-EVENT-REPORT."""

    def __init__(self, ae_title: str, port: int = 0) -> None:
        import threading

        from pynetdicom import AE, evt

        self.events: list[tuple[int, str, Dataset]] = []
        self.lock = threading.Lock()
        ae = AE(ae_title=ae_title)
        ae.add_supported_context(UPS_EVENT, scu_role=True, scp_role=True)
        self.server = ae.start_server(("127.0.0.1", port), block=False,
                                      evt_handlers=[(evt.EVT_N_EVENT_REPORT, self._on_report)])
        self.port = self.server.server_address[1]

    def _on_report(self, event: Any) -> tuple[int, None]:
        req = event.request
        with self.lock:
            self.events.append((int(req.EventTypeID), str(req.AffectedSOPInstanceUID),
                                event.event_information))
        return 0x0000, None

    def wait_for(self, count: int, timeout: float = 10) -> list[tuple[int, str, Dataset]]:
        import time
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.events) >= count:
                    return list(self.events)
            time.sleep(0.02)
        with self.lock:
            return list(self.events)

    def stop(self) -> None:
        active = list(self.server.active_associations)
        self.server.shutdown()
        for assoc in active:
            if assoc.is_established:
                assoc.abort()


def test_events_reach_a_dimse_subscriber_in_order_and_after_an_outage(
        database_url: str) -> None:
    """On SQLite and on PostgreSQL (the ``database_url`` fixture)."""
    from dimse.events import EventSender
    from tests.conftest import free_port

    port = free_port()
    receiver = Receiver("EVRCV", port)
    srv = serve(database_url, known_ae=lambda ae: ae == "EVRCV")
    dimse = start_dimse(srv.service, _settings(), port=0)
    sender = EventSender(srv.service, "EVRCV", f"127.0.0.1:{port}", calling_ae="WORKLIST",
                         timeout=5).start()
    try:
        with scu(dimse.port) as assoc:
            assert_status(action(assoc, 3, GLOBAL, ae="EVRCV"), 0)
            uid, tx = claimed(assoc)
            got = receiver.wait_for(2)
            assert [(t, u) for t, u, _ in got] == [(1, uid), (1, uid)]
            assert [str(ds.ProcedureStepState) for _, _, ds in got] == \
                ["SCHEDULED", "IN PROGRESS"]
            receiver.stop()  # the subscriber goes away: events wait in the outbox
            second, _ = claimed(assoc)
        receiver = Receiver("EVRCV", port)  # ...and comes back: retried with backoff
        got = receiver.wait_for(2, timeout=20)
        assert [(t, u) for t, u, _ in got] == [(1, second), (1, second)]
        assert srv.service.delivery_cursor("EVRCV", "DIMSE") > 0
    finally:
        sender.stop()
        dimse.stop()
        srv.stop()
        receiver.stop()


def test_every_event_type_reaches_a_dimse_subscriber(database_url: str) -> None:
    from dimse.events import EventSender
    from tests.conftest import free_port

    port = free_port()
    receiver = Receiver("EVALL", port)
    srv = serve(database_url, known_ae=lambda ae: ae == "EVALL")
    dimse = start_dimse(srv.service, _settings(), port=0)
    sender = EventSender(srv.service, "EVALL", f"127.0.0.1:{port}", calling_ae="WORKLIST",
                         timeout=5).start()
    try:
        with scu(dimse.port) as assoc:
            assert_status(action(assoc, 3, GLOBAL, ae="EVALL"), 0)
        with srv.client() as c:
            uid = produce_every_event_type(c)
        srv.service.announce_scp_status("GOING DOWN")
        got = receiver.wait_for(len(EVERY_EVENT_TYPE) + 1)
        assert [t for t, _, _ in got] == EVERY_EVENT_TYPE + [4]
        assert {u for _, u, _ in got[:-1]} == {uid}
        assert got[-1][1] == GLOBAL and str(got[-1][2].SCPStatus) == "GOING DOWN"
        assert str(got[5][2].ReasonForCancellation) == "no longer needed"
        assert "ScheduledHumanPerformersSequence" in got[1][2]
        assert "ProcedureStepProgressInformationSequence" in got[3][2]
    finally:
        sender.stop()
        dimse.stop()
        srv.stop()
        receiver.stop()


def test_worklist_serve_with_a_peer_delivers_and_announces(tmp_path: Path) -> None:
    """The composition root: ``worklist serve --peer`` accepts the peer's subscription,
    starts its N-EVENT-REPORT sender, and reports GOING DOWN / RESTARTED (type 4)."""
    from tests.conftest import free_port, start_server

    port = free_port()
    receiver = Receiver("EVSERVE", port)
    db = f"sqlite:///{tmp_path / 'serve.db'}"
    srv = start_server(tmp_path, db, extra=["--peer", f"EVSERVE=127.0.0.1:{port}"])
    try:
        with scu(srv.dimse_port) as assoc:
            assert_status(action(assoc, 3, GLOBAL, ae="EVSERVE"), 0)
            assert_status(action(assoc, 3, GLOBAL, ae="STRANGER"), 0xC308)
            uid, _ = claimed(assoc)
        got = receiver.wait_for(2)
        assert [(t, u) for t, u, _ in got] == [(1, uid), (1, uid)]
    finally:
        assert srv.stop() == 0, srv.log()
    assert "Traceback" not in srv.log(), srv.log()
    srv = start_server(tmp_path, db, extra=["--peer", f"EVSERVE=127.0.0.1:{port}"])
    try:
        got = receiver.wait_for(4)
        assert [(t, str(ds.SCPStatus)) for t, _, ds in got[2:4]] == \
            [(4, "GOING DOWN"), (4, "RESTARTED")]
    finally:
        assert srv.stop() == 0, srv.log()
        receiver.stop()


def test_the_sender_process_is_restarted_and_resumes_from_its_cursor(tmp_path: Path) -> None:
    """dimse.eventprocess: the N-EVENT-REPORT senders' child process, killed, is started
    again by the server's supervisor and goes on from the persisted cursor."""
    import os
    import signal
    import time

    from dimse.eventprocess import SenderProcess
    from tests.conftest import free_port
    from tests.integration.upsrs_helpers import create as upsrs_create

    port = free_port()
    receiver = Receiver("EVPROC", port)
    db = f"sqlite:///{tmp_path / 'w.db'}"
    srv = serve(db, known_ae=lambda ae: ae == "EVPROC")
    senders = SenderProcess(db, {"EVPROC": f"127.0.0.1:{port}"}, "WORKLIST", timeout=5).start()
    try:
        with srv.client() as c:
            assert c.post(f"/workitems/{GLOBAL}/subscribers/EVPROC").status_code == 201
            first = upsrs_create(c)
            assert [(t, u) for t, u, _ in receiver.wait_for(1)] == [(1, first)]
            os.kill(senders._process.pid, signal.SIGKILL)  # the child dies
            second = upsrs_create(c)  # written to the outbox meanwhile
            # the supervisor restarts it; at least once: the first may come again (its
            # cursor may not have been written before the kill), then the second
            def received() -> list[str]:
                with receiver.lock:
                    return [u for _, u, _ in receiver.events]

            deadline = time.monotonic() + 20
            while second not in received():
                assert time.monotonic() < deadline, "no event after the restart"
                time.sleep(0.1)
            uids = received()
            assert uids[-1] == second and set(uids[:-1]) == {first}
    finally:
        senders.stop()
        srv.stop()
        receiver.stop()
