"""Studies stored into a real Orthanc become workitems (issue 5, points 1-4).

A real ``worklist serve --orthanc-url`` follows a real Orthanc: a study stored by
C-STORE or STOW-RS gets its workitem(s), seen over UPS-RS and DIMSE C-FIND, INCOMPLETE
first and READY once Orthanc reports the study stable; rules choose readers and
attributes; routing is idempotent across ``worklist route`` and restarts of either side.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.dataset import Dataset

from tests.conftest import Server, start_server
from tests.integration.upsrs_helpers import database_for
from tests.integration.orthanc_fixture import (  # noqa: F401 - the fixture
    OrthancForTests, c_store, ct_series, orthanc, start_test_orthanc, stow, wait_for,
    worklist_config,
)
from worklist.values import UPS_PULL

pytestmark = pytest.mark.slow

RULES = """
[[routing.rules]]
name = "liver"
match = { StudyDescription = "re:(?i)liver", Modality = "CT", StudyDate = "20260101-20261231" }
worklist_label = "liver-2026"
procedure_step_label = "Liver lesions {AccessionNumber}"
workitem_code = ["SEG", "99WORKLIST", "Segmentation"]
priority = "HIGH"
expected_completion = "24h"
label_set = "liver-lesions"
readers = ["reader1", { login = "reader2", name = "Reader^Two", organization = "Lab" }]

