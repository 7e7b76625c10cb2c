"""The ``worklist`` command.

``worklist serve [--config FILE] [--database URL] [--http-host HOST] [--http-port PORT]
[--ae-title AET] [--dimse-port PORT]`` runs the server; it is ready when
``GET /dicom-web/workitems?limit=1`` answers.  Other commands act on the database
through the same service layer as the protocols.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from .config import SettingsError, load_settings

__all__ = ["main"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="TOML config file (or WORKLIST_CONFIG)")
    p.add_argument("--database", help="SQLAlchemy URL (default: SQLite file under --data-dir)")
    p.add_argument("--data-dir", help="directory for the embedded database (default ./var)")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="worklist", description="DICOM UPS worklist server "
                                     "for annotation projects (DIMSE and UPS-RS)")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server")
    _common(serve)
    serve.add_argument("--http-host", help="address for HTTP and DIMSE (default 127.0.0.1)")
    serve.add_argument("--http-port", type=int, help="UPS-RS port (default 8080)")
    serve.add_argument("--ae-title", help="DIMSE AE title (default WORKLIST)")
    serve.add_argument("--dimse-port", type=int, help="DIMSE port (default 11112; 0 = off)")
    serve.add_argument("--peer", action="append", default=[], metavar="AET=HOST:PORT",
                       help="a DICOM peer's address (repeatable)")
    serve.add_argument("--orthanc-url", help="Orthanc's REST URL (follow it, verify outputs)")
    serve.add_argument("--orthanc-aet", help="Orthanc's AE title (default ORTHANC)")
    serve.add_argument("--orthanc-dicom-port", type=int, help="Orthanc's DICOM port (default 4242)")
    serve.add_argument("--log-level", help="DEBUG, INFO, WARNING (default INFO)")
    create = sub.add_parser("create", help="create a workitem from a DICOM JSON file")
    _common(create)
    create.add_argument("file", help="DICOM JSON dataset ('-' for standard input)")
    create.add_argument("--uid", help="workitem UID (default: SOP Instance UID in the file, "
                        "else a new one)")
    sample = sub.add_parser("sample", help="print a complete example workitem as DICOM JSON")
    sample.add_argument("--worklist-label", default="default")
    sample.add_argument("--performer", help="login of a scheduled reader")
    route = sub.add_parser("route", help="apply the routing rules to studies already in "
                           "Orthanc (idempotent)")
    _common(route)
    route.add_argument("--orthanc-url", help="Orthanc's REST URL")
    route.add_argument("--orthanc-aet", help="Orthanc's AE title (default ORTHANC)")
    route.add_argument("select", nargs="*", metavar="KEYWORD=PATTERN",
                       help="only studies matching (same patterns as the rules)")
    history = sub.add_parser("history", help="print the history of a workitem")
    _common(history)
    history.add_argument("uid")
    _results_parser(sub)
    from .performer_cli import add_parsers as performer_parsers  # issue 6: the performer's flow
    performer_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except SettingsError as exc:
        print(f"worklist: configuration error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _settings(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    peers = {}
    for spec in getattr(args, "peer", []) or []:
        aet, _, addr = spec.partition("=")
        if not aet or not addr:
            raise SettingsError(f"--peer {spec!r} is not AET=HOST:PORT")
        peers[aet] = addr
    return load_settings(
        args.config, database=args.database, data_dir=args.data_dir,
        http_host=getattr(args, "http_host", None), http_port=getattr(args, "http_port", None),
        ae_title=getattr(args, "ae_title", None), dimse_port=getattr(args, "dimse_port", None),
        orthanc_url=getattr(args, "orthanc_url", None),
        orthanc_aet=getattr(args, "orthanc_aet", None),
        orthanc_dicom_port=getattr(args, "orthanc_dicom_port", None),
        log_level=getattr(args, "log_level", None), peers=peers or None)


def _run(args: argparse.Namespace) -> int:
    from . import performer_cli
    from .errors import UPSError

    if args.command in performer_cli.COMMANDS:  # clients of a server: no settings, no database
        return performer_cli.run(args)
    if args.command == "sample":
        from .sample import sample_workitem_json
        print(json.dumps(sample_workitem_json(worklist_label=args.worklist_label,
                                              performer=args.performer), indent=2))
        return 0
    settings = _settings(args)
    logging.basicConfig(level=settings.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per Orthanc request
    if args.command == "serve":
        from .app import serve
        serve(settings)
        return 0
    from .app import build
    from .service import Actor
    from .values import Protocol
    app = build(settings)
    try:
        if args.command == "create":
            from pydicom.uid import generate_uid

            from .dicomjson import parse_json_dataset
            text = sys.stdin.read() if args.file == "-" else Path(args.file).read_text()
            try:
                ds = parse_json_dataset(text)
                # As the SCU, the command assigns the workitem UID when the file has none
                # (PS3.4 CC.2.5.1), so `worklist sample | worklist create -` just works.
                uid = args.uid or (None if ds.get("SOPInstanceUID") else generate_uid())
                result = app.service.create(ds, uid, Actor(Protocol.CLI, "cli"))
            except UPSError as exc:
                print(f"worklist: refused (0x{int(exc.status):04X}): {exc.message}",
                      file=sys.stderr)
                return 1
            print(result.uid)
        elif args.command == "route":
            return _route(app, args.select)
        elif args.command == "history":
            try:
                rows = app.service.history(args.uid)
            except UPSError as exc:
                print(f"worklist: {exc.message}", file=sys.stderr)
                return 1
            print(json.dumps(rows, indent=2))
        elif args.command == "results":
            return _results(app, args)
        return 0
    finally:
        app.close()


# -- issue 6: the reviewer's query over the result index (begin) ----------------------------
def _results_parser(sub) -> None:  # type: ignore[no-untyped-def]
    from .resultfilters import FILTERS, MAX_LIMIT
    results = sub.add_parser("results", help="query the provenance of the SEG/SR linked to "
                             "completed workitems (JSON, or CSV with --csv)")
    _common(results)
    results.add_argument("sop_uid", nargs="?", help="show one result (SOP Instance UID)")
    for name, text in FILTERS.items():
        flag = "--" + name.replace("_", "-")
        default = str(MAX_LIMIT) if name == "limit" else None
        results.add_argument(flag, dest=f"filter_{name}", default=default, metavar="VALUE",
                             help=text if name != "limit" else f"rows at most (default {default})")
    results.add_argument("--csv", action="store_true", help="CSV with a header row")


def _results(app, args: argparse.Namespace) -> int:  # type: ignore[no-untyped-def]
    from .errors import UPSError
    from .results import parse_query, to_csv
    try:
        if args.sop_uid:
            print(json.dumps(app.service.result(args.sop_uid), indent=2))
            return 0
        query = parse_query((key[len("filter_"):], value) for key, value in vars(args).items()
                            if key.startswith("filter_") and value is not None)
        page = app.service.search_results(query)
    except UPSError as exc:
        print(f"worklist: {exc.message}", file=sys.stderr)
        return 1
    sys.stdout.write(to_csv(page.rows) if args.csv else json.dumps(page.rows, indent=2) + "\n")
    if query.offset + len(page.rows) < page.total:
        print(f"worklist: {page.total - query.offset - len(page.rows)} more rows: use --offset "
              f"{query.offset + len(page.rows)}", file=sys.stderr)
    return 0
# -- (end) -----------------------------------------------------------------------------------


def _route(app, select: list[str]) -> int:  # type: ignore[no-untyped-def]
    """``worklist route``: the rules over every study in Orthanc, with a progress line."""
    from .routing import RoutingError, parse_rules

    if app.router is None:
        raise SettingsError("worklist route needs orthanc_url (--orthanc-url)")
    match = {}
    for spec in select:
        keyword, sep, pattern = spec.partition("=")
        if not sep:
            raise SettingsError(f"'{spec}' is not KEYWORD=PATTERN")
        match[keyword] = pattern
    try:
        selection = parse_rules([{"name": "selection", "match": match}])[0].match
    except RoutingError as exc:
        raise SettingsError(str(exc).replace("routing rule 1 ('selection'), field match.",
                                             "selection ")) from None
    pairs = [(keyword, p) for keyword, patterns in selection for p in patterns]
    studies = app.orthanc.studies()
    created = 0
    for done, orthanc_id in enumerate(studies, 1):
        created += len(app.router.route(orthanc_id, stable=True, select_attrs=pairs))
        width = 30
        bar = "#" * (width * done // len(studies))
        print(f"\rrouting [{bar:<{width}}] {done}/{len(studies)} studies, {created} workitems "
              "created", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    print(created)
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
