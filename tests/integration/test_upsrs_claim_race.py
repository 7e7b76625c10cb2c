"""The Transaction UID lock under concurrent claims over HTTP (PS3.4 CC.2.1.3): of any
number of claims of one workitem, exactly one wins, whether they race in threads
against one server or through two ``worklist serve`` processes on the same database.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.conftest import Server, start_server

from .upsrs_helpers import (DATABASES, DICOM_JSON, bring_to, create, database_for, dataset,
                            history, new_uid, retrieve, state_body, tag, update)

STATE = tag("ProcedureStepState")


def _claim(base_url: str, uid: str, tx: str, barrier: threading.Barrier | None) -> int:
    with httpx.Client(base_url=base_url, timeout=60) as client:
        client.get("/workitems", params={"limit": "1"})  # connect before the start line
        if barrier is not None:
            barrier.wait()
        r = client.put(f"/workitems/{uid}/state", json=state_body("IN PROGRESS", tx),
                       headers={"Content-Type": DICOM_JSON})
        assert r.status_code in (200, 409), r.text
        if r.status_code == 409:
            assert r.json()["status"] == "0xC302"
        return r.status_code


def _claims_in_history(client: httpx.Client, uid: str) -> list[dict[str, object]]:
    return [row for row in history(client, uid)
            if row["action"] == "CHANGE STATE" and row["state_after"] == "IN PROGRESS"]


def test_sixteen_threads_claim_one_workitem(client: httpx.Client, server: Server) -> None:
    """``server``/``client``: conftest's fresh server, on SQLite and PostgreSQL."""
    uid = create(client)
    txs = [new_uid() for _ in range(16)]
    barrier = threading.Barrier(len(txs))
    with ThreadPoolExecutor(len(txs)) as pool:
        results = list(pool.map(lambda tx: _claim(server.base_url, uid, tx, barrier), txs))
    assert sorted(results) == [200] + [409] * 15
    winner = txs[results.index(200)]
    assert retrieve(client, uid)[STATE]["Value"] == ["IN PROGRESS"]
    assert len(_claims_in_history(client, uid)) == 1
    # Only the winner's Transaction UID opens the lock.
    for tx in txs:
        r = update(client, uid, dataset(ProcedureStepLabel=f"by {tx[-8:]}"), tx)
        assert r.status_code == (200 if tx == winner else 400), r.text


@pytest.fixture(scope="module", params=DATABASES)
def two_servers(request: pytest.FixtureRequest,
                tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    """Two ``worklist serve`` processes on one database (an SQLite file, a PostgreSQL
    database)."""
    tmp_path = tmp_path_factory.mktemp(f"two-{request.param}")
    database = database_for(request, request.param, tmp_path)
    servers: list[Server] = []
    try:
        for _ in range(2):
            servers.append(start_server(tmp_path, database, dimse=False))
        yield servers
    finally:
        codes = [srv.stop() for srv in servers]
        assert codes == [0] * len(servers), [srv.log() for srv in servers]


def test_two_processes_claim_each_workitem_once(two_servers: list[Server]) -> None:
    first, second = two_servers
    items = 12
    with httpx.Client(base_url=first.base_url, timeout=60) as client:
        uids = [create(client) for _ in range(items)]
    # Four performers per server, each trying to claim every workitem, in its own order.
    performers = [(srv.base_url, random.Random(i).sample(uids, items))
                  for i, srv in enumerate([first, second] * 4)]
    barrier = threading.Barrier(len(performers))

    def perform(base_url: str, order: list[str]) -> list[tuple[str, str, int]]:
        won = []
        with httpx.Client(base_url=base_url, timeout=60) as client:
            client.get("/workitems", params={"limit": "1"})
            barrier.wait()
            for uid in order:
                tx = new_uid()
                r = client.put(f"/workitems/{uid}/state", json=state_body("IN PROGRESS", tx),
                               headers={"Content-Type": DICOM_JSON})
                assert r.status_code in (200, 409), r.text
                won.append((uid, tx, r.status_code))
        return won

    with ThreadPoolExecutor(len(performers)) as pool:
        outcomes = [o for result in pool.map(lambda p: perform(*p), performers) for o in result]
    wins = Counter(uid for uid, _, status in outcomes if status == 200)
    assert wins == Counter({uid: 1 for uid in uids})  # each item claimed exactly once
    assert len(outcomes) == items * len(performers)
    winners = {uid: tx for uid, tx, status in outcomes if status == 200}
    for srv in (first, second):
        with httpx.Client(base_url=srv.base_url, timeout=60) as client:
            for uid in uids:
                assert retrieve(client, uid)[STATE]["Value"] == ["IN PROGRESS"]
                assert len(_claims_in_history(client, uid)) == 1
    # The lock lives in the database: the other process honours the winner's UID.
    with httpx.Client(base_url=second.base_url, timeout=60) as client:
        for uid, tx in winners.items():
            assert update(client, uid, dataset(ProcedureStepLabel="mine"), tx).status_code == 200
            assert update(client, uid, dataset(ProcedureStepLabel="theirs"),
                          new_uid()).status_code == 400


def test_claim_release_cycle_across_processes(two_servers: list[Server]) -> None:
    """A workitem claimed through one process is completed through the other; a
    concurrent cancel request from the first is accepted and changes nothing."""
    first, second = two_servers
    with httpx.Client(base_url=first.base_url, timeout=60) as one, \
            httpx.Client(base_url=second.base_url, timeout=60) as two:
        uid, tx = bring_to(one, "IN PROGRESS")
        assert one.post(f"/workitems/{uid}/cancelrequest").status_code == 202
        r = two.put(f"/workitems/{uid}/state", json=state_body("COMPLETED", tx),
                    headers={"Content-Type": DICOM_JSON})
        assert r.status_code == 200, r.text
        assert retrieve(one, uid)[STATE]["Value"] == ["COMPLETED"]
        assert [row["action"] for row in history(one, uid)] == [
            "CREATE", "CHANGE STATE", "UPDATE", "REQUEST CANCEL", "CHANGE STATE"]
