"""Submit benchmark (issue 6, "Speed"): ``worklist submit`` of a 5-label mask on a
512×512×300 CT, end to end.

    python bench/bench_submit.py [--rows 512] [--columns 512] [--frames 300] [--labels 5]
                                 [--repeat 1] [--inputs]

1. starts a private Orthanc (``worklist.orthanc_process``, as ``scripts/run`` does) and
   ``worklist serve --orthanc-url`` on a fresh SQLite database, on free ports, with one
   routing rule: label set ``abdomen-organs`` (5 labels), reader ``bench``;
2. stores ``seg.synthetic.ct_volume(rows, columns, frames)`` by STOW-RS and waits for the
   READY task; ``worklist claim`` claims it;
3. times ``worklist submit UID --mask labels.npy --timings`` as a separate process, as a
   user runs it: read the task, load the mask, fetch the source series (geometry and
   pixels) over WADO-RS (or from a ``worklist fetch`` directory with ``--inputs``, whose
   time is printed apart), check, measure, build SEG and SR, pre-flight Update, STOW-RS,
   Update, COMPLETED; prints each step (from ``--timings``), the wall time of the whole
   process (interpreter start included) against the target (< 15 s) and its peak RSS
   (``wait4`` rusage of that process alone).

``--repeat N`` stores N studies and submits each (a new task each time).  Nothing here is
asserted by the test suite.
"""

from __future__ import annotations

import argparse
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from seg.synthetic import ct_volume, sphere_labels  # noqa: E402
from tests.integration.orthanc_fixture import to_bytes  # noqa: E402
from worklist.orthanc_process import start_orthanc  # noqa: E402

TARGET_S = 15.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stow(url: str, datasets: list, batch: int = 50) -> None:
    boundary = "bench-submit"
    with httpx.Client(timeout=300) as c:
        for i in range(0, len(datasets), batch):
            body = b"".join(b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom"
                            b"\r\n\r\n" + to_bytes(ds) + b"\r\n" for ds in datasets[i:i + batch])
            body += b"--" + boundary.encode() + b"--"
            r = c.post(url + "/studies", content=body, headers={
                "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                "Accept": "application/dicom+json"})
            r.raise_for_status()


def cli(base: str, state: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "worklist.cli", *args, "--server", base,
                           "--user", "bench", "--state-dir", str(state)],
                          capture_output=True, text=True, cwd=ROOT)


def timed_process(cmd: list[str]) -> tuple[int, str, str, float]:
    """(exit code, stdout, stderr, wall seconds) of one process.  Its peak RSS comes from
    its own ``--timings`` report (VmHWM): rusage's ru_maxrss would include this
    benchmark's own memory, which the child inherits at fork and keeps across exec."""
    t0 = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    return run.returncode, run.stdout, run.stderr, time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=512)
    ap.add_argument("--columns", type=int, default=512)
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--labels", type=int, default=5)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--inputs", action="store_true",
                    help="worklist fetch first, then submit --inputs DIR")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-submit-"))
    orthanc = start_orthanc(tmp / "orthanc", http_port=free_port(), dicom_port=free_port(),
                            modalities={}, stable_age=2)
    http_port = free_port()
    cfg = tmp / "worklist.toml"
    cfg.write_text(f"""[server]
orthanc_url = "{orthanc.url}"
orthanc_dicom_port = {orthanc.dicom_port}
orthanc_poll_seconds = 0.2
orthanc_timeout = 60
log_level = "WARNING"

[[routing.rules]]
name = "bench"
label_set = "abdomen-organs"
readers = [{{ login = "bench", name = "Bench^Reader", organization = "Bench Lab" }}]
""")
    log = open(tmp / "worklist.log", "wb")
    server = subprocess.Popen([sys.executable, "-m", "worklist.cli", "serve", "--config", str(cfg),
                               "--data-dir", str(tmp / "var"), "--http-port", str(http_port),
                               "--dimse-port", "0"], stdout=log, stderr=subprocess.STDOUT,
                              cwd=tmp)
    base = f"http://127.0.0.1:{http_port}"
    state = tmp / "state"
    try:
        for _ in range(300):
            try:
                r = httpx.get(base + "/dicom-web/workitems?limit=1", timeout=1)
                if r.status_code in (200, 204):
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        shape = (args.frames, args.rows, args.columns)
        mask = tmp / "labels.npy"
        np.save(mask, sphere_labels(shape, args.labels))
        print(f"CT {args.rows}x{args.columns}x{args.frames}, mask with {args.labels} labels "
              f"({mask.stat().st_size / 2**20:.0f} MiB .npy)")
        for n in range(args.repeat):
            images = ct_volume(args.rows, args.columns, args.frames, patient_id=f"BENCH{n:03d}")
            study = images[0].StudyInstanceUID
            t0 = time.perf_counter()
            stow(orthanc.dicomweb_url, images)
            del images
            print(f"[{n + 1}] stored {args.frames} slices by STOW-RS in "
                  f"{time.perf_counter() - t0:.1f} s")
            uid = None
            deadline = time.monotonic() + 120
            while uid is None and time.monotonic() < deadline:
                r = httpx.get(base + "/dicom-web/workitems", params={
                    "StudyInstanceUID": study, "InputReadinessState": "READY"})
                if r.status_code == 200:
                    uid = r.json()[0]["00080018"]["Value"][0]
                else:
                    time.sleep(0.2)
            if uid is None:
                print("no READY task within 120 s")
                return 1
            claim = cli(base, state, "claim", uid)
            if claim.returncode:
                print(claim.stderr)
                return 1
            extra: list[str] = []
            if args.inputs:
                code, _, err, wall = timed_process(
                    [sys.executable, "-m", "worklist.cli", "fetch", uid, str(tmp / uid),
                     "--server", base, "--user", "bench", "--state-dir", str(state)])
                print(f"    fetch (WADO-RS to files): {wall:.2f} s")
                extra = ["--inputs", str(tmp / uid)]
            code, _, err, wall = timed_process(
                [sys.executable, "-m", "worklist.cli", "submit", uid, "--mask", str(mask),
                 "--timings", "--server", base, "--user", "bench", "--state-dir", str(state),
                 *extra])
            if code:
                print(f"submit failed ({code}): {err.strip()}")
                return 1
            rss = "?"
            for line in err.splitlines():
                m = re.match(r"timing: (.+?)\s+([\d.]+) s\s*(?:\(peak RSS(?: so far)? (\d+) "
                             r"MiB\))?$", line)
                if m:
                    step, seconds, rss_step = m.group(1), float(m.group(2)), m.group(3)
                    if step == "total":
                        rss = rss_step or "?"
                    print(f"    {step:<22} {seconds:6.2f} s   peak RSS so far "
                          f"{rss_step or '?':>5} MiB")
            met = "met" if wall < TARGET_S else "NOT met"
            print(f"    whole submit process (interpreter start included): {wall:.2f} s "
                  f"(target < {TARGET_S:.0f} s: {met}); peak RSS {rss} MiB")
            r = httpx.get(f"{base}/dicom-web/workitems/{uid}")
            print(f"    task {r.json()[0]['00741000']['Value'][0]}")
    finally:
        server.terminate()
        server.wait(30)
        orthanc.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