[[routing.rules]]
name = "brain-mr"
match = { Modality = "MR", PatientID = "PAT*" }
worklist_label = "brain"
"""


def search(server: Server, **params: str) -> list[dict[str, Any]]:
    r = httpx.get(server.base_url + "/workitems", params=params, timeout=10)
    assert r.status_code in (200, 204), r.text
    return r.json() if r.status_code == 200 else []


def v(ds: dict[str, Any], keyword: str) -> Any:
    from worklist.dicomjson import first
    return first(ds, keyword)


def for_study(server: Server, study_uid: str) -> list[dict[str, Any]]:
    return search(server, StudyInstanceUID=study_uid, limit="100")


def ready(server: Server, study_uid: str, count: int = 1) -> list[dict[str, Any]]:
    items = wait_for(lambda: (lambda found: found if len(found) >= count and all(
        v(d, "InputReadinessState") == "READY" for d in found) else None)(
        for_study(server, study_uid)), what=f"{count} READY workitem(s) for {study_uid}")
    assert len(items) == count
    return items


@pytest.fixture
def worklist(tmp_path: Path, orthanc: OrthancForTests) -> Any:
    servers: list[Server] = []

    def start(rules: str = "", database: str | None = None) -> Server:
        cfg = worklist_config(tmp_path / f"worklist{len(servers)}.toml", orthanc, rules)
        srv = start_server(tmp_path, database or f"sqlite:///{tmp_path / 'wl.db'}",
                           extra=["--config", str(cfg)])
        servers.append(srv)
        return srv
    yield start
    for srv in servers:
        srv.stop()


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_c_store_study_becomes_a_ready_workitem_seen_over_both_protocols(
        worklist: Any, orthanc: OrthancForTests, kind: str, request: pytest.FixtureRequest,
        tmp_path: Path) -> None:
    server = worklist(database=database_for(request, kind, tmp_path))
    series = ct_series(4)
    study_uid = series[0].StudyInstanceUID
    c_store(orthanc, series)
    (item,) = ready(server, study_uid)
    # The default rule: one unassigned segmentation task in the `default` worklist.
    assert v(item, "WorklistLabel") == "default"
    assert v(item, "ScheduledHumanPerformersSequence") is None
    uid = v(item, "SOPInstanceUID")
    full = httpx.get(f"{server.base_url}/workitems/{uid}").json()[0]
    (inp,) = full["00404021"]["Value"]
    assert v(inp, "StudyInstanceUID") == study_uid
    assert v(inp, "SeriesInstanceUID") == series[0].SeriesInstanceUID
    assert sorted(v(r, "ReferencedSOPInstanceUID") for r in inp["00081199"]["Value"]) == \
        sorted(ds.SOPInstanceUID for ds in series)
    assert v(v(inp, "DICOMRetrievalSequence"), "RetrieveAETitle") == orthanc.aet
    assert v(v(inp, "WADORSRetrievalSequence"), "RetrieveURL") == \
        f"{orthanc.dicomweb_url}/studies/{study_uid}/series/{series[0].SeriesInstanceUID}"
    dest = v(full, "OutputDestinationSequence")
    assert v(v(dest, "DICOMStorageSequence"), "DestinationAE") == orthanc.aet
    assert v(v(dest, "STOWRSStorageSequence"), "StorageURL") == orthanc.dicomweb_url + "/studies"
    # First seen INCOMPLETE (NewStudy), READY when stable (StableStudy): the history shows it.
    hist = httpx.get(f"{server.http_url}/api/workitems/{uid}/history").json()
    assert hist[0]["action"] == "CREATE" and hist[0]["protocol"] == "INTERNAL"
    assert v(hist[0]["changes"]["dataset"], "InputReadinessState") == "INCOMPLETE"
    assert any(h["action"] == "UPDATE" and v(h["changes"]["set"], "InputReadinessState")
               == "READY" for h in hist[1:])
    # Over DIMSE too: a UPS C-FIND on the Pull SOP Class.
    from pynetdicom import AE
    ae = AE("VIEWER")
    ae.add_requested_context(UPS_PULL)
    assoc = ae.associate("127.0.0.1", server.dimse_port, ae_title=server.ae_title)
    try:
        query = Dataset()
        query.StudyInstanceUID = study_uid
        query.SOPInstanceUID = ""
        query.InputReadinessState = ""
        found = [ident for status, ident in assoc.send_c_find(query, UPS_PULL)
                 if status and status.Status in (0xFF00, 0xFF01)]
    finally:
        assoc.release()
    assert [(d.SOPInstanceUID, d.InputReadinessState) for d in found] == [(uid, "READY")]


def test_rules_readers_attributes_and_idempotent_route_command(
        worklist: Any, orthanc: OrthancForTests, tmp_path: Path) -> None:
    server = worklist(RULES)
    liver = ct_series(3, description="Liver CT", patient_id="PAT-LIVER1")
    other = ct_series(2, description="Chest CT", patient_id="PAT-CHEST1")
    stow(orthanc, liver)
    stow(orthanc, other)
    items = ready(server, liver[0].StudyInstanceUID, count=2)
    performers = sorted(v(v(d, "ScheduledHumanPerformersSequence"), "HumanPerformerName")
                        ["Alphabetic"] for d in items)
    assert performers == ["Reader1", "Reader^Two"]
    for d in items:
        assert v(d, "WorklistLabel") == "liver-2026"
        assert v(d, "ScheduledProcedureStepPriority") == "HIGH"
        assert v(d, "ProcedureStepLabel").startswith("Liver lesions ACC-LIVER1 - read ")
        assert v(d, "ExpectedCompletionDateTime")
    # The chest study matches no rule: no workitem, ever (its StableStudy came too).
    wait_for(lambda: httpx.get(f"{orthanc.url}/changes?limit=1000").json()["Changes"] and
             any(c["ChangeType"] == "StableStudy" for c in
                 httpx.get(f"{orthanc.url}/changes?limit=1000").json()["Changes"]),
             what="a StableStudy")
    assert for_study(server, other[0].StudyInstanceUID) == []
    # `worklist route` over everything already in Orthanc creates nothing new.
    cfg = worklist_config(tmp_path / "route.toml", orthanc, RULES)
    run = subprocess.run([sys.executable, "-m", "worklist.cli", "route", "--config", str(cfg),
                          "--database", server.database, "StudyDescription=*Liver*"],
                         capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "0" and "studies" in run.stderr
    assert len(for_study(server, liver[0].StudyInstanceUID)) == 2


def test_route_command_routes_studies_stored_while_no_server_ran(
        orthanc: OrthancForTests, tmp_path: Path) -> None:
    series = ct_series(2, description="Liver late", patient_id="PAT-LATE01")
    c_store(orthanc, series)
    cfg = worklist_config(tmp_path / "route.toml", orthanc, RULES)
    db = f"sqlite:///{tmp_path / 'route.db'}"
    cmd = [sys.executable, "-m", "worklist.cli", "route", "--config", str(cfg), "--database", db,
           f"PatientID={series[0].PatientID}"]
    first_run = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert first_run.returncode == 0, first_run.stderr
    assert first_run.stdout.strip() == "2"
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert again.stdout.strip() == "0"


def test_bad_rules_are_refused_at_start_up_naming_rule_and_field(
        orthanc: OrthancForTests, tmp_path: Path) -> None:
    for rules, expected in [
        ('[[routing.rules]]\nname = "x"\nmatch = { Modalty = "CT" }\n',
         "routing rule 1 ('x'), field match.Modalty: 'Modalty' is not a DICOM keyword"),
        ('[[routing.rules]]\nname = "y"\nmatch = { PatientID = "re:(" }\n',
         "routing rule 1 ('y'), field match.PatientID: invalid regular expression"),
        ('[[routing.rules]]\nname = "z"\nexpected_completion = "soon"\n',
         "routing rule 1 ('z'), field expected_completion"),
    ]:
        cfg = worklist_config(tmp_path / "bad.toml", orthanc, rules)
        run = subprocess.run([sys.executable, "-m", "worklist.cli", "serve", "--config", str(cfg),
                              "--data-dir", str(tmp_path / "var"), "--http-port", "1",
                              "--dimse-port", "0"], capture_output=True, text=True, timeout=30)
        assert run.returncode == 2 and expected in run.stderr, run.stderr


def test_worklist_restart_misses_nothing_and_duplicates_nothing(
        worklist: Any, orthanc: OrthancForTests) -> None:
    server = worklist()
    before = ct_series(2, patient_id="PAT-RESTA1")
    c_store(orthanc, before)
    ready(server, before[0].StudyInstanceUID)
    server.stop()
    during = ct_series(2, patient_id="PAT-RESTA2")  # stored while the worklist is down
    c_store(orthanc, during)
    server = worklist()  # same database: the cursor is where it was
    ready(server, during[0].StudyInstanceUID)
    after = ct_series(2, patient_id="PAT-RESTA3")
    c_store(orthanc, after)
    ready(server, after[0].StudyInstanceUID)
    assert len(for_study(server, before[0].StudyInstanceUID)) == 1


def test_orthanc_restart_and_outage_lose_no_study(tmp_path: Path) -> None:
    own = start_test_orthanc(tmp_path / "orthanc")
    cfg = worklist_config(tmp_path / "wl.toml", own)
    server: Server | None = None
    try:
        server = start_server(tmp_path, f"sqlite:///{tmp_path / 'wl.db'}",
                              extra=["--config", str(cfg)])
        first = ct_series(2, patient_id="PAT-ORES01")
        c_store(own, first)
        ready(server, first[0].StudyInstanceUID)
        own.process.stop()  # Orthanc disappears: the follower backs off, the server serves
        wait_for(lambda: "following Orthanc failed" in server.log(), what="a backoff")
        assert httpx.get(server.base_url + "/workitems?limit=1").status_code == 200
        own.process.start()  # same storage, same change feed
        second = ct_series(2, patient_id="PAT-ORES02")
        c_store(own, second)
        ready(server, second[0].StudyInstanceUID, count=1)
        assert len(for_study(server, first[0].StudyInstanceUID)) == 1
        # A new, empty Orthanc database behind the same URL: its feed restarts below our
        # cursor, and the follower starts again from its beginning.
        own.process.stop()
        for sub in ("storage", "index"):
            shutil.rmtree(own.process.directory / sub)
        own.process.start()
        third = ct_series(2, patient_id="PAT-ORES03")
        c_store(own, third)
        ready(server, third[0].StudyInstanceUID, count=1)
        assert "behind our cursor" in server.log()
    finally:
        if server is not None:
            server.stop()
        own.process.stop()
