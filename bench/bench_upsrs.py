"""UPS-RS benchmark (issue 2): creation, indexed search, concurrent claims, memory.

    python bench/bench_upsrs.py [--count 100000] [--clients 4] [--claimers 8]

Starts ``worklist serve`` on its embedded SQLite database (as the README does), then:

1. creates ``--count`` workitems over UPS-RS from ``--clients`` concurrent clients;
2. measures an indexed search (SCHEDULED items of one worklist for one performer,
   50 results) over HTTP, and the same 50 pre-serialised workitems from a bare
   Starlette endpoint under the same uvicorn settings, in the same run;
3. runs ``--claimers`` concurrent clients that search and claim, and checks that no
   workitem was claimed twice;
4. reports the server's peak resident memory.

Every figure is printed with its target; the search is also given as a ratio to the
bare endpoint.  Nothing here is asserted by the test suite.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import httpx
from pydicom.uid import generate_uid

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from worklist.sample import sample_workitem_json  # noqa: E402

LABELS = 10
READERS = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, proc: subprocess.Popen[bytes], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code in (200, 204):
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} not ready")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], p: float) -> float:
    values = sorted(values)
    k = max(0, min(len(values) - 1, round(p / 100 * (len(values) - 1))))
    return values[k]


def body_template() -> str:
    """A complete workitem as JSON text with placeholders, filled per request."""
    d = sample_workitem_json(performer="READERX", worklist_label="LABELX")
    d["00080018"] = {"vr": "UI", "Value": ["UIDX"]}
    return json.dumps(d)


def _create_worker(base: str, start: int, stop: int, template: str) -> int:
    # The standard library's keep-alive HTTP client: light, so that on two cores the
    # four client processes leave the server its share of CPU.
    import http.client
    from urllib.parse import urlsplit
    url = urlsplit(base)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    failed = 0
    for i in range(start, stop):
        body = (template.replace("UIDX", generate_uid())
                .replace("LABELX", f"proj{i % LABELS}")
                .replace("READERX", f"reader{i % READERS}")
                .replace("Readerx", f"Reader{i % READERS}")).encode()
        conn.request("POST", url.path + "/workitems", body=body,
                     headers={"Content-Type": "application/dicom+json"})
        r = conn.getresponse()
        text = r.read()
        if r.status != 201:
            failed += 1
            if failed < 3:
                print("creation failed:", r.status, text[:300])
    conn.close()
    return failed


def create_all(base: str, count: int, clients: int) -> tuple[float, int]:
    """``clients`` separate client processes, as separate users would be."""
    from concurrent.futures import ProcessPoolExecutor
    template = body_template()
    bounds = [(count * k // clients, count * (k + 1) // clients) for k in range(clients)]
    t0 = time.perf_counter()
    with ProcessPoolExecutor(clients) as pool:
        failed = sum(pool.map(_create_worker, [base] * clients, [b[0] for b in bounds],
                              [b[1] for b in bounds], [template] * clients))
    return time.perf_counter() - t0, failed


def time_gets(url: str, n: int) -> list[float]:
    times = []
    with httpx.Client(timeout=30) as c:
        for _ in range(20):
            c.get(url)
        for _ in range(n):
            t = time.perf_counter()
            r = c.get(url)
            times.append((time.perf_counter() - t) * 1000)
            assert r.status_code == 200, r.status_code
    return times


BARE_APP = textwrap.dedent('''
    import sys
    from starlette.applications import Starlette
    from starlette.responses import Response
    from starlette.routing import Route
    import uvicorn
    body = open(sys.argv[1], "rb").read()
    def endpoint(request):
        return Response(body, media_type="application/dicom+json")
    app = Starlette(routes=[Route("/", endpoint)])
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning",
                access_log=False, lifespan="off")
''')


def claim_loop(base: str, claimers: int, seconds: float) -> tuple[int, int, float, list[str]]:
    claimed: list[str] = []
    conflicts = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker(n: int) -> None:
        rnd = random.Random(n)
        with httpx.Client(base_url=base, timeout=30) as c:
            while time.monotonic() < stop:
                label = f"proj{rnd.randrange(LABELS)}"
                r = c.get("/workitems", params={"ProcedureStepState": "SCHEDULED",
                                                "WorklistLabel": label, "limit": "10"})
                if r.status_code == 204:
                    continue
                items = r.json()
                rnd.shuffle(items)
                for item in items[:3]:
                    uid = item["00080018"]["Value"][0]
                    tx = generate_uid()
                    s = c.put(f"/workitems/{uid}/state", headers={
                        "Content-Type": "application/dicom+json"}, content=json.dumps({
                            "00741000": {"vr": "CS", "Value": ["IN PROGRESS"]},
                            "00081195": {"vr": "UI", "Value": [tx]}}))
                    with lock:
                        if s.status_code == 200:
                            claimed.append(uid)
                        elif s.status_code == 409:
                            conflicts[0] += 1
                        else:
                            raise SystemExit(f"claim answered {s.status_code}: {s.text}")

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(claimers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return len(claimed), conflicts[0], time.perf_counter() - t0, claimed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--count", type=int, default=100_000)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--claimers", type=int, default=8)
    ap.add_argument("--claim-seconds", type=float, default=10)
    ap.add_argument("--searches", type=int, default=500)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="wl-bench-"))
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "worklist.cli", "serve", "--data-dir",
                               str(tmp / "var"), "--http-port", str(port), "--dimse-port", "0",
                               "--log-level", "WARNING"], cwd=tmp)
    base = f"http://127.0.0.1:{port}/dicom-web"
    bare = None
    try:
        wait_ready(base + "/workitems?limit=1", server)
        print(f"worklist serve (SQLite, pid {server.pid}) on port {port}")

        elapsed, failed = create_all(base, args.count, args.clients)
        print(f"create: {args.count} workitems by {args.clients} clients in {elapsed:.1f} s "
              f"= {args.count / elapsed:.0f}/s, {failed} failed  (target: 100000 in < 300 s)")

        query = (f"{base}/workitems?ProcedureStepState=SCHEDULED&WorklistLabel=proj7"
                 "&ScheduledHumanPerformersSequence.HumanPerformerCodeSequence.CodeValue=reader7"
                 "&limit=50")
        r = httpx.get(query, timeout=30)
        items = r.json()
        print(f"search: {len(items)} results, Warning: {r.headers.get('warning', '-')}")
        body_file = tmp / "body.json"
        body_file.write_bytes(r.content)
        times = time_gets(query, args.searches)

        # The same query on a second server over the same database with its page cache
        # off: what a search costs when the worklist changed since the last one.
        nc_port = free_port()
        nocache = subprocess.Popen([sys.executable, "-m", "worklist.cli", "serve", "--data-dir",
                                    str(tmp / "var"), "--http-port", str(nc_port),
                                    "--dimse-port", "0", "--log-level", "WARNING"], cwd=tmp,
                                   env=dict(os.environ, WORKLIST_SEARCH_CACHE_MB="0"))
        nc_base = f"http://127.0.0.1:{nc_port}/dicom-web"
        wait_ready(nc_base + "/workitems?limit=1", nocache)
        nc_times = time_gets(query.replace(base, nc_base), args.searches)
        nocache.send_signal(signal.SIGTERM)
        nocache.wait(30)

        bare_port = free_port()
        bare = subprocess.Popen([sys.executable, "-c", BARE_APP, str(body_file), str(bare_port)])
        wait_ready(f"http://127.0.0.1:{bare_port}/", bare)
        bare_times = time_gets(f"http://127.0.0.1:{bare_port}/", args.searches)
        p50, p95 = percentile(times, 50), percentile(times, 95)
        n50, n95 = percentile(nc_times, 50), percentile(nc_times, 95)
        b50, b95 = percentile(bare_times, 50), percentile(bare_times, 95)
        print(f"search p50 {p50:.2f} ms, p95 {p95:.2f} ms  (target p95 < 25 ms; repeated "
              "query, page cache on, the default)")
        print(f"search, page cache off: p50 {n50:.2f} ms, p95 {n95:.2f} ms")
        print(f"bare Starlette, same 50 items: p50 {b50:.2f} ms, p95 {b95:.2f} ms")
        print(f"ratio p95 worklist/bare = {p95 / b95:.2f}, cache off {n95 / b95:.2f}  "
              "(target <= 3)")

        n, conflicts, secs, claimed = claim_loop(base, args.claimers, args.claim_seconds)
        dupes = len(claimed) - len(set(claimed))
        in_progress = httpx.get(f"{base}/workitems", params={
            "ProcedureStepState": "IN PROGRESS", "limit": "1"}, timeout=60)
        warning = in_progress.headers.get("warning", "")
        total_ip = 1 + (int(warning.split("There are ")[1].split()[0]) if "There are" in warning
                        else 0) if in_progress.status_code == 200 else 0
        print(f"claims: {n} by {args.claimers} clients in {secs:.1f} s = {n / secs:.0f}/s, "
              f"{conflicts} lost races answered 409, {dupes} double claims, "
              f"{total_ip} IN PROGRESS on the server  (target >= 200/s, no double claim)")
        if dupes or total_ip != n:
            print("ERROR: a workitem was claimed twice or a claim was lost")
        print(f"server peak memory (VmHWM): {peak_rss_mb(server.pid):.0f} MB  (target < 300 MB)")
    finally:
        for proc in (server, bare):
            if proc is not None and proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                proc.wait(30)
        if os.environ.get("KEEP") is None:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
