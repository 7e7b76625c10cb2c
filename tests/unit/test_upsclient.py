"""The performer's HTTP clients without a server: multipart splitting and error texts."""

from __future__ import annotations

import json
import random
from typing import Any

import httpx
import pytest

from worklist.upsclient import ClientError, DICOMwebClient, UPSClient, iter_multipart, warning_text

BOUNDARY = "b0undary"


def _message(parts: list[bytes], preamble: bytes = b"") -> bytes:
    body = preamble
    for p in parts:
        body += (f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n").encode() + p + b"\r\n"
    return body + f"--{BOUNDARY}--\r\n".encode()


@pytest.mark.parametrize("seed", range(20))
def test_multipart_parts_come_out_whole_whatever_the_chunking(seed: int) -> None:
    rng = random.Random(seed)
    parts = [bytes(rng.getrandbits(8) for _ in range(rng.randint(0, 3000))) for _ in range(5)]
    # data that looks almost like a delimiter must stay inside its part
    parts.append(b"x\r\n--b0undar" + b"--" + BOUNDARY.encode() + b"y")
    body = _message(parts, preamble=b"ignored preamble\r\n" if seed % 2 else b"")
    cuts = sorted(rng.sample(range(1, len(body)), rng.randint(0, 40)))
    chunks = [body[a:b] for a, b in zip([0, *cuts], [*cuts, len(body)])]
    assert list(iter_multipart(chunks, BOUNDARY)) == parts


def test_warning_text_is_the_text_after_the_service() -> None:
    assert warning_text('299 http://host:8080/dicom-web: The Transaction UID is missing.') == \
        "The Transaction UID is missing."
    assert warning_text(None) is None


def _ups(handler: Any) -> UPSClient:
    return UPSClient("http://ups/dicom-web", transport=httpx.MockTransport(handler))


def test_refusal_carries_status_server_message_and_warning() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        assert request.url.params["transaction-uid"] == "2.25.1"
        return httpx.Response(400, json={"message": "Transaction UID is incorrect",
                                         "status": "0xC301"},
                              headers={"Warning": "299 http://ups/dicom-web: The Transaction "
                                                  "UID is incorrect."})
    with pytest.raises(ClientError) as info, _ups(handler) as ups:
        ups.update("1.2.3", "2.25.1", {})
    err = info.value
    assert (err.status, err.dimse_status, err.detail) == (400, "0xC301",
                                                          "Transaction UID is incorrect")
    assert err.warning == "The Transaction UID is incorrect."
    assert str(err) == "update of 1.2.3 refused: 400 Transaction UID is incorrect"


def test_search_pages_until_no_more_results() -> None:
    items = [{"00080018": {"vr": "UI", "Value": [f"1.2.{i}"]}} for i in range(5)]

    def handler(request: httpx.Request) -> httpx.Response:
        offset, limit = int(request.url.params["offset"]), int(request.url.params["limit"])
        page = items[offset:offset + limit]
        more = len(items) - offset - len(page)
        headers = {"Warning": f"299 x: There are {more} additional results that can be "
                              "requested."} if more else {}
        return httpx.Response(200, json=page, headers=headers) if page else httpx.Response(204)
    with _ups(handler) as ups:
        assert ups.search({"ProcedureStepState": "SCHEDULED"}, page=2) == items


def test_stow_failure_names_the_failed_instance() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(409, content=json.dumps({"00081198": {"vr": "SQ", "Value": [
            {"00081155": {"vr": "UI", "Value": ["1.2.9"]},
             "00081197": {"vr": "US", "Value": [0xA700]}}]}}))
    web = DICOMwebClient("http://store", transport=httpx.MockTransport(handler))
    with pytest.raises(ClientError, match=r"not stored: 1\.2\.9 \(Failure Reason 0xa700\)"):
        web.store("http://store/studies", [b"DICM"])


def test_unreachable_server_is_said_plainly() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused")
    with pytest.raises(ClientError, match="cannot reach http://ups/dicom-web/workitems/1.2"), \
            _ups(handler) as ups:
        ups.retrieve("1.2")
