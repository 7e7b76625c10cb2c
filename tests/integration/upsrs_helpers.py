"""Helpers shared by the UPS-RS integration tests (``test_upsrs_*.py``).

Each test module runs against one real ``worklist serve`` process per database kind
(SQLite and PostgreSQL), started once per module by :func:`module_server`: starting a
server for every test would cost more than the tests themselves.  Tests keep out of
each other's way by using fresh workitem UIDs and, for searches, a worklist label of
their own.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from tests.conftest import Postgres, Server, start_server
from worklist.dicomjson import dataset_to_json_dict
from worklist.sample import final_state_attributes, sample_workitem_json

__all__ = [
    "DATABASES", "DICOM_JSON", "module_server", "database_for", "tag", "dataset",
    "new_uid", "new_label", "create", "claim", "change_state", "state_body", "retrieve",
    "update", "bring_to", "warning", "assert_error", "assert_ok", "history", "history_url",
]

DATABASES = ["sqlite", "postgresql"]
DICOM_JSON = "application/dicom+json"


def database_for(request: pytest.FixtureRequest, kind: str, tmp_path: Any) -> str:
    """A fresh, empty database URL of ``kind``."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'worklist.db'}"
    pg: Postgres = request.getfixturevalue("postgres")
    return pg.new_database()


def module_server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
                  *, env: dict[str, str] | None = None) -> Iterator[Server]:
    """``worklist serve`` (UPS-RS only) on a fresh database of kind ``request.param``."""
    tmp_path = tmp_path_factory.mktemp(f"upsrs-{request.param}")
    srv = start_server(tmp_path, database_for(request, request.param, tmp_path), env=env,
                       dimse=False)
    try:
        yield srv
    finally:
        assert srv.stop() == 0, srv.log()
        assert "Traceback" not in srv.log(), srv.log()


# -- DICOM JSON ----------------------------------------------------------------------
def tag(keyword: str) -> str:
    """The DICOM JSON key (8 hex digits) of ``keyword``."""
    value = tag_for_keyword(keyword)
    assert value is not None, keyword
    return f"{value:08X}"


def dataset(**keywords: Any) -> dict[str, Any]:
    """A DICOM JSON object with the given attributes, by keyword."""
    ds = Dataset()
    for keyword, value in keywords.items():
        setattr(ds, keyword, value)
    return dataset_to_json_dict(ds)


def new_uid() -> str:
    return generate_uid()


def new_label() -> str:
    """A worklist label no other test uses (LO: at most 64 characters)."""
    return "wl-" + uuid.uuid4().hex[:16]


def state_body(state: str, transaction_uid: str | None) -> dict[str, Any]:
    if transaction_uid is None:
        return dataset(ProcedureStepState=state)
    return dataset(ProcedureStepState=state, TransactionUID=transaction_uid)


# -- the transactions ------------------------------------------------------------------
def create(client: httpx.Client, body: dict[str, Any] | None = None, **sample: Any) -> str:
    """Create a workitem (the sample, or ``body``) with a fresh UID; its UID."""
    uid = new_uid()
    r = client.post("/workitems", params={"workitem": uid},
                    json=body if body is not None else sample_workitem_json(**sample),
                    headers={"Content-Type": DICOM_JSON})
    assert r.status_code == 201, r.text
    return uid


def retrieve(client: httpx.Client, uid: str) -> dict[str, Any]:
    r = client.get(f"/workitems/{uid}", headers={"Accept": DICOM_JSON})
    assert r.status_code == 200, r.text
    items = r.json()
    assert isinstance(items, list) and len(items) == 1
    return items[0]


def update(client: httpx.Client, uid: str, body: dict[str, Any],
           transaction_uid: str | None = None) -> httpx.Response:
    params = {"transaction-uid": transaction_uid} if transaction_uid else None
    return client.post(f"/workitems/{uid}", params=params, json=body,
                       headers={"Content-Type": DICOM_JSON})


def change_state(client: httpx.Client, uid: str, state: str,
                 transaction_uid: str | None) -> httpx.Response:
    return client.put(f"/workitems/{uid}/state", json=state_body(state, transaction_uid),
                      headers={"Content-Type": DICOM_JSON})


def claim(client: httpx.Client, uid: str) -> str:
    """Claim ``uid`` (to IN PROGRESS) with a new Transaction UID; that UID."""
    tx = new_uid()
    r = change_state(client, uid, "IN PROGRESS", tx)
    assert r.status_code == 200, r.text
    return tx


def history_url(client: httpx.Client, uid: str) -> str:
    """The workitem's audit trail (``/api``, beside the ``/dicom-web`` base)."""
    return str(client.base_url.join(f"/api/workitems/{uid}/history"))


def history(client: httpx.Client, uid: str) -> list[dict[str, Any]]:
    r = client.get(history_url(client, uid))
    assert r.status_code == 200, r.text
    return r.json()


def bring_to(client: httpx.Client, state: str, **sample: Any) -> tuple[str, str | None]:
    """A new workitem in ``state``: its UID and the Transaction UID it was claimed with.

    An IN PROGRESS workitem already carries what COMPLETED needs (PS3.4 CC.2.5.1.1).
    """
    uid = create(client, **sample)
    if state == "SCHEDULED":
        return uid, None
    tx = claim(client, uid)
    r = update(client, uid, dataset_to_json_dict(final_state_attributes()), tx)
    assert r.status_code == 200, r.text
    if state in ("COMPLETED", "CANCELED"):
        r = change_state(client, uid, state, tx)
        assert r.status_code == 200, r.text
    else:
        assert state == "IN PROGRESS", state
    return uid, tx


# -- answers ---------------------------------------------------------------------------
def warning(client: httpx.Client, text: str) -> str:
    """The PS3.18 Warning header value: ``299 {service}: {text}``."""
    return f"299 {str(client.base_url).rstrip('/')}: {text}"


def assert_ok(r: httpx.Response, status: int, *, warning_text: str | None = None,
              client: httpx.Client | None = None) -> None:
    assert r.status_code == status, (r.status_code, r.headers, r.text)
    if warning_text is None:
        assert "warning" not in r.headers, r.headers["warning"]
    else:
        assert client is not None
        assert r.headers["warning"] == warning(client, warning_text)


def assert_error(r: httpx.Response, status: int, *, dimse: int | None = None,
                 warning_text: str | None = None, client: httpx.Client | None = None,
                 mentions: tuple[str, ...] = ()) -> dict[str, Any]:
    """A refusal: ``status``, a JSON body whose ``message`` says what was wrong (naming
    each of ``mentions``), the DIMSE status and the Warning header when given."""
    assert r.status_code == status, (r.status_code, r.headers, r.text)
    assert r.headers["content-type"].startswith("application/json"), r.headers
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("message"), str), body
    assert body["message"].strip(), body
    for name in mentions:
        assert name in body["message"], (name, body["message"])
    if dimse is not None:
        assert body["status"] == f"0x{dimse:04X}", body
    if warning_text is not None:
        assert client is not None
        assert r.headers.get("warning") == warning(client, warning_text), r.headers
    return body
