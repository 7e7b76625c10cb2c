"""DIMSE benchmark (issue 3): C-FIND latency against a bare SCP, concurrent claims.

    python bench/bench_dimse.py [--count 100000] [--queries 200] [--workers 8] [--seconds 15]

1. stores ``--count`` workitems in a fresh SQLite database: the first ``--via-service``
   through ``WorklistService.create`` (its rate is printed), the rest in bulk through the
   store's own insert (same JSON text, index rows and history row per workitem; printed);
2. starts ``worklist serve`` on that database (the real composition root) and, in
   another process, a bare pynetdicom C-FIND SCP that yields the same 50 response
   datasets, precomputed as pydicom Datasets (same transport settings: TCP_NODELAY,
   pynetdicom's per-PDU log handlers unbound);
3. over one established association to each, runs ``--queries`` C-FINDs returning 50
   matches among the ``--count`` stored (alternating servers), and prints p50/p95 of
   each and their ratio (target: our p95 within 1.5x of the bare SCP's); it also
   prints the first queries on other 50-workitem sets ("cold": pages and database
   cache not yet warm);
4. runs ``--workers`` concurrent associations that search (C-FIND, C-CANCEL after a
   few matches) and claim (N-ACTION IN PROGRESS) for ``--seconds``; prints claims/s and
   checks in the database that no workitem was claimed twice.

Nothing here is asserted by the test suite.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pydicom.dataset import Dataset  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402
from pynetdicom import AE, _config, evt  # noqa: E402

from worklist.values import UPS_PULL, UPS_PUSH, VERIFICATION  # noqa: E402

TARGET = "bench-target"
POOL = "claim-pool"
COLD = "cold-{}"
OTHER_LABELS = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))
    return values[k]


def nodelay(event: Any) -> None:
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def identifier(label: str, state: str = "") -> Dataset:
    """What a worklist client asks for: 13 keys, four sequences returned whole."""
    q = Dataset()
    q.SOPInstanceUID = ""
    q.WorklistLabel = label
    q.ProcedureStepState = state
    q.ProcedureStepLabel = ""
    q.ScheduledProcedureStepPriority = ""
    q.ScheduledProcedureStepStartDateTime = ""
    q.InputReadinessState = ""
    q.PatientName = ""
    q.PatientID = ""
    q.StudyInstanceUID = ""
    q.ScheduledWorkitemCodeSequence = [Dataset()]
    q.ScheduledHumanPerformersSequence = [Dataset()]
    q.ReferencedRequestSequence = [Dataset()]
    return q


# -- 1. the database -------------------------------------------------------------------
def labels_for(count: int, pool: int, cold: int) -> list[str]:
    labels = [TARGET] * 50 + [COLD.format(k) for k in range(cold) for _ in range(50)]
    labels += [POOL] * pool
    rest = count - len(labels)
    if rest < 0:
        raise SystemExit(f"--count must be at least {len(labels)} for this layout")
    labels += [f"bench-{i % OTHER_LABELS}" for i in range(rest)]
    random.Random(1).shuffle(labels)
    return labels


def populate(url: str, count: int, via_service: int, pool: int, cold: int) -> None:
    from worklist.sample import sample_workitem
    from worklist.service import Actor, WorklistService, now_dt
    from worklist.store import index_fields, open_store
    from worklist.values import Protocol

    service = WorklistService(open_store(url))
    actor = Actor(Protocol.INTERNAL, "bench")
    labels = labels_for(count, pool, cold)
    n = min(via_service, count)
    t0 = time.perf_counter()
    first_uid = None
    for i in range(n):
        ds = sample_workitem(worklist_label=labels[i], patient_id=f"PAT{i:06d}",
                             start=f"2026{1 + i % 12:02d}{1 + i % 28:02d}090000")
        first_uid = service.create(ds, generate_uid(), actor).uid
    t_service = time.perf_counter() - t0
    print(f"stored {n} workitems through WorklistService.create: "
          f"{n / t_service:.0f}/s ({t_service:.1f} s)")
    if count <= n:
        return
    # Bulk: the text the service stored for one workitem, varied per workitem.
    template = json.loads(service.retrieve_json(first_uid))
    store = service.store
    t0 = time.perf_counter()
    batch = 5000
    for start in range(n, count, batch):
        with store.transaction(write=True) as conn:
            now = now_dt(service.clock)
            for i in range(start, min(start + batch, count)):
                uid = generate_uid()
                d = dict(template)
                d["00080018"] = {"vr": "UI", "Value": [uid]}
                d["00741202"] = {"vr": "LO", "Value": [labels[i]]}
                d["00100020"] = {"vr": "LO", "Value": [f"PAT{i:06d}"]}
                d["0020000D"] = {"vr": "UI", "Value": [generate_uid()]}
                d["00404005"] = {"vr": "DT",
                                 "Value": [f"2026{1 + i % 12:02d}{1 + i % 28:02d}090000"]}
                d["00404010"] = {"vr": "DT", "Value": [now]}
                text = json.dumps(d, separators=(",", ":"), ensure_ascii=False)
                store.insert(conn, uid, "SCHEDULED", index_fields(d), text, now)
                store.append_history(conn, uid=uid, at=now, actor=actor.name,
                                     protocol=actor.protocol.value, action="CREATE",
                                     state_before=None, state_after="SCHEDULED",
                                     changes={"dataset": d})
    t_bulk = time.perf_counter() - t0
    print(f"stored {count - n} workitems in bulk through the store: "
          f"{(count - n) / t_bulk:.0f}/s ({t_bulk:.1f} s)")
    service.store.engine.dispose()


# -- 2. the servers ------------------------------------------------------------------
def start_worklist(url: str, tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port, http_port = free_port(), free_port()
    log = open(tmp / "worklist.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "worklist.cli", "serve", "--database", url,
         "--http-port", str(http_port), "--dimse-port", str(port), "--log-level", "WARNING"],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    wait_echo(port, proc)
    return proc, port


def start_bare(responses: Path, tmp: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    log = open(tmp / "bare.log", "wb")
    proc = subprocess.Popen([sys.executable, __file__, "--bare-scp", str(responses),
                             "--port", str(port)], cwd=ROOT, stdout=log,
                            stderr=subprocess.STDOUT)
    wait_echo(port, proc)
    return proc, port


def wait_echo(port: int, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(VERIFICATION)
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        assoc = ae.associate("127.0.0.1", port, ae_title="WORKLIST")
        if assoc.is_established:
            assoc.release()
            quiet_pynetdicom()
            return
        time.sleep(0.2)
    raise SystemExit(f"no DIMSE service on port {port}")


def quiet_pynetdicom() -> None:
    """The same pynetdicom settings as the worklist's DIMSE adapter uses."""
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False


