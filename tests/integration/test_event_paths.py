"""Every mutation path emits events (issue 4 point 2): a workitem created by the
command line while the server runs, and one created by a routing rule from a study
stored in a real Orthanc, each reach a WebSocket subscriber of the running server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
import websockets

from tests.conftest import ROOT, start_server
from tests.integration.orthanc_fixture import (  # noqa: F401 - the fixture
    OrthancForTests, c_store, ct_series, orthanc, wait_for, worklist_config,
)

GLOBAL = "1.2.840.10008.5.1.4.34.5"
STATE_REPORT = 1


def _events(url: str, want: int, timeout: float = 20) -> list[dict]:
    """The first ``want`` events of a WebSocket channel (DICOM JSON datasets)."""
    async def read() -> list[dict]:
        got: list[dict] = []
        async with websockets.connect(url) as ws:
            while len(got) < want:
                got.append(json.loads(await asyncio.wait_for(ws.recv(), timeout)))
        return got
    return asyncio.run(read())


def _uid(event: dict) -> str:
    return event["00001000"]["Value"][0]


def _type(event: dict) -> int:
    return event["00001002"]["Value"][0]


def test_a_workitem_created_by_the_command_line_is_reported(tmp_path: Path) -> None:
    server = start_server(tmp_path, dimse=False)
    try:
        r = httpx.post(f"{server.base_url}/workitems/{GLOBAL}/subscribers/CLIWATCH")
        assert r.status_code == 201, r.text
        sample = subprocess.run([sys.executable, "-m", "worklist.cli", "sample"],
                                capture_output=True, text=True, check=True, cwd=ROOT)
        created = subprocess.run(
            [sys.executable, "-m", "worklist.cli", "create", "-", "--data-dir",
             str(server.data_dir)], input=sample.stdout, capture_output=True, text=True,
            cwd=tmp_path)
        assert created.returncode == 0, created.stderr
        uid = created.stdout.strip()
        # delivered although another process wrote it: the hub polls the outbox
        (event,) = _events(r.headers["Location"], 1)
        assert (_uid(event), _type(event)) == (uid, STATE_REPORT)
        assert event["00741000"]["Value"] == ["SCHEDULED"]
    finally:
        server.stop()


@pytest.mark.slow
def test_a_workitem_created_by_a_routing_rule_is_reported(
        tmp_path: Path, orthanc: OrthancForTests) -> None:
    cfg = worklist_config(tmp_path / "wl.toml", orthanc)
    server = start_server(tmp_path, extra=["--config", str(cfg)], dimse=False)
    try:
        r = httpx.post(f"{server.base_url}/workitems/{GLOBAL}/subscribers/ROUTEWATCH")
        assert r.status_code == 201, r.text
        study = ct_series(2, patient_id="EVENTS-ROUTE")
        c_store(orthanc, study)
        # created INCOMPLETE (State Report), then READY when Orthanc calls it stable
        # (State Report on the Input Readiness change, PS3.4 CC.2.4.2)
        first, second = _events(r.headers["Location"], 2, timeout=30)
        assert _type(first) == _type(second) == STATE_REPORT
        assert _uid(first) == _uid(second)
        assert first["00404041"]["Value"] == ["INCOMPLETE"]
        assert second["00404041"]["Value"] == ["READY"]
        found = httpx.get(f"{server.base_url}/workitems",
                          params={"PatientID": "EVENTS-ROUTE"}).json()
        assert [w["00080018"]["Value"][0] for w in found] == [_uid(first)]
    finally:
        server.stop()
