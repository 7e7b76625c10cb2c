"""Start and stop a private Orthanc: for ``scripts/run`` and the test fixtures alike.

The configuration is ``config/orthanc.json`` rendered for chosen ports, a private data
directory and the DICOM peers Orthanc may talk to (environment.md, "Orthanc"):

* Orthanc runs with its data directory as working directory (``Popen(cwd=...)``, the
  equivalent of ``(cd DIR && exec Orthanc cfg)``), so the PID we hold is Orthanc's own;
* ``TCP_NODELAY=1`` in its environment, or Nagle's algorithm adds 40-90 ms per DIMSE
  message on loopback;
* it is ready when ``GET /system`` answers; SIGTERM stops it in about 3 s, and a new
  Orthanc on the same storage must wait for the old one to exit ("database is locked").

Command line (used by ``scripts/run``)::

    python -m worklist.orthanc_process render DIR [--http-port P] [--dicom-port P]
        [--aet AET] [--modality AET=HOST:PORT ...] [--stable-age S]
    python -m worklist.orthanc_process wait URL [--timeout S]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = ["ORTHANC_BINARY", "CONFIG_TEMPLATE", "render_config", "write_config",
           "wait_ready", "start_orthanc", "OrthancProcess"]

ORTHANC_BINARY = "/usr/sbin/Orthanc"
CONFIG_TEMPLATE = Path(__file__).resolve().parent.parent / "config" / "orthanc.json"
CONFIG_NAME = "orthanc.json"


def render_config(*, http_port: int, dicom_port: int, aet: str = "ORTHANC",
                  modalities: dict[str, str] | None = None, stable_age: int | None = None,
                  remote_http: bool = False, template: Path = CONFIG_TEMPLATE
                  ) -> dict[str, Any]:
    """The template with our ports and peers.  ``modalities`` maps AE title to
    ``HOST:PORT``; those peers may store into Orthanc and be C-MOVE destinations.  Given,
    they replace the template's list (anything that is not a test keeps
    ``DicomAlwaysAllow*: false``: environment.md, Orthanc traps)."""
    cfg = json.loads(Path(template).read_text())
    cfg.update(HttpPort=http_port, DicomPort=dicom_port, DicomAet=aet,
               StorageDirectory="storage", IndexDirectory="index")
    if stable_age is not None:
        cfg["StableAge"] = stable_age
    if remote_http:
        # Containers: the worklist reaches Orthanc over a private network, by host name.
        cfg.update(RemoteAccessAllowed=True, DicomCheckModalityHost=False)
    if modalities is not None:
        table = {}
        for peer_aet, address in modalities.items():
            host, _, port = address.rpartition(":")
            table[peer_aet.lower()] = {"AET": peer_aet, "Host": host, "Port": int(port)}
        cfg["DicomModalities"] = table
    return cfg


def write_config(directory: str | os.PathLike[str], **kwargs: Any) -> Path:
    """Render the configuration into ``directory/orthanc.json`` (created if needed)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / CONFIG_NAME
    path.write_text(json.dumps(render_config(**kwargs), indent=2))
    return path


def wait_ready(url: str, timeout: float = 30, process: subprocess.Popen[bytes] | None = None
               ) -> None:
    """Wait until Orthanc answers ``GET /system``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"Orthanc exited with {process.returncode} during start-up")
        try:
            if httpx.get(url.rstrip("/") + "/system", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"Orthanc at {url} did not answer GET /system within {timeout} s")


@dataclass
class OrthancProcess:
    """One running Orthanc, started by :func:`start_orthanc`."""

    directory: Path
    http_port: int
    dicom_port: int
    aet: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return self.url + "/dicom-web"

    @property
    def log_path(self) -> Path:
        return self.directory / "orthanc.log"

    def start(self, timeout: float = 30) -> None:
        if self.process is not None and self.process.poll() is None:
            return
        env = dict(os.environ, TCP_NODELAY="1")
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen([ORTHANC_BINARY, CONFIG_NAME], cwd=self.directory,
                                            env=env, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_ready(self.url, timeout, self.process)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"Orthanc did not start:\n{self.log_path.read_text()[-3000:]}")

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM, and wait for the process to exit (its storage is then free)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_orthanc(directory: str | os.PathLike[str], *, http_port: int, dicom_port: int,
                  aet: str = "ORTHANC", modalities: dict[str, str] | None = None,
                  stable_age: int | None = None, timeout: float = 30) -> OrthancProcess:
    """Render the configuration into ``directory`` and start Orthanc there."""
    write_config(directory, http_port=http_port, dicom_port=dicom_port, aet=aet,
                 modalities=modalities, stable_age=stable_age)
    orthanc = OrthancProcess(Path(directory), http_port, dicom_port, aet)
    orthanc.start(timeout)
    return orthanc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m worklist.orthanc_process")
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="write DIR/orthanc.json from config/orthanc.json")
    render.add_argument("directory")
    render.add_argument("--http-port", type=int, default=8042)
    render.add_argument("--dicom-port", type=int, default=4242)
    render.add_argument("--aet", default="ORTHANC")
    render.add_argument("--modality", action="append", default=[], metavar="AET=HOST:PORT")
    render.add_argument("--stable-age", type=int)
    render.add_argument("--remote-http", action="store_true",
                        help="accept HTTP from other hosts (only on a private network)")
    wait = sub.add_parser("wait", help="wait until Orthanc answers GET /system")
    wait.add_argument("url")
    wait.add_argument("--timeout", type=float, default=30)
    args = parser.parse_args(argv)
    if args.command == "render":
        modalities = dict(m.split("=", 1) for m in args.modality) or None
        print(write_config(args.directory, http_port=args.http_port, dicom_port=args.dicom_port,
                           aet=args.aet, modalities=modalities, stable_age=args.stable_age,
                           remote_http=args.remote_http))
        return 0
    try:
        wait_ready(args.url, args.timeout)
    except RuntimeError as exc:
        print(exc, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