def run_bare_scp(responses: str, port: int) -> None:
    """A bare pynetdicom SCP: yields precomputed Datasets, nothing else."""
    quiet_pynetdicom()
    datasets = [Dataset.from_json(obj) for obj in json.loads(Path(responses).read_text())]

    def on_find(event: Any) -> Any:
        for ds in datasets:
            if event.is_cancelled:
                yield 0xFE00, None
                return
            yield 0xFF00, ds

    ae = AE(ae_title="WORKLIST")
    ae.add_supported_context(VERIFICATION)
    ae.add_supported_context(UPS_PULL)
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_C_FIND, on_find),
                                           (evt.EVT_CONN_OPEN, nodelay)])
    for event in (evt.EVT_PDU_RECV, evt.EVT_PDU_SENT, evt.EVT_DIMSE_RECV, evt.EVT_DIMSE_SENT):
        for handler, _ in list(server.get_handlers(event)):
            server.unbind(event, handler)
    try:
        threading.Event().wait()  # until the benchmark terminates this process
    finally:
        server.shutdown()


def precompute(url: str, path: Path) -> list[str]:
    """The 50 responses our server sends for the target query, as DICOM JSON."""
    from dimse.find import return_keys, select_keys
    from worklist.matching import parse_identifier
    from worklist.service import WorklistService
    from worklist.store import open_store

    service = WorklistService(open_store(url))
    q = identifier(TARGET)
    page = service.search(parse_identifier(q), limit=100)
    keys = return_keys(q)
    objs = [select_keys(json.loads(text), keys) for text in page.items]
    path.write_text(json.dumps(objs))
    service.store.engine.dispose()
    return [o["00080018"]["Value"][0] for o in objs]


