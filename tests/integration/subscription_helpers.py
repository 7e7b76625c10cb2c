"""A UPS-RS server in this process on a free port (uvicorn in a thread, real sockets),
and a WebSocket event reader, for the subscription tests."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
import websockets

from dicomweb.app import create_app
from dicomweb.wsframes import FramesWebSocketProtocol
from tests.conftest import free_port
from worklist.service import WorklistService
from worklist.store import open_store

GLOBAL = "1.2.840.10008.5.1.4.34.5"
FILTERED = "1.2.840.10008.5.1.4.34.5.1"
EVENT_TYPE = "00001002"


@dataclass
class Served:
    service: WorklistService
    port: int
    server: uvicorn.Server
    thread: threading.Thread

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/dicom-web"

    def ws_url(self, ae: str) -> str:
        return f"ws://127.0.0.1:{self.port}/dicom-web/ws/subscribers/{ae}"

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base, timeout=10)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.service.hub.stop()
        self.service.store.engine.dispose()


def serve(database_url: str, **service_args: Any) -> Served:
    service = WorklistService(open_store(database_url), **service_args)
    port = free_port()
    config = uvicorn.Config(create_app(service), host="127.0.0.1", port=port,
                            log_level="warning", lifespan="off",
                            ws=FramesWebSocketProtocol, ws_per_message_deflate=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    return Served(service, port, server, thread)


@contextmanager
def served(database_url: str, **service_args: Any) -> Iterator[Served]:
    srv = serve(database_url, **service_args)
    try:
        yield srv
    finally:
        srv.stop()


class EventReader:
    """A WebSocket subscriber in a thread of its own: collects the events it receives."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: list[dict[str, Any]] = []
        self.closed: tuple[int, str] | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> EventReader:
        self._thread.start()
        assert self._ready.wait(10), "WebSocket did not connect"
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    async def _run(self) -> None:
        try:
            async with websockets.connect(self.url) as ws:
                self._ready.set()
                while not self._stop.is_set():
                    try:
                        text = await asyncio.wait_for(ws.recv(), timeout=0.05)
                    except asyncio.TimeoutError:
                        continue
                    with self._lock:
                        self.events.append(json.loads(text))
        except websockets.ConnectionClosed as exc:
            rcvd = exc.rcvd
            self.closed = (rcvd.code, rcvd.reason) if rcvd else (1006, "")
        finally:
            self._ready.set()

    def wait_for(self, count: int, timeout: float = 10) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.events) >= count:
                    return list(self.events)
            if self.closed:
                break
            time.sleep(0.01)
        with self._lock:
            return list(self.events)

    def quiet(self, seconds: float = 0.3) -> list[dict[str, Any]]:
        time.sleep(seconds)
        with self._lock:
            return list(self.events)


def event_type(event: dict[str, Any]) -> int:
    return int(event[EVENT_TYPE]["Value"][0])


def value(event: dict[str, Any], key: str) -> Any:
    return event.get(key, {}).get("Value", [None])[0]


EVERY_EVENT_TYPE = [1, 5, 1, 3, 1, 2, 1]
"""The Event Type IDs :func:`produce_every_event_type` causes, in order."""


def produce_every_event_type(c: httpx.Client) -> str:
    """Over UPS-RS: create (State Report + UPS Assigned), claim (State Report), report
    progress (Progress Report), change Input Readiness (State Report), request
    cancellation (Cancel Requested), complete (State Report).  The workitem's UID."""
    from pydicom.dataset import Dataset

    from tests.integration.upsrs_helpers import DICOM_JSON, claim, create, dataset, update
    from worklist.dicomjson import dataset_to_json_dict
    from worklist.sample import final_state_attributes

    uid = create(c, performer="reader1")
    tx = claim(c, uid)
    item = Dataset()
    item.ProcedureStepProgress = 50
    item.ProcedureStepProgressDescription = "half way"
    progress = Dataset()
    progress.ProcedureStepProgressInformationSequence = [item]
    assert update(c, uid, dataset_to_json_dict(progress), tx).status_code == 200
    assert update(c, uid, dataset(InputReadinessState="UNAVAILABLE"), tx).status_code == 200
    # the final-state attributes carry no key of Table CC.2.4-1: no event
    final = dataset_to_json_dict(final_state_attributes())
    assert update(c, uid, final, tx).status_code == 200
    r = c.post(f"/workitems/{uid}/cancelrequest",
               json=dataset(ReasonForCancellation="no longer needed"),
               headers={"Content-Type": DICOM_JSON})
    assert r.status_code == 202, r.text
    r = c.put(f"/workitems/{uid}/state",
              json=dataset(ProcedureStepState="COMPLETED", TransactionUID=tx),
              headers={"Content-Type": DICOM_JSON})
    assert r.status_code == 200, r.text
    return uid
