"""The performer's flow (issue 6, point 4): a command-line client that talks to the
worklist only over UPS-RS and to the image store only over DICOMweb, as a viewer
integration would.

    worklist tasks [--pool] [--worklist LABEL] [--json]
    worklist claim UID [--show-transaction-uid]
    worklist fetch UID DIR
    worklist submit UID --mask FILE [--inputs DIR] [--ai-input ALGO:VERSION] ...
    worklist submit UID --verdict ACCEPTED|REJECTED [--reviewed SR_UID] [--comment TEXT]
    worklist link UID SOP_UID... [--complete]

This module holds the session (:class:`Performer`: tasks, claim, fetch, link and the
final link-and-complete step); ``worklist.submission`` the submit pipeline;
``worklist.performer_cli`` the options and exit codes.

The Transaction UID of a claim is the performer's lock (PS3.4 CC.1.1, CC.2.6.3): it is
kept in ``$XDG_STATE_HOME/worklist/claims.json`` (mode 0600) and never printed unless
asked.  Exit status: 0 done, 1 refused or failed (one line on stderr says why and at
which step), 2 usage.

Order of a submission (``worklist.submission``): everything is built and checked before
anything is stored; then STOW-RS, then one Update that links the stored instances, then
COMPLETED.  If the server refuses COMPLETED, the Update is reverted, so the task is
exactly as before the submission (IN PROGRESS, nothing linked) and the message names the
instances left in the image store and the ``worklist link`` command that links them.
"""

from __future__ import annotations

import datetime as _dt
import io
import json
import os
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from .dicomjson import dataset_to_json_dict, first, tag_key, values
from .provenance import LOGIN_SCHEME
from .sample import instances_item
from .upsclient import ClientError, DICOMwebClient, UPSClient

__all__ = ["PerformerError", "Identity", "Claims", "Performer", "InputSeries", "now_dt",
           "performer_item", "output_information", "output_instances", "input_series",
           "dicomweb_root", "stow_url", "default_state_dir", "labels_json", "TOOL_CODE"]
SEG_CLASSES = ("1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.66.7")
"""Segmentation Storage and Label Map Segmentation Storage."""
SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
TOOL_CODE = ("WORKLIST-CLI", "99WORKLIST", "worklist performer command line")
"""Performed Station Name Code Sequence (0040,4028) of what this client completes."""
_PERFORMED = "UnifiedProcedureStepPerformedProcedureSequence"
_PRIORITY_ORDER = {"HIGH": 0, "MEDIUM": 1, "LOW": 2}


class PerformerError(Exception):
    """A refusal or failure, said in one line a person can act on."""


def now_dt() -> str:
    """Now as a DICOM DT with its UTC offset (PS3.5 6.2)."""
    t = _dt.datetime.now(_dt.timezone.utc).astimezone()
    return t.strftime("%Y%m%d%H%M%S.%f") + t.strftime("%z")


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


# -- who I am -----------------------------------------------------------------------------
@dataclass(frozen=True)
class Identity:
    login: str
    name: str | None = None
    organization: str | None = None
    role: str = "Reader"

    def resolved(self, workitem: dict[str, Any]) -> Identity:
        """Name and organization default to those the workitem schedules for my login
        (Scheduled Human Performers Sequence), else the login itself."""
        name, org = self.name, self.organization
        for item in values(workitem, "ScheduledHumanPerformersSequence"):
            codes = values(item, "HumanPerformerCodeSequence")
            if codes and first(codes[0], "CodeValue") == self.login:
                pn = first(item, "HumanPerformerName")
                name = name or (pn.get("Alphabetic") if isinstance(pn, dict) else pn)
                org = org if org is not None else first(item, "HumanPerformerOrganization")
        return Identity(self.login, name or self.login, org or "", self.role)