# -- 3. C-FIND latency -------------------------------------------------------------
def associate(port: int, aet: str = "BENCH") -> Any:
    ae = AE(ae_title=aet)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    for uid in (VERIFICATION, UPS_PUSH, UPS_PULL):
        ae.add_requested_context(uid)
    assoc = ae.associate("127.0.0.1", port, ae_title="WORKLIST",
                         evt_handlers=[(evt.EVT_CONN_OPEN, nodelay)])
    if not assoc.is_established:
        raise SystemExit(f"association to port {port} failed")
    return assoc


def timed_find(assoc: Any, q: Dataset) -> tuple[float, list[str]]:
    t0 = time.perf_counter()
    uids = []
    final = None
    for status, ident in assoc.send_c_find(q, UPS_PULL):
        if status.Status == 0xFF00:
            uids.append(ident.SOPInstanceUID)
        else:
            final = status.Status
    elapsed = time.perf_counter() - t0
    if final != 0x0000:
        raise SystemExit(f"C-FIND ended with 0x{final or 0:04X}")
    return elapsed, uids


def measure_find(ours: int, bare: int, queries: int, cold: int,
                 expected: list[str]) -> None:
    a_ours, a_bare = associate(ours), associate(bare)
    cold_times = []
    for k in range(cold):
        t, uids = timed_find(a_ours, identifier(COLD.format(k)))
        assert len(uids) == 50, len(uids)
        cold_times.append(t)
    q = identifier(TARGET)
    first, uids = timed_find(a_ours, q)
    if sorted(uids) != sorted(expected):
        raise SystemExit("the two servers do not return the same workitems")
    for _ in range(5):
        timed_find(a_ours, q)
        timed_find(a_bare, q)
    t_ours, t_bare = [], []
    for _ in range(queries):
        t_ours.append(timed_find(a_ours, q)[0])
        t, uids = timed_find(a_bare, q)
        assert len(uids) == 50
        t_bare.append(t)
    a_ours.release()
    a_bare.release()
    ms = 1000
    p50o, p95o = percentile(t_ours, 50) * ms, percentile(t_ours, 95) * ms
    p50b, p95b = percentile(t_bare, 50) * ms, percentile(t_bare, 95) * ms
    print(f"C-FIND, 50 matches among the stored workitems, {queries} queries each:")
    print(f"  worklist     p50 {p50o:6.1f} ms   p95 {p95o:6.1f} ms")
    print(f"  bare SCP     p50 {p50b:6.1f} ms   p95 {p95b:6.1f} ms")
    print(f"  ratio p50 {p50o / p50b:.2f}x   p95 {p95o / p95b:.2f}x   (target: p95 <= 1.5x) "
          f"{'OK' if p95o <= 1.5 * p95b else 'MISSED'}")
    if cold_times:
        p50c, p95c = percentile(cold_times, 50) * ms, percentile(cold_times, 95) * ms
        print(f"  worklist, cold (first query on each of {cold} other sets of 50): "
              f"p50 {p50c:6.1f} ms   p95 {p95c:6.1f} ms   ratio p95 {p95c / p95b:.2f}x")
    print(f"  first query of the measured set: {first * ms:.1f} ms")


