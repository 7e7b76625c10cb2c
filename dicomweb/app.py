"""UPS-RS, the DICOMweb Worklist Service (PS3.18 chapter 11), over Starlette.

Base path ``/dicom-web``.  Each endpoint translates the HTTP request into one call
of the core's service layer and its result or domain error back into HTTP; the
translation of errors lives in one place, :func:`_error_response`.
"""

from __future__ import annotations

import logging
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worklist import errors, matching
from worklist.dicomjson import check_uid, first, key_keyword, parse_json
from worklist.service import Actor, WorklistService
from worklist.values import Protocol

from .query import parse_search
from .results import result_routes
from .security import AuthMiddleware
from .subscribers import subscription_routes

__all__ = ["create_app", "DICOM_JSON"]

log = logging.getLogger("worklist.dicomweb")
DICOM_JSON = "application/dicom+json"
_ACCEPTED_BODY_TYPES = ("application/dicom+json", "application/json")
_ACCEPTABLE = ("application/dicom+json", "application/json", "application/*", "*/*")


class PayloadTooLarge(errors.InvalidRequest):
    http_status = 413


class UnsupportedMediaType(errors.InvalidRequest):
    http_status = 415


class NotAcceptable(errors.InvalidRequest):
    http_status = 406


def _service_url(request: Request) -> str:
    return str(request.base_url).rstrip("/") + "/dicom-web"


def _warning_header(request: Request, text: str) -> dict[str, str]:
    # PS3.18 8.3.5.1 / RFC 7234: Warning: 299 {+SERVICE}: <text>
    return {"Warning": f"299 {_service_url(request)}: {text}"}


def _error_response(request: Request, exc: errors.UPSError) -> Response:
    headers = _warning_header(request, exc.warning) if exc.warning else {}
    body: dict[str, Any] = {"message": exc.message, "status": f"0x{int(exc.status):04X}"}
    if exc.attribute:
        body["attribute"] = exc.attribute
    return JSONResponse(body, status_code=exc.http_status, headers=headers)


def _check_accept(request: Request) -> None:
    accept = request.headers.get("accept")
    if not accept:
        return
    for part in accept.split(","):
        media = part.split(";")[0].strip().lower()
        if media in _ACCEPTABLE:
            return
    raise NotAcceptable(f"Cannot answer with {accept}: this service sends application/dicom+json")


