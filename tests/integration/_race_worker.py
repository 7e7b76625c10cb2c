"""A claimant process for the cross-process claim race of test_service.py.

Kept in its own small module so that a ``spawn`` child imports only this and the
worklist package, not pytest and the test module.
"""

from __future__ import annotations

import threading
from typing import Any


def claim_all(url: str, uids: list[str], name: str, barrier: Any, results: Any,
              threads: int = 1) -> None:
    """Open the store at ``url`` and, from ``threads`` threads in step with every other
    claimant of every process (``barrier``), try to claim each workitem of ``uids``
    with a Transaction UID of our own.  Puts one result per attempt on ``results``."""
    from pydicom.uid import generate_uid

    from worklist import errors
    from worklist.service import Actor, WorklistService
    from worklist.store import open_store
    from worklist.values import Protocol

    store = open_store(url)
    service = WorklistService(store)

    def run(who: str) -> None:
        actor = Actor(Protocol.DIMSE, who)
        for uid in uids:
            tx = generate_uid()
            barrier.wait(timeout=60)
            try:
                service.change_state(uid, "IN PROGRESS", tx, actor)
                results.put((who, uid, "won", tx))
            except errors.UPSError as exc:
                results.put((who, uid, type(exc).__name__, int(exc.status)))

    try:
        workers = [threading.Thread(target=run, args=(f"{name}.{i}",)) for i in range(threads)]
        for t in workers:
            t.start()
        for t in workers:
            t.join()
    finally:
        store.engine.dispose()
