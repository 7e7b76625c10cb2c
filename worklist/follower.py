"""Following Orthanc's change feed (``GET /changes``) to route arriving studies.

A background thread reads ``/changes?since=CURSOR&limit=N``: ``NewStudy`` applies the
routing rules (workitems start with Input Readiness INCOMPLETE), ``StableStudy`` applies
them again (a study whose NewStudy was missed still gets its workitems) and makes the
study's workitems READY with their complete Input Information Sequence (issue 5, point 3).

The cursor lives in the database and moves past a change only after the change has
been handled, so a restart of either side loses nothing; handling a change twice is
harmless because routing is idempotent.  When Orthanc cannot be reached or answers
errors, the follower retries with exponential backoff (up to 30 s) from the same cursor.
If Orthanc's feed restarts below our cursor (a new Orthanc database), the cursor is
reset to 0 and everything is routed again, idempotently.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from sqlalchemy import select

from . import errors
from .orthanc import OrthancClient
from .routing import Router
from .schema import orthanc_cursor
from .store import Store

__all__ = ["Follower", "CursorStore"]

log = logging.getLogger("worklist.follower")

_HANDLED = {"NewStudy": False, "StableStudy": True}  # change type → study is stable
_MAX_BACKOFF = 30.0


class CursorStore:
    """The follower's position in one Orthanc's change feed, in the database."""

    def __init__(self, store: Store, source: str) -> None:
        self.store, self.source = store, source

    def load(self) -> int:
        with self.store.transaction() as conn:
            seq = conn.execute(select(orthanc_cursor.c.seq)
                               .where(orthanc_cursor.c.source == self.source)).scalar()
        return int(seq or 0)

    def save(self, seq: int) -> None:
        with self.store.transaction(write=True) as conn:
            updated = conn.execute(orthanc_cursor.update()
                                   .where(orthanc_cursor.c.source == self.source)
                                   .values(seq=seq)).rowcount
            if not updated:
                conn.execute(orthanc_cursor.insert().values(source=self.source, seq=seq))


class Follower:
    """The thread that follows ``/changes`` and hands studies to the :class:`Router`."""

    def __init__(self, client: OrthancClient, router: Router, cursor: CursorStore, *,
                 poll_seconds: float = 1.0, batch: int = 100, workers: int = 4) -> None:
        self.client, self.router, self.cursor = client, router, cursor
        self.poll_seconds, self.batch, self.workers = poll_seconds, batch, workers
        self._pool: ThreadPoolExecutor | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="orthanc-follower", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _handle_study(self, item: tuple[str, list[bool]]) -> None:
        orthanc_id, flags = item
        for stable in flags:
            if self._stop.is_set():
                raise errors.ServiceUnavailable("stopping")  # the page is redone next time
            try:
                created = self.router.route(orthanc_id, stable=stable)
            except errors.ServiceUnavailable:
                raise  # Orthanc or the database: retry this page later
            except errors.UPSError as exc:  # e.g. an attribute the service refuses
                log.warning("study %s could not be routed; skipped: %s", orthanc_id, exc.message)
                continue
            except Exception:  # an odd study never stops the feed (issue 5, bad input)
                log.exception("study %s could not be routed; skipped", orthanc_id)
                continue
            if created:
                log.info("study %s: %d workitem(s) created", orthanc_id, len(created))

    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            try:
                done = self.step()
                backoff = 0.0
                if done:
                    self._stop.wait(self.poll_seconds)
            except Exception as exc:  # Orthanc down, database busy, a bug: never die
                if self._stop.is_set():
                    break
                backoff = min(_MAX_BACKOFF, max(0.25, backoff * 2))
                level = logging.WARNING if isinstance(exc, errors.UPSError) else logging.ERROR
                log.log(level, "following Orthanc failed (%s); retrying in %.1f s", exc, backoff,
                        exc_info=level == logging.ERROR)
                self._stop.wait(backoff)

    def step(self) -> bool:
        """Handle one page of changes; True when the feed is exhausted."""
        since = self.cursor.load()
        page: dict[str, Any] = self.client.changes(since, self.batch)
        changes = page.get("Changes", [])
        if not changes and int(page.get("Last", 0)) < since:
            log.warning("Orthanc's change feed (last %s) is behind our cursor %s: a new Orthanc "
                        "database? Following it from the start", page.get("Last"), since)
            self.cursor.save(0)
            return False
        # One task per study, in feed order within it; studies in parallel (a burst of
        # StableStudy changes would otherwise queue behind each other).  The cursor moves
        # past the page only when all of it is handled; a retry redoes it, idempotently.
        work: dict[str, list[bool]] = {}
        for change in changes:
            stable = _HANDLED.get(change.get("ChangeType", ""))
            if stable is not None and change.get("ResourceType") == "Study":
                flags = work.setdefault(change["ID"], [])
                if not flags or flags[-1] != stable:
                    flags.append(stable)
        if work:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="orthanc-route")
            list(self._pool.map(self._handle_study, work.items()))
        if changes:
            self.cursor.save(int(changes[-1]["Seq"]))
        if not changes and page.get("Last") is not None and int(page["Last"]) > since:
            self.cursor.save(int(page["Last"]))
        return bool(page.get("Done", True))
