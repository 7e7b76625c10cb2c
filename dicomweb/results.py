"""The reviewer's query over the result index (issue 6, point 6): not part of DICOM.

``GET /api/results?worklist=liver&label=Liver lesion*&concept=Volume`` answers one flat
row per item (segment, measurement, evaluation) joined with its result, as JSON (a list
of objects) or, with ``Accept: text/csv`` or ``?format=csv``, as CSV (RFC 4180, header
row).  ``GET /api/results/{sop_uid}`` answers one result with its items, references and
verdicts.  Filters are :data:`worklist.results.FILTERS`; an unknown one or a bad value is
400 with a message naming it.  Rows beyond the page are announced by ``X-Total-Count``
and a ``Link: <...>; rel="next"`` header.  Everything is read from the worklist's
database: Orthanc is never asked.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from worklist import errors
from worklist.results import parse_query, to_csv

__all__ = ["result_routes", "CSV"]

CSV = "text/csv; charset=utf-8; header=present"


class NotAcceptable(errors.InvalidRequest):
    http_status = 406


def _wants_csv(request: Request, *, csv_allowed: bool = True) -> bool:
    """``?format=csv|json`` wins; else the Accept header's preferred type we can send."""
    fmt = request.query_params.get("format")
    if fmt is not None:
        if fmt.lower() not in ("csv", "json") or (fmt.lower() == "csv" and not csv_allowed):
            raise errors.InvalidRequest(f"format: '{fmt}' is not "
                                        + ("csv or json" if csv_allowed else "json"))
        return fmt.lower() == "csv"
    accept = request.headers.get("accept")
    if not accept:
        return False
    ranked = []
    for position, part in enumerate(accept.split(",")):
        media, *params = [p.strip().lower() for p in part.split(";")]
        q = 1.0
        for param in params:
            if param.startswith("q="):
                try:
                    q = float(param[2:])
                except ValueError:
                    q = 0.0
        if q > 0:
            ranked.append((-q, position, media))
    for _q, _pos, media in sorted(ranked):
        if media in ("application/json", "application/*", "*/*"):
            return False
        if csv_allowed and media in ("text/csv", "text/*"):
            return True
    raise NotAcceptable(f"Cannot answer with {accept}: this resource sends application/json"
                        + (" or text/csv" if csv_allowed else ""))


def result_routes(service: Any) -> list[Route]:
    def search_results(request: Request) -> Response:
        csv = _wants_csv(request)
        query = parse_query((k, v) for k, v in request.query_params.multi_items()
                            if k.lower() != "format")
        page = service.search_results(query)
        headers = {"Cache-Control": "no-cache", "X-Total-Count": str(page.total)}
        following = query.offset + len(page.rows)
        if following < page.total:
            url = request.url.remove_query_params("offset").include_query_params(
                offset=following)
            headers["Link"] = f'<{url}>; rel="next"'
        if csv:
            return Response(to_csv(page.rows).encode("utf-8"), media_type=CSV, headers=headers)
        return JSONResponse(page.rows, headers=headers)

    def get_result(request: Request) -> Response:
        _wants_csv(request, csv_allowed=False)
        return JSONResponse(service.result(request.path_params["sop_uid"]),
                            headers={"Cache-Control": "no-cache"})

    return [Route("/api/results", search_results, methods=["GET"]),
            Route("/api/results/{sop_uid}", get_result, methods=["GET"])]
