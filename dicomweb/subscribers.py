"""UPS-RS subscriptions (PS3.18 11.10-11.12) and the event channel (PS3.18 8.10).

``POST /dicom-web/workitems/{uid}/subscribers/{aetitle}?deletionlock=true|false``
subscribes (``{uid}`` may be the well-known global UID or the filtered one, the
latter with ``?filter=key=value,key=value``); ``DELETE`` unsubscribes;
``POST .../subscribers/{aetitle}/suspend`` suspends a global subscription.

``/dicom-web/ws/subscribers/{aetitle}`` is the subscriber's WebSocket: on connect it
replays the AE's undelivered events (after its delivery cursor, at most the newest
``REPLAY_LIMIT``), then streams new ones, one text frame per event holding the event
as a DICOM JSON dataset, in outbox order; the cursor advances after successful sends
(noted in memory, written by the hub at most every 0.5 s and on disconnect).
Each connection is its own task with a bounded queue (worklist.delivery.Channel): a
client that does not read is dropped after ``send_timeout`` seconds, one whose queue
overflows is closed with 1013 (try again later: it will be replayed), and neither
slows the others or the changes.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from worklist import errors
from worklist.delivery import Channel
from worklist.service import Actor, WorklistService
from worklist.subscriptions import check_ae_title

from .query import looks_like_attribute, parse_search
from .wsframes import FRAMES_EXTENSION, text_frame

__all__ = ["subscription_routes"]

log = logging.getLogger("worklist.dicomweb.events")


def _bool_param(request: Request, name: str, default: bool) -> bool:
    for key, value in request.query_params.multi_items():
        if key.lower() == name:
            if value.lower() in ("true", ""):
                return True
            if value.lower() == "false":
                return False
            raise errors.InvalidArgumentValue(f"{name} must be true or false, not '{value}'")
    return default


def _filter(request: Request) -> Any:
    parts = [v for k, v in request.query_params.multi_items() if k.lower() == "filter"]
    if not parts:
        return None
    pairs = []
    for part in ",".join(parts).split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep:
            raise errors.InvalidArgumentValue(f"filter term '{part}' is not attribute=value")
        pairs.append((key.strip(), value))
    for key, _ in pairs:
        if not looks_like_attribute(key):
            raise errors.InvalidArgumentValue(f"filter: '{key}' is not a DICOM attribute "
                                              "(keyword, tag or dotted path)")
    return parse_search(pairs).identifier


def channel_url(request: Request, ae: str) -> str:
    scheme = "wss" if request.url.scheme == "https" else "ws"
    host = request.headers.get("host") or f"{request.url.hostname}:{request.url.port}"
    return f"{scheme}://{host}/dicom-web/ws/subscribers/{quote(ae, safe='')}"


class _LoopFanout:
    """The hub's way into one event loop: one thread-safe call per batch of events for
    all of the loop's connections, instead of one wake-up per connection."""

    _by_loop: dict[asyncio.AbstractEventLoop, _LoopFanout] = {}

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    @classmethod
    def of(cls, loop: asyncio.AbstractEventLoop) -> _LoopFanout:
        if loop not in cls._by_loop:
            cls._by_loop = {lp: f for lp, f in cls._by_loop.items() if not lp.is_closed()}
            cls._by_loop[loop] = cls(loop)
        return cls._by_loop[loop]

    def notify(self, channels: list[Channel]) -> None:  # from the hub's thread
        try:
            self.loop.call_soon_threadsafe(self._pump, channels)
        except RuntimeError:  # the loop has closed: its connections are gone
            pass

    @staticmethod
    def _pump(channels: list[Channel]) -> None:
        for channel in channels:
            channel.owner.pump()


class _Live:
    """One connected subscriber: its channel, what it has been sent, and how to send."""

    def __init__(self, ws: WebSocket, ae: str, service: WorklistService,
                 send_timeout: float) -> None:
        self.ws, self.ae, self.service, self.send_timeout = ws, ae, service, send_timeout
        self.frames = ws.scope.get("extensions", {}).get(FRAMES_EXTENSION)
        self.sent = 0
        self.idle = False
        """The connection's task waits for events: the loop may write them directly."""
        self.wake = asyncio.Event()
        loop = asyncio.get_running_loop()
        self.channel = Channel(ae, lambda: loop.call_soon_threadsafe(self.wake.set))
        self.channel.owner = self
        if self.frames is not None:
            self.channel.batch_notify = _LoopFanout.of(loop).notify

    def pump(self) -> None:
        """On the loop, when the hub has offered events: write them now when the
        connection is idle and its buffer has room (no task switch), else wake its task."""
        if (self.idle and self.frames is not None and self.frames.writable.is_set()
                and not self.channel.overflowed):
            try:
                self._write(self.channel.take())
                return
            except ConnectionError:
                pass  # the task notices the client has gone
        self.wake.set()

    def _write(self, items: list[tuple[int, str]]) -> None:
        items = [(seq, payload) for seq, payload in items if seq > self.sent]  # replayed
        if items:
            self.frames.write(b"".join(text_frame(payload) for _, payload in items))
            self.sent = items[-1][0]
            self.service.hub.note_delivered(self.ae, self.sent)  # written by the hub

    async def send(self, items: list[tuple[int, str]]) -> None:
        # A send waits only while the connection's write buffer is above its high-water
        # mark (a client not reading); each write gets send_timeout seconds.
        if self.frames is not None:  # the batch's frames in one write (dicomweb.wsframes)
            if not self.frames.writable.is_set():
                await asyncio.wait_for(self.frames.writable.wait(), self.send_timeout)
            self._write(items)
            return
        # Plain ASGI sends: one asyncio.timeout per batch, rescheduled per frame
        # (asyncio.wait_for would create a task per frame).
        first, loop = self.sent, asyncio.get_running_loop()
        try:
            async with asyncio.timeout(None) as deadline:
                for seq, payload in items:
                    if seq <= self.sent:
                        continue  # already sent in the replay
                    deadline.reschedule(loop.time() + self.send_timeout)
                    await self.ws.send_text(payload)
                    self.sent = seq
        finally:
            if self.sent > first:
                self.service.hub.note_delivered(self.ae, self.sent)


