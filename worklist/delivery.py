"""Fan-out of the event outbox to the connected subscribers (PS3.18 8.10.5).

One thread per service reads the outbox once, in seq order, after each committed
change (:meth:`EventHub.wake`, called by the service's ``_publish``) and at least
every ``poll_seconds`` (changes committed by other processes on the same database),
and hands each event to the channels attached for its recipients.

A channel is a bounded queue (:class:`Channel`): the hub never waits for a
subscriber.  A channel whose queue is full is marked overflowed and detached; its
consumer closes the connection, and the subscriber, on reconnecting, is replayed
from its persisted cursor, so nothing is lost, only delayed.
"""

from __future__ import annotations

import collections
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import func, select

from .schema import events as events_table

__all__ = ["EventHub", "Channel", "QUEUE_LIMIT", "CURSOR_FLUSH_SECONDS", "DISPATCH_INTERVAL"]

log = logging.getLogger("worklist.delivery")
QUEUE_LIMIT = 10_000
"""Events held in memory per connected subscriber before it counts as too slow."""
_BATCH = 1000
CURSOR_FLUSH_SECONDS = 0.5
DISPATCH_INTERVAL = 0.05
"""Seconds between two reads of the outbox while changes keep coming."""


class Channel:
    """The live events for one connection of one subscriber AE."""

    def __init__(self, ae_title: str, notify: Callable[[], None], limit: int = QUEUE_LIMIT):
        self.ae_title = ae_title
        self.notify = notify
        """Called (from the hub thread) when events arrive or the channel overflows."""
        self.limit = limit
        self.overflowed = False
        self.batch_notify: Callable[[list[Channel]], None] | None = None
        """When set, called instead of ``notify`` with every channel sharing it that got
        events in one dispatch (one wake-up of a consumer serving many channels)."""
        self.owner: Any = None
        """The consumer's object for this channel (for ``batch_notify``)."""
        self._items: collections.deque[tuple[int, str]] = collections.deque()
        self._lock = threading.Lock()

    def offer(self, seq: int, payload: str) -> bool:
        with self._lock:
            if self.overflowed:
                return False
            if len(self._items) >= self.limit:
                self.overflowed = True
                self._items.clear()
                return False
            self._items.append((seq, payload))
        return True

    def take(self) -> list[tuple[int, str]]:
        with self._lock:
            items = list(self._items)
            self._items.clear()
        return items