def performer_item(identity: Identity) -> Dataset:
    """An Actual Human Performers Sequence (0040,4035) item: code = login (scheme ``L``,
    meaning = name), as the Scheduled Human Performers items routing writes."""
    item = Dataset()
    item.HumanPerformerCodeSequence = [_code(identity.login, LOGIN_SCHEME, (identity.name or
                                                                   identity.login)[:64])]
    item.HumanPerformerName = identity.name or identity.login
    if identity.organization:
        item.HumanPerformerOrganization = identity.organization
    return item


# -- the claims I hold --------------------------------------------------------------------
class Claims:
    """Transaction UIDs of my claims, per server, in ``DIR/claims.json`` (0600)."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / "claims.json"

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text())
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise PerformerError(f"{self.path} is not valid JSON ({exc}); fix or remove it")
        return data if isinstance(data, dict) else {}

    def _write(self, data: dict[str, dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".claims-")
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1)
        os.chmod(tmp, 0o600)
        os.replace(tmp, self.path)

    @staticmethod
    def _key(server: str, uid: str) -> str:
        return f"{server} {uid}"

    def get(self, server: str, uid: str) -> str | None:
        entry = self._read().get(self._key(server, uid))
        return entry.get("transaction_uid") if entry else None

    def put(self, server: str, uid: str, transaction_uid: str, login: str) -> None:
        data = self._read()
        data[self._key(server, uid)] = {"transaction_uid": transaction_uid, "login": login,
                                        "claimed": now_dt()}
        self._write(data)

    def drop(self, server: str, uid: str) -> None:
        data = self._read()
        if data.pop(self._key(server, uid), None) is not None:
            self._write(data)

    def uids(self, server: str) -> list[str]:
        prefix = f"{server} "
        return [k[len(prefix):] for k in self._read() if k.startswith(prefix)]


def default_state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "worklist"


# -- the Referenced Instances and Access Macro ----------------------------------------------
def dicomweb_root(workitem: dict[str, Any]) -> str | None:
    """The image store's DICOMweb root, from the Output Destination's STOW-RS URL
    (``{root}/studies``, PS3.18 10.5.1), else from an input's WADO-RS Retrieve URL."""
    for dest in values(workitem, "OutputDestinationSequence"):
        for stow in values(dest, "STOWRSStorageSequence"):
            url = first(stow, "StorageURL")
            if url and "/studies" in url:
                return url[:url.rindex("/studies")]
    for item in values(workitem, "InputInformationSequence"):
        for wado in values(item, "WADORSRetrievalSequence"):
            url = first(wado, "RetrieveURL")
            if url and "/studies" in url:
                return url[:url.rindex("/studies")]
    return None


def stow_url(workitem: dict[str, Any]) -> str:
    for dest in values(workitem, "OutputDestinationSequence"):
        for stow in values(dest, "STOWRSStorageSequence"):
            if first(stow, "StorageURL"):
                return str(first(stow, "StorageURL"))
    raise PerformerError("the task's Output Destination Sequence names no STOW-RS Storage URL: "
                         "there is nowhere to store results")


def destination_aet(workitem: dict[str, Any]) -> str | None:
    for dest in values(workitem, "OutputDestinationSequence"):
        for dicom in values(dest, "DICOMStorageSequence"):
            if first(dicom, "DestinationAE"):
                return str(first(dicom, "DestinationAE"))
    return None


def output_information(instances: list[tuple[str, str, str, str]], *, root: str,
                       aet: str | None) -> list[Dataset]:
    """Output Information Sequence (0040,4033) items, one per series: PS3.3 Table 10-3b
    Referenced Instances and Access Macro (Type of Instances DICOM, study, series,
    Referenced SOP Sequence) with a DICOM Retrieval item (the Destination AE) and a
    WADO-RS Retrieval item.  ``instances``: (study, series, SOP class, SOP instance)."""
    by_series: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for study, series, cls, uid in instances:
        by_series.setdefault((study, series), []).append((cls, uid))
    return [instances_item(study, series, refs, aet=aet, dicomweb_root=root)
            for (study, series), refs in by_series.items()]