# -- 4. search-and-claim ---------------------------------------------------------------
def claim_loop(port: int, i: int, deadline: float, out: dict[str, Any]) -> None:
    assoc = associate(port, f"CLAIMER{i}")
    rng = random.Random(i)
    q = identifier(POOL, "SCHEDULED")
    claimed, conflicts, finds, other = [], 0, 0, 0
    msg_id = 0
    while time.monotonic() < deadline:
        msg_id = msg_id % 60000 + 1
        candidates = []
        for status, ident in assoc.send_c_find(q, UPS_PULL, msg_id=msg_id):
            if status.Status == 0xFF00:
                candidates.append(ident.SOPInstanceUID)
                if len(candidates) == 8:
                    assoc.send_c_cancel(msg_id, query_model=UPS_PULL)
        finds += 1
        if not candidates:
            break
        uid = rng.choice(candidates)
        info = Dataset()
        info.ProcedureStepState = "IN PROGRESS"
        info.TransactionUID = generate_uid()
        status, _ = assoc.send_n_action(info, 1, UPS_PUSH, uid, meta_uid=UPS_PULL)
        if status.Status == 0x0000:
            claimed.append(uid)
        elif status.Status == 0xC302:
            conflicts += 1
        else:
            other += 1
    assoc.release()
    out[f"w{i}"] = (claimed, conflicts, finds, other)


def measure_claims(url: str, port: int, workers: int, seconds: float) -> None:
    from sqlalchemy import text

    from worklist.store import open_store

    out: dict[str, Any] = {}
    deadline = time.monotonic() + seconds
    t0 = time.perf_counter()
    threads = [threading.Thread(target=claim_loop, args=(port, i, deadline, out))
               for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    claimed = [u for c, _, _, _ in out.values() for u in c]
    conflicts = sum(v[1] for v in out.values())
    finds = sum(v[2] for v in out.values())
    other = sum(v[3] for v in out.values())
    store = open_store(url)
    with store.transaction() as conn:
        in_progress = conn.execute(text(
            "SELECT count(*) FROM workitems WHERE state = 'IN PROGRESS'")).scalar_one()
        per_item = conn.execute(text(
            "SELECT max(n) FROM (SELECT count(*) AS n FROM history "
            "WHERE action = 'CHANGE STATE' GROUP BY workitem_uid)")).scalar_one()
    store.engine.dispose()
    double = len(claimed) - len(set(claimed))
    ok = double == 0 and in_progress == len(claimed) and (per_item or 0) <= 1 and other == 0
    print(f"search-and-claim, {workers} concurrent associations for {elapsed:.1f} s:")
    print(f"  {len(claimed)} claims ({len(claimed) / elapsed:.1f} claims/s), {conflicts} lost "
          f"races (0xC302), {other} other failures, {finds} C-FINDs ({finds / elapsed:.1f}/s)")
    print(f"  double claims: {double}; IN PROGRESS in the database: {in_progress}; "
          f"most claims recorded for one workitem: {per_item or 0}  "
          f"{'OK' if ok else 'FAILED'}")
    if not ok:
        raise SystemExit(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--count", type=int, default=100_000)
    parser.add_argument("--via-service", type=int, default=2000,
                        help="how many workitems to create through the service (the rest: bulk)")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--cold", type=int, default=20,
                        help="first queries on other sets of 50 workitems")
    parser.add_argument("--pool", type=int, default=5000, help="workitems to claim from")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--keep", action="store_true", help="keep the database directory")
    parser.add_argument("--bare-scp", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.bare_scp:
        run_bare_scp(args.bare_scp, args.port)
        return
    quiet_pynetdicom()
    tmp = Path(tempfile.mkdtemp(prefix="bench-dimse-"))
    url = f"sqlite:///{tmp / 'worklist.db'}"
    print(f"database: {url} ({os.cpu_count()} CPUs)")
    populate(url, args.count, args.via_service, args.pool, args.cold)
    expected = precompute(url, tmp / "responses.json")
    ours, ours_port = start_worklist(url, tmp)
    bare, bare_port = start_bare(tmp / "responses.json", tmp)
    try:
        measure_find(ours_port, bare_port, args.queries, args.cold, expected)
        bare.terminate()
        measure_claims(url, ours_port, args.workers, args.seconds)
    finally:
        for proc in (ours, bare):
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        if not args.keep:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print(f"kept {tmp}")


if __name__ == "__main__":
    main()
