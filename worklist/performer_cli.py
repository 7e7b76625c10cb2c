"""The performer's subcommands on the ``worklist`` command line (issue 6, point 4).

``worklist tasks | claim | fetch | submit | link``: options, the task table, exit codes
(0 done, 1 refused or failed with one line on stderr saying why, 2 usage).  The flows
themselves are in :mod:`worklist.performer` and :mod:`worklist.submission`.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

from .performer import Claims, Identity, Performer, PerformerError, default_state_dir
from .upsclient import ClientError, DICOMwebClient, UPSClient

__all__ = ["COMMANDS", "add_parsers", "run"]

COMMANDS = ("tasks", "claim", "fetch", "submit", "link")


# -- command line -------------------------------------------------------------------------
def add_parsers(sub: Any) -> None:
    """Register the performer's subcommands on the ``worklist`` parser."""
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("server and identity")
    g.add_argument("--server", default=os.environ.get("WORKLIST_URL", "http://127.0.0.1:8080"),
                   help="worklist URL (env WORKLIST_URL; default http://127.0.0.1:8080)")
    g.add_argument("--token", default=os.environ.get("WORKLIST_TOKEN"),
                   help="bearer token (env WORKLIST_TOKEN)")
    g.add_argument("--user", default=os.environ.get("WORKLIST_USER") or _os_login(),
                   help="your login, the Human Performer code value (env WORKLIST_USER; "
                        "default the OS login)")
    g.add_argument("--name", help="your name as DICOM PN, Family^Given (default: as the task "
                   "schedules you, else the login)")
    g.add_argument("--organization", help="your organization (default: as the task "
                   "schedules you)")
    g.add_argument("--role", choices=["reader", "reviewer", "adjudicator"],
                   help="your role in the task (CID 7453; default reader, reviewer with "
                   "--verdict)")
    g.add_argument("--state-dir", type=Path, help="where claims are kept (default "
                   "$XDG_STATE_HOME/worklist)")
    g.add_argument("--timeout", type=float, default=120, help="seconds per HTTP request")

    p = sub.add_parser("tasks", parents=[common], help="list my open tasks")
    p.add_argument("--pool", action="store_true", help="also READY unassigned tasks")
    p.add_argument("--worklist", metavar="LABEL", help="only this Worklist Label")
    p.add_argument("--json", action="store_true", help="JSON instead of a table")

    p = sub.add_parser("claim", parents=[common], help="claim a task (IN PROGRESS)")
    p.add_argument("uid")
    p.add_argument("--show-transaction-uid", action="store_true",
                   help="print the Transaction UID (your lock on the task)")

    p = sub.add_parser("fetch", parents=[common], help="retrieve a task's inputs over WADO-RS")
    p.add_argument("uid")
    p.add_argument("dir", type=Path)

    p = sub.add_parser("submit", parents=[common], help="build SEG and SR from a mask, store "
                       "them, complete the task")
    p.add_argument("uid")
    p.add_argument("--mask", type=Path, help=".npy/.npz label map (frames, rows, columns)")
    p.add_argument("--inputs", type=Path, metavar="DIR", help="source images from a prior "
                   "'worklist fetch' (default: WADO-RS)")
    p.add_argument("--series", help="the source series, when the task has several")
    p.add_argument("--label-set", metavar="NAME", help="for a task that carries no label set: "
                   "one of config/labelsets.toml")
    p.add_argument("--ai-input", metavar="ALGO:VERSION", help="the mask was edited from this "
                   "algorithm's proposal (SEMIAUTOMATIC)")
    p.add_argument("--session", help="reading session / repetition label")
    p.add_argument("--comment", help="Comments on the Performed Procedure Step (and the "
                   "review comment)")
    p.add_argument("--verdict", choices=["ACCEPTED", "REJECTED", "NEEDS_REVISION"],
                   help="review task: the verdict on the reviewed report")
    p.add_argument("--reviewed", metavar="SR_UID", help="review task: the SR reviewed "
                   "(default: the one SR among the task's inputs)")
    p.add_argument("--timings", action="store_true", help="print each step's duration")

    p = sub.add_parser("link", parents=[common], help="link results another tool stored, "
                       "optionally complete")
    p.add_argument("uid")
    p.add_argument("sop_uids", nargs="+", metavar="SOP_UID")
    p.add_argument("--complete", action="store_true", help="then complete the task")
    p.add_argument("--comment", help="Comments on the Performed Procedure Step")
    p.add_argument("--dicomweb", metavar="URL", help="DICOMweb root where they are "
                   "(default: the task's Output Destination)")