def subscription_routes(service: WorklistService, actor_of: Any,
                        warning_header: Any, *, send_timeout: float = 10.0) -> list[Any]:

    async def subscribe(request: Request) -> Response:
        # PS3.18 11.10 Subscribe
        uid, ae = request.path_params["uid"], request.path_params["aetitle"]
        lock = _bool_param(request, "deletionlock", False)
        identifier = _filter(request)
        actor: Actor = actor_of(request)
        warning = await run_in_threadpool(service.subscribe, uid, ae, lock, identifier, actor)
        url = channel_url(request, check_ae_title(ae))
        headers = {"Content-Location": url, "Location": url}
        if warning is not None:
            headers.update(warning_header(request, warning.text))
        return Response(status_code=201, headers=headers)

    async def unsubscribe(request: Request) -> Response:
        # PS3.18 11.11 Unsubscribe
        await run_in_threadpool(service.unsubscribe, request.path_params["uid"],
                                request.path_params["aetitle"], actor_of(request))
        return Response(status_code=200)

    async def suspend(request: Request) -> Response:
        # PS3.18 11.12 Suspend Global Subscription
        await run_in_threadpool(service.suspend_global, request.path_params["uid"],
                                request.path_params["aetitle"], actor_of(request))
        return Response(status_code=200)

    async def channel(ws: WebSocket) -> None:
        # PS3.18 8.10.4 Open Notification Connection, 8.10.5 Send Event Report
        await ws.accept()
        try:
            ae = check_ae_title(ws.path_params["aetitle"], "AE title")
        except errors.UPSError as exc:
            await ws.close(code=1008, reason=exc.error_comment[:120])
            return
        if not await run_in_threadpool(service.has_subscriptions, ae):
            await ws.close(code=1008, reason=f"{ae} has no subscription: subscribe first")
            return
        await _stream(ws, ae)

    async def _stream(ws: WebSocket, ae: str) -> None:
        live = _Live(ws, ae, service, send_timeout)
        await run_in_threadpool(service.hub.attach, live.channel)  # may read the head
        reader = asyncio.create_task(_drain_client(ws))
        reader.add_done_callback(lambda _: live.wake.set())  # a client leaving wakes us
        try:
            await live.send(await run_in_threadpool(service.pending_events, ae))  # replay
            while not reader.done():
                live.idle = True  # the loop may now write new events itself (pump)
                await live.wake.wait()
                live.idle = False
                live.wake.clear()
                if live.channel.overflowed:
                    await _persist(ae, live.sent)
                    await ws.close(code=1013, reason="Too far behind: reconnect to be replayed")
                    return
                await live.send(live.channel.take())
        except (WebSocketDisconnect, asyncio.TimeoutError, ConnectionError):
            pass  # a client gone or too slow: its cursor says where to resume
        except Exception as exc:  # a broken connection, whatever the server calls it
            log.debug("event channel of %s ended: %r", ae, exc)
        finally:
            live.idle = False
            service.hub.detach(live.channel)
            reader.cancel()
            await _persist(ae, live.sent)

    async def _persist(ae: str, sent: int) -> None:
        if sent:
            service.hub.note_delivered(ae, sent)
            await run_in_threadpool(service.hub.flush_cursors)

    async def _drain_client(ws: WebSocket) -> None:
        # The client sends nothing we need; reading notices it leaving.
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return

    base = "/dicom-web/workitems/{uid}/subscribers/{aetitle}"
    return [
        Route(base, subscribe, methods=["POST"]),
        Route(base, unsubscribe, methods=["DELETE"]),
        Route(base + "/suspend", suspend, methods=["POST"]),
        WebSocketRoute("/dicom-web/ws/subscribers/{aetitle}", channel),
    ]