def output_instances(workitem: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(study, series, SOP class, SOP instance) already in the Output Information."""
    out = []
    for performed in values(workitem, _PERFORMED):
        for item in values(performed, "OutputInformationSequence"):
            for ref in values(item, "ReferencedSOPSequence"):
                out.append((first(item, "StudyInstanceUID"), first(item, "SeriesInstanceUID"),
                            first(ref, "ReferencedSOPClassUID"),
                            first(ref, "ReferencedSOPInstanceUID")))
    return out


# -- the commands -------------------------------------------------------------------------
@dataclass
class Performer:
    """One user's session against one worklist server."""

    ups: UPSClient
    web: DICOMwebClient
    identity: Identity
    claims: Claims
    server: str

    # -- tasks -----------------------------------------------------------------------------
    def tasks(self, *, pool: bool = False, worklist: str | None = None) -> list[dict[str, Any]]:
        """My open tasks: SCHEDULED or IN PROGRESS with my login as a Scheduled Human
        Performer (PS3.4 C.2.2.2.6 sequence matching), the IN PROGRESS ones I claimed
        from the pool, and with ``pool`` the READY unassigned ones."""
        found: dict[str, dict[str, Any]] = {}
        base = {"WorklistLabel": worklist} if worklist else {}
        key = "ScheduledHumanPerformersSequence.HumanPerformerCodeSequence.CodeValue"
        for state in ("SCHEDULED", "IN PROGRESS"):
            for ds in self.ups.search(dict(base, ProcedureStepState=state,
                                           **{key: self.identity.login})):
                found[first(ds, "SOPInstanceUID")] = ds
        for uid in self.claims.uids(self.server):
            if uid in found:
                continue
            try:
                ds = self.ups.retrieve(uid)
            except ClientError as exc:
                if exc.status == 404:
                    self.claims.drop(self.server, uid)
                    continue
                raise
            state = first(ds, "ProcedureStepState")
            if state == "IN PROGRESS" and (not worklist or first(ds, "WorklistLabel") == worklist):
                found[uid] = ds
            elif state in ("COMPLETED", "CANCELED"):
                self.claims.drop(self.server, uid)
        rows = [self._row(ds, mine=True) for ds in found.values()]
        if pool:
            for ds in self.ups.search(dict(base, ProcedureStepState="SCHEDULED",
                                           InputReadinessState="READY")):
                uid = first(ds, "SOPInstanceUID")
                if uid not in found and not values(ds, "ScheduledHumanPerformersSequence"):
                    rows.append(self._row(ds, mine=False))
        rows.sort(key=lambda r: (r["state"] != "IN PROGRESS", not r["mine"],
                                 _PRIORITY_ORDER.get(r["priority"], 3), r["due"] or "~",
                                 r["start"] or "", r["uid"]))
        return rows

    def _row(self, ds: dict[str, Any], *, mine: bool) -> dict[str, Any]:
        uid = first(ds, "SOPInstanceUID")
        return {"uid": uid, "state": first(ds, "ProcedureStepState"),
                "readiness": first(ds, "InputReadinessState"),
                "priority": first(ds, "ScheduledProcedureStepPriority"),
                "label": first(ds, "ProcedureStepLabel") or "",
                "worklist": first(ds, "WorklistLabel") or "",
                "patient_id": first(ds, "PatientID") or "",
                "due": first(ds, "ExpectedCompletionDateTime") or "",
                "start": first(ds, "ScheduledProcedureStepStartDateTime") or "",
                "mine": mine, "claimed": self.claims.get(self.server, uid) is not None}

    # -- claim -----------------------------------------------------------------------------
    def claim(self, uid: str) -> str | None:
        """PS3.18 11.7 / PS3.4 CC.2.1.3: IN PROGRESS with a new Transaction UID, then
        Actual Human Performers and Performed Procedure Step Start DateTime at once, so
        the time on task is counted from the claim.  Returns the Transaction UID, or
        None when I already hold this claim."""
        from pydicom.uid import generate_uid

        workitem = self._task(uid)
        login = self.identity.login
        scheduled = _logins(workitem, "ScheduledHumanPerformersSequence")
        if scheduled and login not in scheduled:
            # UPS lets anyone claim (PS3.4 CC.2.1.3); a client keeps to its own worklist.
            raise PerformerError(f"task {uid} is scheduled for {', '.join(scheduled)}, not for "
                                 f"{login}")
        state = first(workitem, "ProcedureStepState")
        if state == "IN PROGRESS":
            actual = _logins(first(workitem, _PERFORMED) or {}, "ActualHumanPerformersSequence")
            if login in actual and self.claims.get(self.server, uid):
                return None
            who = f" by {', '.join(actual)}" if actual else ""
            raise PerformerError(f"task {uid} is already claimed (IN PROGRESS){who}")
        if state != "SCHEDULED":
            raise PerformerError(f"task {uid} is {state}: there is nothing to claim")
        transaction_uid = generate_uid(prefix=None)  # 2.25 + a UUID (PS3.5 B.2)
        try:
            self.ups.change_state(uid, "IN PROGRESS", transaction_uid)
        except ClientError as exc:
            if exc.status == 409 and exc.dimse_status == "0xC302":
                raise PerformerError(f"task {uid} is already claimed (IN PROGRESS): another "
                                     "performer was quicker") from None
            raise PerformerError(f"claim refused ({exc.status}): {exc.detail}"
                                 if exc.status else f"claim failed: {exc.message}") from None
        self.claims.put(self.server, uid, transaction_uid, self.identity.login)
        workitem = self.ups.retrieve(uid)
        identity = self.identity.resolved(workitem)
        performed = _performed(workitem)
        performed.ActualHumanPerformersSequence = [performer_item(identity)]
        performed.PerformedProcedureStepStartDateTime = now_dt()
        if "OutputInformationSequence" not in performed:
            # N-SET Type 2 (PS3.4 Table CC.2.5-3): present, empty until results exist
            performed.OutputInformationSequence = []
        self._update(uid, transaction_uid, {_PERFORMED: [performed]}, step="recording the "
                     "performer and start time after the claim")
        return transaction_uid

    def _task(self, uid: str) -> dict[str, Any]:
        try:
            return self.ups.retrieve(uid)
        except ClientError as exc:
            if exc.status == 404:
                raise PerformerError(f"no task {uid} on {self.server}") from None
            raise

    def _transaction(self, uid: str) -> str:
        tx = self.claims.get(self.server, uid)
        if not tx:
            raise PerformerError(f"you hold no claim on task {uid} here: run "
                                 f"'worklist claim {uid}' first")
        return tx

    def _update(self, uid: str, tx: str, attrs: dict[str, Any], *, step: str) -> None:
        ds = Dataset()
        for keyword, value in attrs.items():
            setattr(ds, keyword, value)
        try:
            self.ups.update(uid, tx, dataset_to_json_dict(ds))
        except ClientError as exc:
            raise PerformerError(f"{step}: refused ({exc.status}): {exc.detail}"
                                 if exc.status else f"{step}: {exc.message}") from None

    # -- fetch -----------------------------------------------------------------------------
    def fetch(self, uid: str, directory: Path) -> tuple[int, int]:
        """Every input series over WADO-RS into ``DIR/<series>/<sop>.dcm``, plus
        ``DIR/labels.json`` (the picklist) and ``DIR/task.json`` (the workitem)."""
        from pydicom import dcmread

        from .labelsets import from_workitem

        workitem = self._task(uid)
        directory.mkdir(parents=True, exist_ok=True)
        count = 0
        items = input_series(workitem)
        for item in items:
            target = directory / item.series_uid
            target.mkdir(exist_ok=True)
            got: set[str] = set()
            for part in self._retrieve(item):
                sop = str(dcmread(io.BytesIO(part), stop_before_pixels=True,
                                  specific_tags=["SOPInstanceUID"]).SOPInstanceUID)
                (target / f"{sop}.dcm").write_bytes(part)
                got.add(sop)
            item.check_complete(got)
            count += len(got)
        label_set = from_workitem(workitem)
        (directory / "labels.json").write_text(json.dumps(
            labels_json(label_set) if label_set else None, indent=2) + "\n")
        (directory / "task.json").write_text(json.dumps(workitem, indent=1) + "\n")
        return count, len(items)

    def _retrieve(self, item: InputSeries) -> Iterator[bytes]:
        if not item.url:
            raise PerformerError(f"input series {item.series_uid} offers no WADO-RS Retrieve "
                                 "URL (WADO-RS Retrieval Sequence)")
        try:
            yield from self.web.retrieve(item.url)
        except ClientError as exc:
            if exc.status == 404:
                raise PerformerError(f"input series {item.series_uid} is missing from the image "
                                     f"store (WADO-RS {item.url}: 404)") from None
            raise PerformerError(f"fetching input series {item.series_uid}: "
                                 f"{exc.message}") from None

    # -- link ------------------------------------------------------------------------------
    def link(self, uid: str, sop_uids: list[str], *, complete: bool = False,
             dicomweb: str | None = None, comment: str | None = None) -> list[str]:
        """Results another tool stored: found over QIDO-RS, added to the Output
        Information Sequence by an Update (PS3.4 CC.2.6), and with ``complete`` the task
        COMPLETED (the server's completion checks apply; if refused, the Update is
        reverted)."""
        tx = self._transaction(uid)
        workitem = self._task(uid)
        _require_in_progress(workitem, uid)
        root = dicomweb or dicomweb_root(workitem)
        if not root:
            raise PerformerError("the task names no DICOMweb service (Output Destination or "
                                 "input WADO-RS URL): give --dicomweb URL")
        found = []
        for sop in sop_uids:
            try:
                hits = self.web.search_instances(root, {
                    "SOPInstanceUID": sop, "includefield": "00080016,0020000D,0020000E"})
            except ClientError as exc:
                raise PerformerError(f"looking up {sop}: {exc.message}") from None
            if not hits:
                raise PerformerError(f"instance {sop} is not in the image store ({root})")
            hit = hits[0]
            cls = first(hit, "SOPClassUID") or ""
            if cls not in SEG_CLASSES and not cls.startswith(SR_PREFIX):
                raise PerformerError(f"instance {sop} is not a Segmentation or Structured "
                                     f"Report (SOP Class UID {cls}): not linked")
            found.append((first(hit, "StudyInstanceUID"), first(hit, "SeriesInstanceUID"),
                          cls, sop))
        known = output_instances(workitem)
        merged = known + [f for f in found if f[3] not in {k[3] for k in known}]
        self.finish(uid, tx, workitem, merged, complete=complete, comment=comment)
        return [f[3] for f in found]

    def finish(self, uid: str, tx: str, workitem: dict[str, Any],
               instances: list[tuple[str, str, str, str]], *, complete: bool,
               comment: str | None = None, stored_note: str = "",
               parameters: list[Dataset] | None = None) -> None:
        """Link ``instances`` (already in the image store) as the task's outputs, and
        with ``complete`` change the state to COMPLETED; on a refused completion revert
        the Update so the workitem is as it was."""
        identity = self.identity.resolved(workitem)
        performed = _performed(workitem)
        if not values(dataset_to_json_dict(performed), "ActualHumanPerformersSequence"):
            performed.ActualHumanPerformersSequence = [performer_item(identity)]
        if "PerformedProcedureStepStartDateTime" not in performed:
            performed.PerformedProcedureStepStartDateTime = now_dt()
        if comment:
            performed.CommentsOnThePerformedProcedureStep = comment
        root = dicomweb_root(workitem) or ""
        performed.OutputInformationSequence = output_information(
            instances, root=root, aet=destination_aet(workitem))
        if complete:
            # PS3.4 CC.2.5.1.1, Final State "P": what was done, where, when it ended.
            scheduled = Dataset.from_json(workitem).get("ScheduledWorkitemCodeSequence") or []
            performed.PerformedWorkitemCodeSequence = (
                [scheduled[0]] if scheduled else [_code("110001", "DCM", "Image Processing")])
            performed.PerformedStationNameCodeSequence = [_code(*TOOL_CODE)]
            performed.PerformedProcedureStepEndDateTime = now_dt()
            if parameters:  # how it was done: tool version, AI input, session
                performed.PerformedProcessingParametersSequence = parameters
        self._update(uid, tx, {_PERFORMED: [performed]},
                     step=f"linking the outputs to the task{stored_note}")
        if not complete:
            return
        try:
            warning = self.ups.change_state(uid, "COMPLETED", tx)
        except ClientError as exc:
            before = workitem.get(tag_key(_PERFORMED)) or {"vr": "SQ", "Value": []}
            try:
                self.ups.update(uid, tx, {tag_key(_PERFORMED): before})
                undone = "the update was reverted; the task is IN PROGRESS as before"
            except ClientError as again:
                undone = f"reverting the update failed too ({again.message})"
            raise PerformerError(f"completion refused ({exc.status}): {exc.detail}; {undone}"
                                 f"{stored_note}") from None
        if warning:
            print(f"worklist: {warning}", file=sys.stderr)
        self.claims.drop(self.server, uid)


def _performed(workitem: dict[str, Any]) -> Dataset:
    """A copy of the workitem's Performed Procedure item (or a new one): sequences are
    replaced whole by an Update (PS3.4 CC.2.6.2), so we send back what we keep."""
    items = values(workitem, _PERFORMED)
    return Dataset.from_json(items[0]) if items else Dataset()


def _logins(ds: dict[str, Any], keyword: str) -> list[str]:
    """Human Performer Code Sequence values of a performers sequence's items."""
    return [str(first(code, "CodeValue")) for item in values(ds, keyword)
            for code in values(item, "HumanPerformerCodeSequence") if first(code, "CodeValue")]


def _require_in_progress(workitem: dict[str, Any], uid: str) -> None:
    state = first(workitem, "ProcedureStepState")
    if state != "IN PROGRESS":
        raise PerformerError(f"task {uid} is {state}, not IN PROGRESS")


# -- inputs -------------------------------------------------------------------------------
@dataclass
class InputSeries:
    study_uid: str
    series_uid: str
    url: str | None
    instances: dict[str, str]
    """SOP Instance UID → SOP Class UID, as the Input Information Sequence lists them."""

    @property
    def is_image(self) -> bool:
        return not any(c in SEG_CLASSES or c.startswith(SR_PREFIX)
                       for c in self.instances.values())

    def check_complete(self, got: set[str]) -> None:
        missing = set(self.instances) - got
        if missing:
            raise PerformerError(f"input series {self.series_uid}: {len(missing)} of "
                                 f"{len(self.instances)} instances are missing from the image "
                                 f"store (e.g. {sorted(missing)[0]})")


def input_series(workitem: dict[str, Any]) -> list[InputSeries]:
    """The Input Information Sequence (0040,4021) items of Type of Instances DICOM."""
    out = []
    for item in values(workitem, "InputInformationSequence"):
        if (first(item, "TypeOfInstances") or "DICOM") != "DICOM":
            continue
        wado = values(item, "WADORSRetrievalSequence")
        out.append(InputSeries(
            first(item, "StudyInstanceUID"), first(item, "SeriesInstanceUID"),
            first(wado[0], "RetrieveURL") if wado else None,
            {first(r, "ReferencedSOPInstanceUID"): first(r, "ReferencedSOPClassUID") or ""
             for r in values(item, "ReferencedSOPSequence")}))
    if not out:
        raise PerformerError("the task's Input Information Sequence lists no DICOM inputs")
    return out


def labels_json(label_set: Any) -> dict[str, Any]:
    """The picklist for a viewer: each label's mask value, name, codes and colour."""
    def code(c: Any) -> list[str] | None:
        return [c.value, c.scheme, c.meaning] if c is not None else None
    return {"name": label_set.name, "labels": [
        {"value": lb.value, "name": lb.name, "category": code(lb.category),
         "type": code(lb.type), "region": code(lb.region), "color": lb.color}
        for lb in label_set.labels]}
