"""The N-EVENT-REPORT senders in a process of their own (issue 4: speed).

A sender spends its time encoding events and waiting for each peer's answer; in the
server's process its threads compete for the interpreter with the requests that make
the changes (five subscribers at 200 events a second halved the changes the server
could take).  The outbox is in the database, so the senders need nothing from the
server's process: this child opens the same database, reads the outbox every
``poll`` seconds (its own event hub), sends with :class:`dimse.events.EventSender` and
writes the delivery cursors.  Order, retries with backoff and at-least-once delivery
are the sender's, unchanged.

The parent restarts the child if it dies (after a pause) and stops it with the server:
the child first gives its senders up to ``drain`` seconds to deliver what is already
in the outbox (the GOING DOWN report among it), then writes its cursors and exits.
"""

from __future__ import annotations

import logging
import multiprocessing
import signal
import threading
import time
from typing import Any

__all__ = ["SenderProcess", "run_senders"]

log = logging.getLogger("worklist.dimse.events")
_POLL = 0.02
_RESTART_PAUSE = 2.0


def run_senders(database_url: str, peers: dict[str, str], calling_ae: str, timeout: float,
                log_level: str = "INFO", poll: float = _POLL, drain: float = 3.0) -> None:
    """Process entry point: deliver the peers' events until SIGTERM (or SIGINT).

    A signal, not a shared multiprocessing.Event: a child killed while waiting on such
    an Event leaves it unusable, and the parent's set() would then block forever."""
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    logging.basicConfig(level=log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from worklist.service import WorklistService
    from worklist.store import open_store

    from .events import EventSender

    store = open_store(database_url)
    service = WorklistService(store)
    service.hub.poll_seconds = poll  # no in-process wake-ups here: read the outbox often
    senders = [EventSender(service, ae, addr, calling_ae=calling_ae, timeout=timeout).start()
               for ae, addr in peers.items()]
    try:
        stop.wait()
        deadline = time.monotonic() + drain
        while time.monotonic() < deadline and any(s.pending() for s in senders):
            time.sleep(0.05)
    finally:
        for sender in senders:
            sender.stop()
        service.hub.stop()
        store.engine.dispose()


class SenderProcess:
    """Runs :func:`run_senders` in a child process, restarted if it dies."""

    def __init__(self, database_url: str, peers: dict[str, str], calling_ae: str, *,
                 timeout: float = 10.0, log_level: str = "INFO") -> None:
        self._args = (database_url, dict(peers), calling_ae, timeout)
        self._log_level = log_level
        self._mp = multiprocessing.get_context("spawn")
        self._process: Any = None
        self._stopping = threading.Event()
        self._watch = threading.Thread(target=self._supervise, name="event-senders",
                                       daemon=True)

    def start(self) -> SenderProcess:
        self._spawn()
        self._watch.start()
        return self

    def _spawn(self) -> None:
        self._process = self._mp.Process(
            target=run_senders, args=(*self._args, self._log_level),
            name="worklist-event-senders", daemon=True)
        self._process.start()

    def _supervise(self) -> None:
        while not self._stopping.wait(0.5):
            if self._process is not None and not self._process.is_alive():
                log.error("the N-EVENT-REPORT sender process ended (exit code %s); "
                          "restarting it", self._process.exitcode)
                if self._stopping.wait(_RESTART_PAUSE):
                    return
                self._spawn()

    def stop(self, timeout: float = 15.0) -> None:
        self._stopping.set()
        if self._watch.is_alive():
            self._watch.join(5)
        process = self._process
        if process is not None and process.is_alive():
            process.terminate()  # SIGTERM: the child drains, writes its cursors, exits
            process.join(timeout)
            if process.is_alive():
                process.kill()
                process.join(5)