def _os_login() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _session(args: argparse.Namespace) -> Performer:
    server = args.server.rstrip("/")
    base = server if server.endswith("/dicom-web") else server + "/dicom-web"
    if not args.user or len(args.user) > 16:
        raise PerformerError(f"--user {args.user!r}: a login is 1-16 characters (the Human "
                             "Performer code value is SH)")
    role = args.role or ("reviewer" if getattr(args, "verdict", None) else "reader")
    identity = Identity(args.user, args.name, args.organization, role.capitalize())
    return Performer(UPSClient(base, token=args.token, timeout=args.timeout),
                     DICOMwebClient(base, timeout=args.timeout), identity,
                     Claims(args.state_dir or default_state_dir()), base)


def _local_time(dt: str) -> str:
    """A DICOM DT (PS3.5 6.2) as local 'YYYY-MM-DD HH:MM' (converted when it carries a
    UTC offset), else as given."""
    try:
        when = _dt.datetime.strptime(dt[:12], "%Y%m%d%H%M")
    except ValueError:
        return dt
    offset = dt[-5:] if len(dt) > 14 and dt[-5] in "+-" else None
    if offset:
        sign = 1 if offset[0] == "+" else -1
        zone = _dt.timezone(sign * _dt.timedelta(hours=int(offset[1:3]),
                                                 minutes=int(offset[3:5])))
        when = when.replace(tzinfo=zone).astimezone()
    return when.strftime("%Y-%m-%d %H:%M")


def _table(rows: list[dict[str, Any]]) -> str:
    head = ("UID", "STATE", "PRIORITY", "LABEL", "PATIENT", "DUE")
    lines = [head]
    for r in rows:
        state = r["state"] + ("" if r["readiness"] in (None, "READY") else
                              f" ({r['readiness']})") + ("" if r["mine"] else " [pool]")
        due = _local_time(r["due"])
        lines.append((r["uid"], state, r["priority"] or "", r["label"], r["patient_id"], due))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(line, widths)).rstrip()
                     for line in lines)


def run(args: argparse.Namespace) -> int:
    """Run a performer command; 0 done, 1 refused or failed (reason on stderr)."""
    try:
        session = _session(args)
    except PerformerError as exc:
        print(f"worklist {args.command}: {exc}", file=sys.stderr)
        return 2
    try:
        with session.ups, session.web:
            return _dispatch(session, args)
    except (PerformerError, ClientError) as exc:
        print(f"worklist {args.command}: {exc}", file=sys.stderr)
        return 1


def _dispatch(s: Performer, args: argparse.Namespace) -> int:
    if args.command == "tasks":
        rows = s.tasks(pool=args.pool, worklist=args.worklist)
        if args.json:
            print(json.dumps(rows, indent=2))
        elif rows:
            print(_table(rows))
        else:
            print(f"no open tasks for {s.identity.login}", file=sys.stderr)
        return 0
    if args.command == "claim":
        tx = s.claim(args.uid)
        if tx is None:
            print(f"worklist claim: you already hold task {args.uid}", file=sys.stderr)
            tx = s.claims.get(s.server, args.uid)
        print(tx if args.show_transaction_uid else f"claimed {args.uid}")
        return 0
    if args.command == "fetch":
        n, k = s.fetch(args.uid, args.dir)
        print(f"fetched {n} instances of {k} series into {args.dir}")
        return 0
    if args.command == "link":
        linked = s.link(args.uid, args.sop_uids, complete=args.complete,
                        dicomweb=args.dicomweb, comment=args.comment)
        print(f"linked {len(linked)} instance(s) to {args.uid}"
              + (" and completed it" if args.complete else ""))
        return 0
    if args.command == "submit":
        from .submission import submit
        return submit(s, args)
    raise AssertionError(args.command)
