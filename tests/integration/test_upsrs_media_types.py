"""UPS-RS media types, Accept and body size over real sockets (PS3.18 8.7, 11.1.3):
DICOM JSON in and out, plain ``application/json`` accepted, anything else 415 (bodies)
or 406 (answers), bodies over the configured limit 413.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Server, start_server
from worklist.sample import sample_workitem_json

from .upsrs_helpers import (DATABASES, DICOM_JSON, assert_error, bring_to, create, dataset,
                            module_server, new_uid, retrieve, state_body)


@pytest.fixture(scope="module", params=DATABASES)
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server per database for the whole module (overrides conftest's ``server``;
    conftest's ``client`` talks to it)."""
    yield from module_server(request, tmp_path_factory)


def _requests(uid: str, tx: str | None) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """A valid body for each transaction that takes one: (method, path, body)."""
    return {
        "create": ("POST", f"/workitems?workitem={new_uid()}", sample_workitem_json()),
        "update": ("POST", f"/workitems/{uid}", dataset(ProcedureStepLabel="Relabelled")),
        "state": ("PUT", f"/workitems/{uid}/state", state_body("IN PROGRESS", tx or new_uid())),
        "cancelrequest": ("POST", f"/workitems/{uid}/cancelrequest",
                          dataset(ReasonForCancellation="Not needed")),
    }


TRANSACTIONS = ["create", "update", "state", "cancelrequest"]
EXPECTED = {"create": 201, "update": 200, "state": 200, "cancelrequest": 202}


# Content-Type -> what the 415 message must name
UNSUPPORTED = {
    "text/plain": "text/plain",
    "application/xml": "application/xml",
    "application/dicom+xml": "application/dicom+xml",
    'multipart/related; type="application/dicom+xml"': "multipart/related",
    "application/x-www-form-urlencoded": "application/x-www-form-urlencoded",
    "application/dicom+json; charset=latin-1": "latin-1",
    "application/json; charset=ISO-8859-1": "iso-8859-1",
    "": "(none)",
}


@pytest.mark.parametrize("content_type", UNSUPPORTED)
@pytest.mark.parametrize("transaction", TRANSACTIONS)
def test_unsupported_body_is_415(client: httpx.Client, transaction: str,
                                 content_type: str) -> None:
    uid = create(client)
    before = client.get(f"/workitems/{uid}").content
    method, path, body = _requests(uid, None)[transaction]
    content = (b"<NativeDicomModel/>" if "xml" in content_type
               else httpx.Request("POST", "/", json=body).content)
    r = client.request(method, path, content=content, headers={"Content-Type": content_type})
    assert_error(r, 415, mentions=(UNSUPPORTED[content_type],))
    assert client.get(f"/workitems/{uid}").content == before


@pytest.mark.parametrize("content_type", [
    "application/dicom+json", "application/json", "application/dicom+json; charset=utf-8",
    "Application/DICOM+JSON", 'application/json; charset="UTF-8"',
])
@pytest.mark.parametrize("transaction", TRANSACTIONS)
def test_dicom_json_and_plain_json_accepted(client: httpx.Client, transaction: str,
                                            content_type: str) -> None:
    uid = create(client)
    method, path, body = _requests(uid, None)[transaction]
    r = client.request(method, path, content=httpx.Request("POST", "/", json=body).content,
                       headers={"Content-Type": content_type})
    assert r.status_code == EXPECTED[transaction], r.text


@pytest.mark.parametrize("accept", [
    "application/dicom+json", "application/json", "*/*", "application/*", None,
    "application/dicom+xml, application/dicom+json;q=0.5", "text/html, */*;q=0.1",
])
def test_acceptable_answers(client: httpx.Client, accept: str | None) -> None:
    uid, _ = bring_to(client, "SCHEDULED")
    headers = {"Accept": accept} if accept else {}
    for path in (f"/workitems/{uid}", f"/workitems?SOPInstanceUID={uid}"):
        r = client.get(path, headers=headers)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == DICOM_JSON
        assert len(r.json()) == 1


@pytest.mark.parametrize("accept", ["application/dicom+xml",
                                    'multipart/related; type="application/dicom+xml"',
                                    "text/html", "application/xml, text/plain"])
def test_unacceptable_answer_is_406(client: httpx.Client, accept: str) -> None:
    uid = create(client)
    for path in (f"/workitems/{uid}", f"/workitems?SOPInstanceUID={uid}"):
        assert_error(client.get(path, headers={"Accept": accept}), 406,
                     mentions=("application/dicom+json",))
    r = client.post(f"/workitems?workitem={new_uid()}", json=sample_workitem_json(),
                    headers={"Content-Type": DICOM_JSON, "Accept": accept})
    assert_error(r, 406, mentions=("application/dicom+json",))


# -- body size (WORKLIST_MAX_BODY_BYTES) --------------------------------------------------
LIMIT = 4096


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with a 4 KiB body limit (checked in the HTTP adapter, whatever the
    database: SQLite suffices)."""
    srv = start_server(tmp_path_factory.mktemp("small"), dimse=False,
                       env={"WORKLIST_MAX_BODY_BYTES": str(LIMIT)})
    yield srv
    assert srv.stop() == 0, srv.log()


def _padded(body: dict[str, Any], size: int) -> bytes:
    """``body`` as JSON padded with whitespace to ``size`` bytes."""
    data = httpx.Request("POST", "/", json=body).content
    assert len(data) <= size
    return data + b" " * (size - len(data))


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
@pytest.mark.parametrize("transaction", TRANSACTIONS)
def test_body_over_the_limit_is_413(small_server: Server, transaction: str,
                                    chunked: bool) -> None:
    with httpx.Client(base_url=small_server.base_url, timeout=30) as client:
        uid, tx = bring_to(client, "SCHEDULED")
        before = client.get(f"/workitems/{uid}").content
        method, path, body = _requests(uid, tx)[transaction]
        data = _padded(body, LIMIT + 1)
        content: Any = iter([data[:1000], data[1000:]]) if chunked else data
        r = client.request(method, path, content=content,
                           headers={"Content-Type": DICOM_JSON})
        assert_error(r, 413, mentions=(str(LIMIT),))
        assert client.get(f"/workitems/{uid}").content == before
        # Exactly at the limit is fine.
        r = client.request(method, path, content=_padded(body, LIMIT),
                           headers={"Content-Type": DICOM_JSON})
        assert r.status_code == EXPECTED[transaction], r.text
        assert retrieve(client, uid)


def test_huge_declared_length_is_413_without_reading(small_server: Server) -> None:
    # httpx will not send a Content-Length it does not honour: speak HTTP by hand.
    url = httpx.URL(small_server.http_url)
    with socket.create_connection((url.host, url.port), timeout=30) as sock:
        sock.sendall(b"POST /dicom-web/workitems HTTP/1.1\r\nHost: x\r\n"
                     b"Content-Type: application/dicom+json\r\n"
                     b"Content-Length: 99999999999\r\n\r\n{}")
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = sock.recv(4096)
            assert chunk, answer
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413 "), answer
    assert small_server.process.poll() is None
