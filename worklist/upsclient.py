"""Thin HTTP clients for a performer: UPS-RS for the worklist, DICOMweb for the images.

A viewer integration needs no more than these two, so the performer's commands
(``worklist.performer``) use nothing else: no database, no Orthanc REST API.

* :class:`UPSClient` - Retrieve (PS3.18 11.5), Update (11.6), Change State (11.7) and
  Search (11.9) of workitems;
* :class:`DICOMwebClient` - WADO-RS Retrieve of a series (PS3.18 10.4), streamed and
  split part by part, STOW-RS (10.5) and QIDO-RS instance search (10.6).

Both raise :class:`ClientError` with the HTTP status, the server's own message (the JSON
``message`` of our server, else the ``Warning: 299`` text PS3.18 8.3.5.1 / 11.x names,
else the HTTP reason) and the URL, so every refusal reaches the user in one line.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterable, Iterator
from typing import Any

import httpx

__all__ = ["ClientError", "UPSClient", "DICOMwebClient", "iter_multipart", "warning_text",
           "DICOM_JSON", "MULTIPART_DICOM"]

DICOM_JSON = "application/dicom+json"
MULTIPART_DICOM = 'multipart/related; type="application/dicom"'
_CHUNK = 1 << 20


class ClientError(Exception):
    """A request that failed: refused by the server (``status`` set) or not answered
    (``status`` None: connection refused, timeout)."""

    def __init__(self, message: str, *, status: int | None = None, url: str = "",
                 warning: str | None = None, attribute: str | None = None,
                 dimse_status: str | None = None, detail: str | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.url = message, status, url
        self.detail = detail or message
        """The server's own reason, without our prefix."""
        self.warning, self.attribute, self.dimse_status = warning, attribute, dimse_status

    def __str__(self) -> str:
        return self.message


def warning_text(header: str | None) -> str | None:
    """The text of ``Warning: 299 <service>: <text>`` (RFC 7234 5.5, PS3.18 8.3.5.1)."""
    if not header:
        return None
    m = re.match(r"\s*\d{3}\s+\S+?:\s(.*)$", header)
    return (m.group(1) if m else header).strip().strip('"') or None


def _error(response: httpx.Response, what: str) -> ClientError:
    warning = warning_text(response.headers.get("warning"))
    body: dict[str, Any] = {}
    try:
        parsed = json.loads(response.content) if response.content else {}
        body = parsed if isinstance(parsed, dict) else {}
    except ValueError:
        pass
    detail = body.get("message") or warning or (response.text[:200].strip() if
                                                response.content else "") or response.reason_phrase
    return ClientError(f"{what}: {response.status_code} {detail}", status=response.status_code,
                       url=str(response.request.url), warning=warning,
                       attribute=body.get("attribute"), dimse_status=body.get("status"),
                       detail=str(detail))


class _Base:
    def __init__(self, base_url: str, *, token: str | None = None, timeout: float = 60,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, url: str, what: str, *, idempotent: bool = True,
              **kwargs: Any) -> httpx.Response:
        """One request; an idempotent one is sent once more when a kept-alive connection
        turns out to be closed (the server may close it after an error answer)."""
        for attempt in (1, 2):
            try:
                return self._http.request(method, url, **kwargs)
            except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                if attempt == 2 or not idempotent:
                    error: Exception = exc
                    break
            except httpx.HTTPError as exc:
                error = exc
                break
        raise ClientError(f"{what}: cannot reach {url.split('?')[0]} ({error})", url=url)


class UPSClient(_Base):
    """UPS-RS (PS3.18 chapter 11) at ``base_url`` (the DICOMweb root, e.g.
    ``http://127.0.0.1:8080/dicom-web``)."""

    def retrieve(self, uid: str) -> dict[str, Any]:
        """Retrieve Workitem (PS3.18 11.5): the workitem as DICOM JSON (never with its
        Transaction UID)."""
        r = self._send("GET", f"{self.base_url}/workitems/{uid}", f"workitem {uid}",
                       headers={"Accept": DICOM_JSON})
        if r.status_code != 200:
            raise _error(r, f"workitem {uid}")
        body = r.json()
        return body[0] if isinstance(body, list) else body

    def update(self, uid: str, transaction_uid: str | None, changes: dict[str, Any]) -> None:
        """Update Workitem (PS3.18 11.6): sequences given are replaced whole (PS3.4
        CC.2.6.2); an IN PROGRESS workitem needs its Transaction UID."""
        params = {"transaction-uid": transaction_uid} if transaction_uid else {}
        r = self._send("POST", f"{self.base_url}/workitems/{uid}", f"update of {uid}",
                       params=params, content=json.dumps(changes).encode(),
                       headers={"Content-Type": DICOM_JSON, "Accept": DICOM_JSON})
        if r.status_code != 200:
            raise _error(r, f"update of {uid} refused")

    def change_state(self, uid: str, state: str, transaction_uid: str) -> str | None:
        """Change Workitem State (PS3.18 11.7): returns the Warning text of a 200 that
        carries one (e.g. already COMPLETED), else None."""
        body = {"00741000": {"vr": "CS", "Value": [state]},
                "00081195": {"vr": "UI", "Value": [transaction_uid]}}
        r = self._send("PUT", f"{self.base_url}/workitems/{uid}/state", f"{state} for {uid}",
                       idempotent=False, content=json.dumps(body).encode(),
                       headers={"Content-Type": DICOM_JSON, "Accept": DICOM_JSON})
        if r.status_code != 200:
            raise _error(r, f"change of {uid} to {state} refused")
        return warning_text(r.headers.get("warning"))

    def search(self, params: dict[str, str], *, page: int = 500,
               maximum: int = 10_000) -> list[dict[str, Any]]:
        """Search for Workitems (PS3.18 11.9), every page (``limit``/``offset``)."""
        found: list[dict[str, Any]] = []
        while len(found) < maximum:
            query = dict(params, limit=str(page), offset=str(len(found)))
            r = self._send("GET", f"{self.base_url}/workitems", "search", params=query,
                           headers={"Accept": DICOM_JSON})
            if r.status_code == 204:
                break
            if r.status_code != 200:
                raise _error(r, "search refused")
            batch = r.json()
            found.extend(batch)
            # PS3.18 11.9.3.2: "There are N additional results ..." when more remain
            if len(batch) < page or "additional results" not in (r.headers.get("warning") or ""):
                break
        return found


