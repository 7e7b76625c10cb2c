"""Routing benchmark (issue 5, "Speed"): studies stored into Orthanc become READY workitems.

    python bench/bench_routing.py [--studies 200] [--instances 2] [--poll 1.0]
                                  [--stable-age 2] [--idle 10]

1. starts a private Orthanc (``worklist.orthanc_process``, as ``scripts/run`` does) and
   ``worklist serve --orthanc-url`` on a fresh SQLite database, on free ports, with
   ``orthanc_poll_seconds = --poll`` and the default routing rule;
2. stores ``--studies`` synthetic CT studies of ``--instances`` slices each by C-STORE;
3. meanwhile two watchers poll every 20 ms: Orthanc's ``/changes`` for each study's
   ``StableStudy`` and the worklist's UPS-RS search for each study's READY workitem;
   the delay per study is "READY seen" - "StableStudy seen" (both within 20 ms);
4. prints p50/p95/max of that delay against the target (2 s + the polling interval),
   then, with nothing arriving, the worklist process's CPU use over ``--idle`` seconds
   (target: under 5% of a core; this includes the whole server, not only the follower).

Nothing here is asserted by the test suite.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.integration.orthanc_fixture import SCU_AET, ct_series, nodelay  # noqa: E402
from worklist.orthanc_process import start_orthanc  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(p / 100 * (len(ordered) - 1))))]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", type=int, default=200)
    ap.add_argument("--instances", type=int, default=2)
    ap.add_argument("--poll", type=float, default=1.0)
    ap.add_argument("--stable-age", type=int, default=2)
    ap.add_argument("--idle", type=float, default=10)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-routing-"))
    orthanc = start_orthanc(tmp / "orthanc", http_port=free_port(), dicom_port=free_port(),
                            modalities={SCU_AET: "127.0.0.1:104"}, stable_age=args.stable_age)
    http_port = free_port()
    cfg = tmp / "worklist.toml"
    cfg.write_text(f'[server]\northanc_url = "{orthanc.url}"\northanc_dicom_port = '
                   f'{orthanc.dicom_port}\northanc_poll_seconds = {args.poll}\nlog_level = "WARNING"\n')
    log = open(tmp / "worklist.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "worklist.cli", "serve", "--config", str(cfg),
                               "--data-dir", str(tmp / "var"), "--http-port", str(http_port),
                               "--dimse-port", "0"], stdout=log, stderr=subprocess.STDOUT,
                              cwd=tmp)
    base = f"http://127.0.0.1:{http_port}/dicom-web"
    try:
        for _ in range(300):
            try:
                if httpx.get(base + "/workitems?limit=1", timeout=1).status_code in (200, 204):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        studies = [ct_series(args.instances, patient_id=f"BENCH{i:05d}")
                   for i in range(args.studies)]
        uids = {s[0].StudyInstanceUID for s in studies}
        stable_seen: dict[str, float] = {}  # Orthanc ID → time
        ready_seen: dict[str, float] = {}  # Study Instance UID → time
        done = threading.Event()

        def watch_orthanc() -> None:
            since = httpx.get(orthanc.url + "/changes?last").json().get("Last", 0)
            with httpx.Client(base_url=orthanc.url) as c:
                while not done.is_set():
                    page = c.get("/changes", params={"since": since, "limit": 1000}).json()
                    now = time.monotonic()
                    for ch in page["Changes"]:
                        if ch["ChangeType"] == "StableStudy":
                            stable_seen.setdefault(ch["ID"], now)
                    since = page["Last"]
                    time.sleep(0.02)

        def watch_worklist() -> None:
            with httpx.Client(base_url=base) as c:
                while not done.is_set():
                    r = c.get("/workitems", params={"InputReadinessState": "READY",
                                                    "limit": "1000",
                                                    "includefield": "StudyInstanceUID"})
                    now = time.monotonic()
                    if r.status_code == 200:
                        for ds in r.json():
                            study = ds.get("0020000D", {}).get("Value", [None])[0]
                            if study in uids:
                                ready_seen.setdefault(study, now)
                    time.sleep(0.02)

        watchers = [threading.Thread(target=watch_orthanc), threading.Thread(target=watch_worklist)]
        for t in watchers:
            t.start()
        from pynetdicom import AE
        from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
        ae = AE(SCU_AET)
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        t0 = time.monotonic()
        from pynetdicom import evt
        assoc = ae.associate("127.0.0.1", orthanc.dicom_port, ae_title="ORTHANC",
                             evt_handlers=[(evt.EVT_CONN_OPEN, nodelay)])
        for series in studies:
            for ds in series:
                assoc.send_c_store(ds)
        assoc.release()
        print(f"stored {args.studies} studies x {args.instances} instances in "
              f"{time.monotonic() - t0:.1f} s")
        deadline = time.monotonic() + 120 + args.stable_age
        while len(ready_seen) < len(uids) and time.monotonic() < deadline:
            time.sleep(0.2)
        done.set()
        for t in watchers:
            t.join()
        ids = {}
        for uid in uids:
            found = httpx.post(orthanc.url + "/tools/lookup", content=uid).json()
            ids[uid] = next(f["ID"] for f in found if f["Type"] == "Study")
        delays = [ready_seen[u] - stable_seen[ids[u]] for u in uids
                  if u in ready_seen and ids[u] in stable_seen]
        print(f"{len(ready_seen)}/{len(uids)} studies READY; {len(delays)} with both times; "
              f"all READY {time.monotonic() - t0:.1f} s after the first C-STORE")
        if delays:
            target = 2 + args.poll
            print(f"StableStudy -> READY: p50 {percentile(delays, 50):.2f} s, "
                  f"p95 {percentile(delays, 95):.2f} s, max {max(delays):.2f} s "
                  f"(target p95 < {target:.1f} s: {'met' if percentile(delays, 95) < target else 'NOT met'})")
        time.sleep(1)
        c0, w0 = cpu_seconds(server.pid), time.monotonic()
        time.sleep(args.idle)
        share = (cpu_seconds(server.pid) - c0) / (time.monotonic() - w0)
        print(f"idle worklist server (follower polling every {args.poll} s): "
              f"{100 * share:.1f}% of a core (target < 5%)")
    finally:
        server.terminate()
        server.wait(30)
        orthanc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
