"""The server's housekeeping thread, in a real ``worklist serve`` process: finished
workitems purged after ``retention_hours`` (410 Gone after, PS3.4 CC.2.3.1 deletion
locks honoured) and the outbox pruned of events every subscriber has received."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from tests.conftest import start_server
from tests.integration.upsrs_helpers import bring_to

GLOBAL = "1.2.840.10008.5.1.4.34.5"


def test_the_server_purges_expired_workitems_by_itself(tmp_path: Path) -> None:
    # 0.0005 h = 1.8 s of retention; the thread then runs every second
    server = start_server(tmp_path, dimse=False,
                          env={"WORKLIST_RETENTION_HOURS": "0.0005"})
    try:
        with httpx.Client(base_url=server.base_url, timeout=10) as c:
            done, _ = bring_to(c, "COMPLETED")
            kept, _ = bring_to(c, "CANCELED")
            r = c.post(f"/workitems/{kept}/subscribers/KEEPER", params={"deletionlock": "true"})
            assert r.status_code == 201, r.text
            running, _ = bring_to(c, "IN PROGRESS")
            deadline = time.monotonic() + 20
            while c.get(f"/workitems/{done}").status_code != 410:
                assert time.monotonic() < deadline, "not purged within 20 s:\n" + server.log()
                time.sleep(0.2)
            time.sleep(1.5)  # another round: the locked and the running ones stay
            assert c.get(f"/workitems/{kept}").status_code == 200
            assert c.get(f"/workitems/{running}").status_code == 200
        assert "retention: purged 1 finished workitems" in server.log()
    finally:
        assert server.stop() == 0
