"""Event delivery benchmark (issue 4): many subscribers to the whole worklist.

    python bench/bench_events.py [--ws 50] [--dimse 5] [--rate 200] [--seconds 10]
                                 [--receiver pynetdicom|lean] [--clients 8]
                                 [--database URL] [--drain 5]

Starts, in this process, what the server runs (the UPS-RS app on uvicorn and the event
hub) over one fresh SQLite database (or ``--database``); the N-EVENT-REPORT senders run
in a child process, as ``worklist serve`` runs them.  The subscribers run elsewhere, as
they would on other machines: ``--ws`` WebSocket subscribers in a second process,
``--dimse`` N-EVENT-REPORT receivers (pynetdicom, or ``bench/lean_receiver.py``) in a
third; all subscribe globally.  A fourth process runs ``--clients`` threads creating
workitems (one State Report each) at ``--rate`` per second for ``--seconds``.  For
every (subscriber, event) it measures the delay from the HTTP response of the change to
the event's arrival, and prints the changes per second the server took and, per
channel, the events expected, received, lost or duplicated, and p50/p95/max of the
delay.  Target: 200 changes/s, nothing lost, p95 < 100 ms.

Nothing here is asserted by the test suite.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
import uvicorn  # noqa: E402
import websockets  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402
from pynetdicom import AE, evt  # noqa: E402

from dicomweb.app import create_app  # noqa: E402
from dicomweb.wsframes import FramesWebSocketProtocol  # noqa: E402
from dimse.eventprocess import SenderProcess  # noqa: E402
from dimse.server import _set_nodelay  # noqa: E402
from worklist.sample import sample_workitem_json  # noqa: E402
from worklist.service import WorklistService  # noqa: E402
from worklist.store import open_store  # noqa: E402
from worklist.values import UPS_EVENT  # noqa: E402

GLOBAL = "1.2.840.10008.5.1.4.34.5"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Arrivals:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: dict[str, list[tuple[str, float]]] = {}  # subscriber -> (uid, t)

    def add(self, who: str, uid: str) -> None:
        t = time.time()
        with self.lock:
            self.seen.setdefault(who, []).append((uid, t))


def _affected_uid(text: str) -> str:
    """Affected SOP Instance UID (0000,1000) of an event's DICOM JSON text."""
    start = text.index('"Value"', text.index('"00001000"'))
    start = text.index('"', text.index("[", start)) + 1
    return text[start:text.index('"', start)]


def ws_process(port: int, names: list[str], out: Any, ready: Any, stop: Any) -> None:
    """The WebSocket readers, in a process of their own (not sharing the server's GIL)."""
    arrivals = Arrivals()
    done = threading.Event()
    seen_ready = threading.Event()
    t = threading.Thread(target=ws_subscribers, args=(port, names, arrivals, done, seen_ready))
    t.start()
    seen_ready.wait(60)
    ready.set()
    stop.wait()
    done.set()
    t.join(timeout=10)
    out.put(arrivals.seen)


def ws_subscribers(port: int, names: list[str], arrivals: Arrivals, stop: threading.Event,
                   ready: threading.Event) -> None:
    async def one(name: str, connected: list[int]) -> None:
        url = f"ws://127.0.0.1:{port}/dicom-web/ws/subscribers/{name}"
        async with websockets.connect(url, max_queue=None) as ws:
            connected.append(1)
            if len(connected) == len(names):
                ready.set()
            while not stop.is_set():
                try:
                    text = await asyncio.wait_for(ws.recv(), timeout=0.2)
                except asyncio.TimeoutError:
                    continue
                # Cheap on purpose: the readers share the machine with the server, so
                # they find Event Type ID and the workitem UID without parsing the JSON.
                if '"00001002":{"vr":"US","Value":[1]}' in text:
                    arrivals.add(name, _affected_uid(text))

    async def main() -> None:
        connected: list[int] = []
        await asyncio.gather(*(one(n, connected) for n in names))

    from bench.lean_receiver import _run_fast
    _run_fast(main())


def dimse_receiver(name: str, arrivals: Arrivals) -> tuple[Any, int]:
    ae = AE(ae_title=name)
    ae.add_supported_context(UPS_EVENT, scu_role=True, scp_role=True)

    def on_report(event: Any) -> tuple[int, None]:
        if int(event.request.EventTypeID) == 1:
            arrivals.add(name, str(event.request.AffectedSOPInstanceUID))
        return 0, None

    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report),
                                           (evt.EVT_CONN_OPEN, _set_nodelay)])
    return server, port


def dimse_process(names: list[str], ports: Any, out: Any, stop: Any) -> None:
    """The DIMSE subscribers (pynetdicom SCPs), in a process of their own."""
    logging.getLogger("pynetdicom").setLevel(logging.ERROR)
    arrivals = Arrivals()
    servers = []
    for name in names:
        srv, port = dimse_receiver(name, arrivals)
        servers.append(srv)
        ports.put((name, port))
    stop.wait()
    for srv in servers:
        srv.shutdown()
    out.put(arrivals.seen)