class EventHub:
    """Reads new outbox rows and offers them to the attached channels."""

    def __init__(self, service: Any, *, poll_seconds: float = 1.0) -> None:
        self.service = service
        self.poll_seconds = poll_seconds
        self._cond = threading.Condition()
        self._dirty = False
        self._channels: dict[str, set[Channel]] = {}
        self._last: int | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False
        self._cursors: dict[tuple[str, str], int] = {}
        self._flushed_at = 0.0

    # -- the publisher side ------------------------------------------------------
    def wake(self) -> None:
        with self._cond:
            self._dirty = True
            self._cond.notify()

    def publish(self, events: list[Any]) -> None:
        """EventPublisher port: the events are already in the outbox; just wake."""
        self.wake()

    # -- the subscriber side -----------------------------------------------------
    def attach(self, channel: Channel) -> None:
        """Start offering ``channel`` its AE's events committed from now on.  Attach
        *before* reading the replay, and skip replayed seqs in the live queue."""
        if self._last is None:
            # Before the first channel the hub starts at the head of the outbox, read
            # now, so every event committed after attach() has a greater seq.
            with self.service.store.transaction() as conn:
                head = conn.execute(select(func.max(events_table.c.seq))).scalar()
            with self._cond:
                if self._last is None:
                    self._last = int(head or 0)
        with self._cond:
            self._channels.setdefault(channel.ae_title, set()).add(channel)
            if self._thread is None or not self._thread.is_alive():
                self._stopping = False
                self._thread = threading.Thread(target=self._run, name="event-hub",
                                                daemon=True)
                self._thread.start()
            self._dirty = True
            self._cond.notify()

    def detach(self, channel: Channel) -> None:
        with self._cond:
            group = self._channels.get(channel.ae_title)
            if group is not None:
                group.discard(channel)
                if not group:
                    del self._channels[channel.ae_title]

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.flush_cursors()

    # -- delivery cursors: noted in memory, written together --------------------
    def note_delivered(self, ae_title: str, seq: int, channel: str = "WS") -> None:
        """Record that ``seq`` reached ``ae_title`` on ``channel``.  The hub writes the
        cursors of all subscribers in one transaction at most every
        ``CURSOR_FLUSH_SECONDS`` (and when stopping): after a crash a subscriber may be
        replayed that much again (at least once), never less."""
        with self._cond:
            key = (ae_title, channel)
            if seq > self._cursors.get(key, 0):
                self._cursors[key] = seq

    def flush_cursors(self) -> None:
        with self._cond:
            pending, self._cursors = self._cursors, {}
        try:
            self.service.delivered_many(pending)
        except Exception:
            log.exception("cannot store the delivery cursors of %s", ", ".join(
                sorted({ae for ae, _ in pending})))
            with self._cond:  # kept for the next flush, unless overtaken meanwhile
                for key, seq in pending.items():
                    if seq > self._cursors.get(key, 0):
                        self._cursors[key] = seq
        self._flushed_at = time.monotonic()

    def connected(self, ae_title: str) -> bool:
        with self._cond:
            return bool(self._channels.get(ae_title))

    # -- the thread --------------------------------------------------------------
    def _run(self) -> None:
        dispatched = 0.0
        while True:
            with self._cond:
                if not self._dirty and not self._stopping:
                    self._cond.wait(CURSOR_FLUSH_SECONDS if self._cursors
                                    else self.poll_seconds)
                # Coalescing: at most one dispatch per DISPATCH_INTERVAL, so under load
                # each socket write carries several events (a write per event and
                # subscriber is what fan-out costs) for a delay of at most the interval.
                self._dirty = False
                if self._stopping:
                    return
            pause = dispatched + DISPATCH_INTERVAL - time.monotonic()
            if pause > 0:
                time.sleep(pause)  # wake() meanwhile only marks the outbox dirty
            try:
                dispatched = time.monotonic()
                self._dispatch()
                if self._cursors and \
                        time.monotonic() - self._flushed_at >= CURSOR_FLUSH_SECONDS:
                    self.flush_cursors()
            except Exception:  # a database hiccup must not end delivery
                log.exception("event hub: reading the outbox failed")

    def _dispatch(self) -> None:
        store = self.service.store
        assert self._last is not None
        while True:
            with store.transaction() as conn:
                rows = conn.execute(
                    select(events_table.c.seq, events_table.c.payload,
                           events_table.c.recipients)
                    .where(events_table.c.seq > self._last)
                    .order_by(events_table.c.seq).limit(_BATCH)).all()
            if not rows:
                return
            touched: set[Channel] = set()
            with self._cond:
                groups = {ae: set(chs) for ae, chs in self._channels.items()}
            for seq, payload, recipients in rows:
                for ae in json.loads(recipients):
                    for channel in groups.get(ae, ()):
                        if not channel.offer(seq, payload):
                            self.detach(channel)
                        touched.add(channel)
                self._last = seq
            batches: dict[Callable[[list[Channel]], None], list[Channel]] = {}
            for channel in touched:
                batch_notify = channel.batch_notify
                if batch_notify is not None:  # one call for all channels of a consumer
                    batches.setdefault(batch_notify, []).append(channel)
                    continue
                try:
                    channel.notify()
                except Exception:  # a closed event loop: the consumer is gone
                    self.detach(channel)
            for batch_notify, channels in batches.items():
                batch_notify(channels)
            if len(rows) < _BATCH:
                return