async def _read_body(request: Request, limit: int, *, required: bool = True) -> bytes:
    ctype = request.headers.get("content-type", "")
    media = ctype.split(";")[0].strip().lower()
    length = request.headers.get("content-length")
    if length and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(f"The body has {length} bytes; this server accepts at most {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"The body exceeds the limit of {limit} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
    if not body.strip():
        if required:
            raise errors.InvalidRequest("The request has no body: send a DICOM JSON dataset")
        return b""
    if media not in _ACCEPTED_BODY_TYPES:
        raise UnsupportedMediaType(
            f"Content-Type '{ctype or '(none)'}' is not supported: send application/dicom+json")
    charset = [p.split("=", 1)[1].strip().strip('"').lower() for p in ctype.split(";")[1:]
               if p.strip().lower().startswith("charset=")]
    if charset and charset[0] not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(f"charset {charset[0]} is not supported: DICOM JSON is UTF-8")
    return body


def _actor(request: Request) -> Actor:
    return Actor(Protocol.UPS_RS, request.scope.get("state", {}).get("user", "unknown"))


def _uid_param(request: Request, names: tuple[str, ...]) -> str | None:
    """A UID given as ``?name=UID`` (any of ``names``, case-insensitive) or as a bare
    ``?UID`` key (PS3.18 URI templates expand ``{?workitem}`` both ways in practice)."""
    for key, value in request.query_params.multi_items():
        if key.lower() in names and value:
            return value.strip()
    for key, value in request.query_params.multi_items():
        if not value and key and key[0].isdigit():
            return check_uid(key.strip(), "UID in the query")
    return None


def create_app(service: WorklistService, *, max_body_bytes: int = 16 << 20,
               search_default_limit: int = 100, search_max_limit: int = 1000,
               users: dict[str, str] | None = None) -> Any:
    """The UPS-RS application (an ASGI app with authentication in front)."""

    async def create_workitem(request: Request) -> Response:
        # PS3.18 11.4 Create Workitem
        _check_accept(request)
        body = await _read_body(request, max_body_bytes)
        uid = _uid_param(request, ("workitem",))
        actor = _actor(request)
        result = await run_in_threadpool(lambda: service.create(parse_json(body), uid, actor))
        location = f"{_service_url(request)}/workitems/{quote(result.uid)}"
        headers = {"Location": location, "Content-Location": location}
        if result.warning is not None:
            headers.update(_warning_header(request, result.warning.text))
        return Response(status_code=201, headers=headers)

    def search_workitems(request: Request) -> Response:
        # PS3.18 11.9 Search for Workitems (plain def: runs in the threadpool)
        _check_accept(request)
        params = parse_search(request.query_params.multi_items())
        query = matching.parse_identifier(params.identifier, fuzzy=params.fuzzy)
        limit = params.limit or search_default_limit
        headers: dict[str, str] = {"Cache-Control": "no-cache"}
        warnings = []
        if limit > search_max_limit:
            limit = search_max_limit
        result = service.search(query, offset=params.offset, limit=limit)
        if result.remaining:
            # PS3.18 8.3.4.4.1
            warnings.append(f"There are {result.remaining} additional results that can be "
                            "requested.")
        if warnings:
            headers.update(_warning_header(request, " ".join(warnings)))
        if not result.items:
            return Response(status_code=204, headers=headers)
        body = "[" + ",".join(result.items) + "]"
        return Response(body.encode("utf-8"), media_type=DICOM_JSON, headers=headers)

    def retrieve_workitem(request: Request) -> Response:
        # PS3.18 11.5 Retrieve Workitem: never the Transaction UID (it is not stored in
        # the dataset at all)
        _check_accept(request)
        uid = request.path_params["uid"]
        text = service.retrieve_json(uid)
        return Response(("[" + text + "]").encode("utf-8"), media_type=DICOM_JSON,
                        headers={"Cache-Control": "no-cache"})

    async def update_workitem(request: Request) -> Response:
        # PS3.18 11.6 Update Workitem; the Transaction UID comes as a query parameter
        # under any of the spellings clients use (ups-standard.md 1.16)
        uid = request.path_params["uid"]
        body = await _read_body(request, max_body_bytes)
        tx = _uid_param(request, ("transaction-uid", "transactionuid", "transaction"))
        if tx:
            check_uid(tx, "Transaction UID")
        actor = _actor(request)
        warning = await run_in_threadpool(lambda: service.update(uid, parse_json(body), tx, actor))
        headers = _warning_header(request, warning.text) if warning else {}
        return Response(status_code=200, headers=headers)

    async def change_state(request: Request) -> Response:
        # PS3.18 11.7 Change Workitem State
        uid = request.path_params["uid"]
        body = await _read_body(request, max_body_bytes)
        ds = parse_json(body)
        state = first(ds, "ProcedureStepState")
        if not state:
            raise errors.InvalidArgumentValue("The body must give Procedure Step State (0074,1000): "
                                              "IN PROGRESS, COMPLETED or CANCELED",
                                              attribute="ProcedureStepState")
        tx = str(first(ds, "TransactionUID") or "") or None
        if not tx:
            raise errors.WrongTransactionUID("The Transaction UID is missing: send it in the body "
                                             "as Transaction UID (0008,1195)",
                                             warning="The Transaction UID is missing.",
                                             attribute="TransactionUID")
        extra = [key_keyword(k) or k for k in ds
                 if key_keyword(k) not in ("ProcedureStepState", "TransactionUID",
                                           "SpecificCharacterSet")]
        if extra:
            raise errors.InvalidRequest(f"A state change carries only Procedure Step State and "
                                        f"Transaction UID, not {', '.join(extra)}: update other "
                                        "attributes first")
        warning = await run_in_threadpool(service.change_state, uid, str(state), tx,
                                          _actor(request))
        headers = _warning_header(request, warning.text) if warning else {}
        return Response(status_code=200, headers=headers)

    async def cancel_request(request: Request) -> Response:
        # PS3.18 11.8 Request Cancellation: 202 means "acknowledged", not "canceled"
        uid = request.path_params["uid"]
        body = await _read_body(request, max_body_bytes, required=False)
        info = parse_json(body) if body else {}
        warning = await run_in_threadpool(service.request_cancel, uid, info, _actor(request))
        headers = _warning_header(request, warning.text) if warning else {}
        return Response(status_code=202, headers=headers)

    def workitem_history(request: Request) -> Response:
        # Not part of DICOM: the append-only audit trail, for QA tools.
        rows = service.history(request.path_params["uid"])
        return JSONResponse(rows)

    async def on_ups_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, errors.UPSError)
        if exc.http_status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc.message)
        return _error_response(request, exc)

    async def on_http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        messages = {404: f"Nothing at {request.url.path}: UPS-RS resources are under "
                         "/dicom-web/workitems",
                    405: f"{request.method} is not supported on {request.url.path}"}
        return JSONResponse({"message": messages.get(exc.status_code, exc.detail)},
                            status_code=exc.status_code, headers=exc.headers)

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error on %s %s", request.method, request.url.path)
        return JSONResponse({"message": "Internal error; nothing was changed. The server log "
                                        "has the details."}, status_code=500)

    routes = [
        Route("/dicom-web/workitems", search_workitems, methods=["GET"]),
        Route("/dicom-web/workitems", create_workitem, methods=["POST"]),
        Route("/dicom-web/workitems/{uid}", retrieve_workitem, methods=["GET"]),
        Route("/dicom-web/workitems/{uid}", update_workitem, methods=["POST"]),
        Route("/dicom-web/workitems/{uid}/state", change_state, methods=["PUT"]),
        Route("/dicom-web/workitems/{uid}/cancelrequest", cancel_request, methods=["POST"]),
        Route("/api/workitems/{uid}/history", workitem_history, methods=["GET"]),
        *subscription_routes(service, _actor, _warning_header),
        *result_routes(service),  # issue 6: the reviewer's query over the result index
    ]
    app = Starlette(routes=routes, exception_handlers={
        errors.UPSError: on_ups_error, HTTPException: on_http_error, Exception: on_unexpected})
    app.state.service = service
    return AuthMiddleware(app, users or {})
