"""Shared fixtures: a real PostgreSQL, real ``worklist serve`` processes, free ports.

Nothing here fakes a database or a socket: integration tests talk to the server the
way users do.  PostgreSQL is started from the Debian binaries by the fixture itself
(`.ci/run` installs them); on a machine without them the PostgreSQL variants are
skipped unless CI=true, where their absence is an error.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent

# Hypothesis explores new examples on every local run; CI replays a fixed, derandomised
# set, so a submission's verdict does not depend on the luck of the draw.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True, print_blob=True)
if os.environ.get("CI"):
    _hypothesis_settings.load_profile("ci")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- PostgreSQL ------------------------------------------------------------------------
def _pg_bin() -> Path | None:
    for candidate in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(candidate, "initdb").exists():
            return Path(candidate)
    return None


@dataclass
class Postgres:
    host: str
    port: int
    bindir: Path
    datadir: Path

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@{self.host}:{self.port}/{database}"

    def new_database(self) -> str:
        import psycopg
        name = "wl_" + uuid.uuid4().hex[:12]
        with psycopg.connect(f"host={self.host} port={self.port} user=postgres dbname=postgres",
                             autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--"] + cmd if os.geteuid() == 0 else cmd


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Postgres]:
    bindir = _pg_bin()
    if bindir is None:
        if os.environ.get("CI"):
            pytest.fail("PostgreSQL binaries are missing: .ci/run installs the Debian package "
                        "'postgresql'")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    base = Path(tempfile_dir()) / f"wl-pg-{uuid.uuid4().hex[:8]}"
    base.mkdir(parents=True)
    if os.geteuid() == 0:
        shutil.chown(base, "postgres", "postgres")
    datadir = base / "data"
    subprocess.run(_as_postgres([str(bindir / "initdb"), "-D", str(datadir), "-A", "trust",
                                 "-U", "postgres", "--no-sync"]),
                   check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    port = free_port()
    opts = (f"-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories={base} "
            "-c fsync=off -c max_connections=200")
    subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(datadir), "-o", opts, "-w",
                                 "-l", str(base / "log"), "start"]),
                   check=True, stdout=subprocess.DEVNULL)
    try:
        yield Postgres("127.0.0.1", port, bindir, datadir)
    finally:
        subprocess.run(_as_postgres([str(bindir / "pg_ctl"), "-D", str(datadir), "-m", "fast",
                                     "-w", "stop"]), stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        shutil.rmtree(base, ignore_errors=True)


def tempfile_dir() -> str:
    import tempfile
    return tempfile.gettempdir()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database of each kind the server supports."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'worklist.db'}"
    pg: Postgres = request.getfixturevalue("postgres")
    return pg.new_database()


# -- the server, as users start it ---------------------------------------------------
@dataclass
class Server:
    process: subprocess.Popen[bytes]
    http_url: str
    base_url: str
    dimse_port: int
    ae_title: str
    data_dir: Path
    log_path: Path
    database: str

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def start_server(tmp_path: Path, database: str | None = None, *, extra: list[str] | None = None,
                 env: dict[str, str] | None = None, dimse: bool = True,
                 http_port: int | None = None, dimse_port: int | None = None) -> Server:
    """Start ``worklist serve`` as a separate process and wait until it is ready."""
    http_port = http_port or free_port()
    dimse_port = (dimse_port or free_port()) if dimse else 0
    data_dir = tmp_path / f"var-{http_port}"
    log_path = tmp_path / f"server-{http_port}.log"
    cmd = [sys.executable, "-m", "worklist.cli", "serve", "--data-dir", str(data_dir),
           "--http-port", str(http_port), "--dimse-port", str(dimse_port)]
    if database:
        cmd += ["--database", database]
    cmd += extra or []
    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
                                env=full_env)
    base = f"http://127.0.0.1:{http_port}"
    server = Server(proc, base, base + "/dicom-web", dimse_port, "WORKLIST", data_dir,
                    log_path, database or "")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"worklist serve exited with {proc.returncode}:\n{server.log()}")
        try:
            # The readiness contract of the README: GET /dicom-web/workitems?limit=1
            if httpx.get(base + "/dicom-web/workitems?limit=1", timeout=1).status_code in (200, 204):
                return server
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    server.stop(signal.SIGKILL)
    raise RuntimeError(f"worklist serve did not become ready:\n{server.log()}")


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[Server]:
    """``worklist serve`` on free ports, on each kind of database."""
    srv = start_server(tmp_path, database_url)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def sqlite_server(tmp_path: Path) -> Iterator[Server]:
    """``worklist serve`` with its embedded default database."""
    srv = start_server(tmp_path)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=30) as c:
        yield c
