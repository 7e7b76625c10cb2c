"""The server as operators run it: the README's start and readiness contract, a clean
stop on SIGTERM that loses no committed write, the command line against a data
directory, and who may call (loopback, or a configured user's token).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.exceptions import StarletteDeprecationWarning
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dicomweb.app import create_app
from dicomweb.security import AuthMiddleware
from tests.conftest import ROOT, start_server
from worklist.sample import sample_workitem_json
from worklist.service import WorklistService
from worklist.store import open_store, sqlite_url

from .upsrs_helpers import (DICOM_JSON, create, database_for, history, retrieve, tag)

with warnings.catch_warnings():
    # starlette would like httpx2 for its TestClient; httpx is what this project has.
    warnings.simplefilter("ignore", StarletteDeprecationWarning)
    from starlette.testclient import TestClient

BIN = Path(sys.executable).parent


# -- start, readiness, stop ----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_sigterm_stops_cleanly_and_keeps_committed_writes(request: pytest.FixtureRequest,
                                                          tmp_path: Path, kind: str) -> None:
    data_dir = tmp_path / "var"
    # SQLite: the embedded default under --data-dir; PostgreSQL: the same database URL.
    database = None if kind == "sqlite" else database_for(request, kind, tmp_path)
    srv = start_server(tmp_path, database, extra=["--data-dir", str(data_dir)], dimse=False)
    try:
        with httpx.Client(base_url=srv.base_url, timeout=30) as client:
            uid = create(client)
            before = client.get(f"/workitems/{uid}").content
    finally:
        started = time.monotonic()
        code = srv.stop(signal.SIGTERM)
    assert code == 0, srv.log()
    assert time.monotonic() - started < 5
    assert "worklist stopped" in srv.log()
    assert "Traceback" not in srv.log()
    if kind == "sqlite":
        assert (data_dir / "worklist.db").exists()

    again = start_server(tmp_path, database, extra=["--data-dir", str(data_dir)], dimse=False)
    try:
        with httpx.Client(base_url=again.base_url, timeout=30) as client:
            assert client.get(f"/workitems/{uid}").content == before
            assert [row["action"] for row in history(client, uid)] == ["CREATE"]
    finally:
        assert again.stop() == 0, again.log()


def test_sigterm_during_requests(sqlite_server) -> None:  # type: ignore[no-untyped-def]
    """Requests in flight when SIGTERM arrives either finish or were never started: every
    workitem the server answered 201 for is there after the restart."""
    created: list[str] = []
    with httpx.Client(base_url=sqlite_server.base_url, timeout=30) as client:
        for i in range(200):
            if i == 20:
                sqlite_server.process.send_signal(signal.SIGTERM)
            try:
                created.append(create(client))
            except (httpx.HTTPError, AssertionError):
                break
    assert sqlite_server.process.wait(10) == 0, sqlite_server.log()
    assert len(created) >= 20
    again = start_server(sqlite_server.data_dir.parent,
                         extra=["--data-dir", str(sqlite_server.data_dir)], dimse=False)
    try:
        with httpx.Client(base_url=again.base_url, timeout=30) as client:
            for uid in created:
                assert retrieve(client, uid)[tag("SOPInstanceUID")]["Value"] == [uid]
    finally:
        assert again.stop() == 0, again.log()


def test_readiness_contract(sqlite_server) -> None:  # type: ignore[no-untyped-def]
    """README: `python -m worklist.cli serve` is ready when this answers (the fixture
    started it exactly so)."""
    r = httpx.get(f"{sqlite_server.base_url}/workitems?limit=1", timeout=10)
    assert r.status_code == 204  # an empty worklist
    assert sqlite_server.process.args[1:4] == ["-m", "worklist.cli", "serve"]


# -- the command line on a data directory ----------------------------------------------------
def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "worklist"), *args], input=stdin, capture_output=True,
                          text=True, timeout=60, cwd=ROOT, env=dict(os.environ))


def test_sample_piped_into_create(tmp_path: Path) -> None:
    """README: `worklist sample | worklist create -` against a data directory."""
    data_dir = tmp_path / "var"
    pipeline = subprocess.run(
        f"'{BIN / 'worklist'}' sample --performer reader1 | "
        f"'{BIN / 'worklist'}' create - --data-dir '{data_dir}'",
        shell=True, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert pipeline.returncode == 0, pipeline.stderr
    uid = pipeline.stdout.strip()
    assert uid and uid.replace(".", "").isdigit(), pipeline.stdout
    # A second sample is a second workitem, not a duplicate.
    second = _cli("create", "-", "--data-dir", str(data_dir), stdin=_cli("sample").stdout)
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() != uid

    shown = _cli("history", uid, "--data-dir", str(data_dir))
    assert shown.returncode == 0, shown.stderr
    assert '"action": "CREATE"' in shown.stdout and '"protocol": "CLI"' in shown.stdout

    srv = start_server(tmp_path, extra=["--data-dir", str(data_dir)], dimse=False)
    try:
        with httpx.Client(base_url=srv.base_url, timeout=30) as client:
            ds = retrieve(client, uid)
            assert ds[tag("ProcedureStepState")]["Value"] == ["SCHEDULED"]
            performer = ds[tag("ScheduledHumanPerformersSequence")]["Value"][0]
            code = performer[tag("HumanPerformerCodeSequence")]["Value"][0]
            assert code[tag("CodeValue")]["Value"] == ["reader1"]
    finally:
        assert srv.stop() == 0, srv.log()


def test_cli_create_refusal_is_reported(tmp_path: Path) -> None:
    body = sample_workitem_json(with_uid=True)
    del body[tag("ScheduledProcedureStepPriority")]
    r = _cli("create", "-", "--data-dir", str(tmp_path / "var"), stdin=json.dumps(body))
    assert r.returncode == 1
    assert "ScheduledProcedureStepPriority" in r.stderr


# -- who may call (dicomweb.security.AuthMiddleware) -----------------------------------------
USERS = {"alice": "s3cret-token", "bob": "another:token"}


async def _whoami(request: Request) -> JSONResponse:
    return JSONResponse({"user": request.scope["state"]["user"]})


def _auth_client(client_host: str = "testclient") -> TestClient:
    app = Starlette(routes=[Route("/whoami", _whoami)])
    return TestClient(AuthMiddleware(app, USERS), client=(client_host, 50000))


def _basic(user: str, token: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{token}".encode()).decode()


@pytest.mark.parametrize("authorization", [
    None, "", "Bearer", "Bearer wrong", "Bearer s3cret-token2", "Basic", "Basic !!!notbase64",
    _basic("alice", "wrong"), _basic("mallory", "s3cret-token"), _basic("alice", ""),
    "Digest s3cret-token", "s3cret-token", "Basic " + base64.b64encode(b"\xff\xfe").decode(),
])
def test_remote_client_without_valid_credentials_gets_401(authorization: str | None) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    r = _auth_client().get("/whoami", headers=headers)
    assert r.status_code == 401
    assert r.json()["message"]
    assert "Bearer" in r.headers["www-authenticate"]


@pytest.mark.parametrize("authorization, user", [
    ("Bearer s3cret-token", "alice"), ("bearer another:token", "bob"),
    (_basic("alice", "s3cret-token"), "alice"), (_basic("bob", "another:token"), "bob"),
])
def test_remote_client_with_a_users_token(authorization: str, user: str) -> None:
    r = _auth_client().get("/whoami", headers={"Authorization": authorization})
    assert r.status_code == 200, r.text
    assert r.json() == {"user": user}


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.53", "::1", "localhost"])
def test_loopback_needs_no_credentials(host: str) -> None:
    r = _auth_client(host).get("/whoami")
    assert r.status_code == 200, r.text
    assert r.json() == {"user": f"loopback:{host}"}
    # A loopback client that names itself is recorded under that name.
    r = _auth_client(host).get("/whoami", headers={"Authorization": "Bearer s3cret-token"})
    assert r.json() == {"user": "alice"}


@pytest.mark.parametrize("host", ["10.0.0.7", "192.168.1.20", "::ffff:10.0.0.1", "2001:db8::1",
                                  "", "127.0.0.1.evil.example"])
def test_other_addresses_need_credentials(host: str) -> None:
    assert _auth_client(host).get("/whoami").status_code == 401


def test_the_ups_rs_app_behind_authentication(tmp_path: Path) -> None:
    """The real UPS-RS application: 401 for a remote caller without credentials (and no
    change), and the authenticated user's name in the workitem's history."""
    store = open_store(sqlite_url(tmp_path / "worklist.db"))
    try:
        app = create_app(WorklistService(store), users=USERS)
        remote = TestClient(app)  # its client address, "testclient", is not loopback
        body = sample_workitem_json(with_uid=True)
        r = remote.post("/dicom-web/workitems", json=body, headers={"Content-Type": DICOM_JSON})
        assert r.status_code == 401 and r.json()["message"]
        assert remote.get("/dicom-web/workitems").status_code == 401
        alice = {"Authorization": "Bearer s3cret-token"}
        assert remote.get("/dicom-web/workitems", headers=alice).status_code == 204
        r = remote.post("/dicom-web/workitems", json=body,
                        headers={"Content-Type": DICOM_JSON, **alice})
        assert r.status_code == 201, r.text
        uid = body[tag("SOPInstanceUID")]["Value"][0]
        r = remote.get(f"/api/workitems/{uid}/history", headers=alice)
        assert [(row["actor"], row["protocol"]) for row in r.json()] == [("alice", "UPS-RS")]
        assert remote.get(f"/api/workitems/{uid}/history").status_code == 401
    finally:
        store.engine.dispose()