def creator_process(port: int, rate: float, seconds: float, clients: int, out: Any) -> None:
    """Client threads creating workitems on a schedule; reports response times."""
    responded: dict[str, float] = {}
    lock = threading.Lock()
    total = int(rate * seconds)
    start = time.perf_counter()
    counter = iter(range(total))
    body = sample_workitem_json()

    def client() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}/dicom-web", timeout=30) as c:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                uid = generate_uid()
                r = c.post("/workitems", params={"workitem": uid}, json=body,
                           headers={"Content-Type": "application/dicom+json"})
                assert r.status_code == 201, r.text
                with lock:
                    responded[uid] = time.time()

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    out.put((responded, time.perf_counter() - start))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ws", type=int, default=50)
    parser.add_argument("--dimse", type=int, default=5)
    parser.add_argument("--rate", type=float, default=200)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--database", default="")
    parser.add_argument("--clients", type=int, default=8,
                        help="concurrent creating clients (each waits for its answers)")
    parser.add_argument("--receiver", choices=("pynetdicom", "lean"), default="pynetdicom",
                        help="DIMSE subscriber implementation (bench/lean_receiver.py: "
                             "what the worklist delivers when the subscriber is fast)")
    parser.add_argument("--drain", type=float, default=5.0,
                        help="seconds to wait for late WebSocket events after the last change")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    logging.getLogger("pynetdicom").setLevel(logging.ERROR)

    tmp = tempfile.mkdtemp(prefix="bench-events-")
    url = args.database or f"sqlite:///{Path(tmp) / 'worklist.db'}"
    dimse_names = [f"DIMSE{i}" for i in range(args.dimse)]
    ws_names = [f"WS{i}" for i in range(args.ws)]
    service = WorklistService(open_store(url), known_ae=lambda ae: ae in dimse_names)
    for name in ws_names + dimse_names:
        from worklist.service import Actor
        from worklist.values import Protocol
        service.subscribe(GLOBAL, name, False, None,
                          Actor(Protocol.UPS_RS if name.startswith("WS") else Protocol.DIMSE,
                                "bench"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(service), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off",
                                           ws_per_message_deflate=False,
                                           ws=FramesWebSocketProtocol))
    threading.Thread(target=server.run, daemon=True).start()
    while not server.started:
        time.sleep(0.01)

    import multiprocessing

    mp = multiprocessing.get_context("spawn")
    arrivals = Arrivals()
    senders = []
    dimse_out, ports, dimse_stop = mp.Queue(), mp.Queue(), mp.Event()
    receivers = None
    if dimse_names:
        target = dimse_process
        if args.receiver == "lean":
            from bench.lean_receiver import run as target
        receivers = mp.Process(target=target, args=(dimse_names, ports, dimse_out, dimse_stop))
        receivers.start()
        peers = dict(ports.get(timeout=60) for _ in dimse_names)
        # as `worklist serve` runs them: in a process of their own (dimse.eventprocess)
        senders.append(SenderProcess(url, {n: f"127.0.0.1:{p}" for n, p in peers.items()},
                                     "WORKLIST", log_level="WARNING").start())
    out, ready, stop = mp.Queue(), mp.Event(), mp.Event()
    reader = None
    if ws_names:
        reader = mp.Process(target=ws_process, args=(port, ws_names, out, ready, stop))
        reader.start()
        ready.wait(60)

    total = int(args.rate * args.seconds)
    created = mp.Queue()
    creator = mp.Process(target=creator_process,
                         args=(port, args.rate, args.seconds, args.clients, created))
    creator.start()
    responded, elapsed = created.get(timeout=args.seconds * 10 + 60)
    creator.join()
    print(f"{total} creates in {elapsed:.1f} s ({total / elapsed:.0f}/s); "
          f"{len(ws_names)} WebSocket + {len(dimse_names)} DIMSE subscribers")
    expected = len(responded)
    time.sleep(args.drain)  # the subscribers report only at the end
    if receivers is not None:
        dimse_stop.set()
        arrivals.seen.update(dimse_out.get(timeout=60))
        receivers.join(timeout=10)
    if reader is not None:
        stop.set()
        arrivals.seen.update(out.get(timeout=60))
        reader.join(timeout=10)
    for channel, names in (("WebSocket", ws_names), ("DIMSE", dimse_names)):
        if not names:
            continue
        delays, lost, dup = [], 0, 0
        for n in names:
            got = arrivals.seen.get(n, [])
            uids = [u for u, _ in got]
            dup += len(uids) - len(set(uids))
            lost += len(set(responded) - set(uids))
            # negative: the event arrived before the client had read its response
            delays += [max(0.0, t - responded[u]) * 1000 for u, t in got if u in responded]
        delays.sort()
        pct = (lambda q: delays[min(len(delays) - 1, int(q * len(delays)))]) if delays \
            else (lambda q: float("nan"))
        print(f"{channel}: expected {expected * len(names)}, received {len(delays)}, "
              f"not received {args.drain:g} s after the last change {lost}, "
              f"duplicated {dup}; delay p50 {pct(0.5):.1f} ms, "
              f"p95 {pct(0.95):.1f} ms, max {pct(1.0):.1f} ms")
    for sender in senders:
        sender.stop()
    server.should_exit = True
    service.hub.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