def iter_multipart(chunks: Iterable[bytes], boundary: str) -> Iterator[bytes]:
    """The bodies of a multipart/related message (RFC 2387, PS3.18 8.7.1.2), yielded as
    they arrive: one part is held in memory at a time, never the whole message."""
    delim = b"\r\n--" + boundary.encode()
    buf = bytearray(b"\r\n")  # the first delimiter may open the body without CRLF
    started, body_start, scan = False, -1, 0
    for chunk in chunks:
        buf += chunk
        while True:
            if not started:
                i = buf.find(delim)
                if i < 0:
                    break
                del buf[:i + len(delim)]
                started, body_start, scan = True, -1, 0
            if body_start < 0:
                if len(buf) < 2:
                    break
                if buf[:2] == b"--":  # close-delimiter
                    return
                j = buf.find(b"\r\n\r\n")
                if j < 0:
                    break
                body_start = scan = j + 4
            k = buf.find(delim, scan)
            if k < 0:
                scan = max(body_start, len(buf) - len(delim))
                break
            yield bytes(buf[body_start:k])
            del buf[:k + len(delim)]
            body_start, scan = -1, 0


def _boundary(content_type: str) -> str | None:
    m = re.search(r'boundary="?([^";]+)"?', content_type, re.I)
    return m.group(1) if m else None


class DICOMwebClient(_Base):
    """WADO-RS, STOW-RS and QIDO-RS against any DICOMweb origin server (here Orthanc's
    DICOMweb plugin); URLs are taken whole from the workitem where it gives them."""

    def retrieve(self, url: str) -> Iterator[bytes]:
        """WADO-RS Retrieve Instances (PS3.18 10.4.1.1.1) of a study/series URL: each
        instance's Part 10 bytes, streamed.  ``transfer-syntax=*`` lets the origin
        server send what it has, without transcoding (PS3.18 8.7.3.5.2)."""
        accept = f"{MULTIPART_DICOM}; transfer-syntax=*"
        try:
            with self._http.stream("GET", url, headers={"Accept": accept}) as r:
                if r.status_code != 200:
                    r.read()
                    raise _error(r, f"WADO-RS {url}")
                boundary = _boundary(r.headers.get("content-type", ""))
                if not boundary:
                    raise ClientError(f"WADO-RS {url}: the answer is not multipart "
                                      f"({r.headers.get('content-type')})", url=url)
                yield from iter_multipart(r.iter_bytes(_CHUNK), boundary)
        except httpx.HTTPError as exc:
            raise ClientError(f"WADO-RS {url}: {exc}", url=url) from None

    def store(self, url: str, instances: Iterable[bytes]) -> dict[str, Any]:
        """STOW-RS (PS3.18 10.5) of Part 10 instances in one multipart/related request.
        Returns the Store Instances Response (Table 10.5.3-1); raises when any instance
        is in its Failed SOP Sequence (0008,1198) or the request is refused."""
        boundary = "worklist-" + uuid.uuid4().hex
        head = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").encode()
        body = bytearray()
        for data in instances:
            body += head
            body += data
            body += b"\r\n"
        body += f"--{boundary}--\r\n".encode()
        r = self._send("POST", url, "STOW-RS", idempotent=False, content=bytes(body), headers={
            "Content-Type": f"{MULTIPART_DICOM}; boundary={boundary}", "Accept": DICOM_JSON})
        answer: dict[str, Any] = {}
        if r.content:
            try:
                parsed = r.json()
                answer = parsed[0] if isinstance(parsed, list) and parsed else parsed
            except ValueError:
                answer = {}
        failed = (answer.get("00081198") or {}).get("Value") or []
        if r.status_code not in (200, 202) or failed:
            reasons = []
            for item in failed:
                uid = ((item.get("00081155") or {}).get("Value") or ["?"])[0]
                reason = ((item.get("00081197") or {}).get("Value") or [""])[0]
                reasons.append(f"{uid} (Failure Reason {reason:#06x})" if isinstance(reason, int)
                               else uid)
            if reasons:
                raise ClientError(f"STOW-RS to {url}: not stored: {', '.join(reasons)}",
                                  status=r.status_code, url=url)
            raise _error(r, f"STOW-RS to {url}")
        return answer

    def search_instances(self, base_url: str, params: dict[str, str]) -> list[dict[str, Any]]:
        """QIDO-RS Search For Instances (PS3.18 10.6.1) at the DICOMweb root."""
        r = self._send("GET", f"{base_url.rstrip('/')}/instances", "QIDO-RS", params=params,
                       headers={"Accept": DICOM_JSON})
        if r.status_code == 204 or (r.status_code == 200 and not r.content):
            return []
        if r.status_code != 200:
            raise _error(r, "QIDO-RS")
        return list(r.json())
