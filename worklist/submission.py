"""``worklist submit``: a mask (or a review verdict) becomes stored, linked results and a
COMPLETED task (issue 6, point 4).

Steps, each named in any failure message:

1. the task: my claim, IN PROGRESS, its label set (Scheduled Processing Parameters) and
   its source series (Input Information Sequence);
2. the mask: ``seg.masks.load_mask`` against the label set (empty masks and labels
   outside the set are refused), then the source images - from a ``worklist fetch``
   directory or over WADO-RS - and ``check_geometry`` (shape must match the series);
3. build: SEG (``seg.build``) and SR (``sr.build``), with my provenance; encoded to
   Part 10 and read back to check they name the task, its source series and me;
4. pre-flight: a progress Update (PS3.4 CC.2.6: Procedure Step Progress Information)
   proves my Transaction UID still holds before anything is stored;
5. STOW-RS both to the Output Destination's STOW-RS URL (PS3.18 10.5);
6. Update: Output Information Sequence + Performed Procedure Step End DateTime, Performed
   Workitem Code and Performed Station Name (PS3.4 CC.2.5.1.1 Final State "P");
7. Change State COMPLETED (PS3.18 11.7); refused → the Update of step 6 is reverted.

Failures in 1-4 store nothing; a failure in 6 or 7 leaves the objects in the image store
unlinked, and the message says so with their UIDs.
"""

from __future__ import annotations

import argparse
import io
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.dataset import Dataset

from .dicomjson import first, values
from .performer import (
    SR_PREFIX,
    Identity,
    InputSeries,
    Performer,
    PerformerError,
    _require_in_progress,
    dicomweb_root,
    input_series,
    output_instances,
    stow_url,
)
from .upsclient import ClientError

__all__ = ["submit", "Timer", "TOOL"]


def _tool() -> Any:
    from importlib.metadata import PackageNotFoundError, version

    from .provenance import Tool
    try:
        v = version("worklist")
    except PackageNotFoundError:
        v = "0"
    return Tool(manufacturer="worklist", model_name="worklist performer CLI", software_version=v)


TOOL = _tool()


class Timer:
    """Wall time per step, printed on stderr with ``--timings``."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.steps: list[tuple[str, float, float]] = []
        self.t0 = time.perf_counter()

    @contextmanager
    def __call__(self, step: str) -> Iterator[None]:
        t = time.perf_counter()
        try:
            yield
        finally:
            self.steps.append((step, time.perf_counter() - t, _peak_rss_mib()))

    def report(self) -> None:
        if not self.enabled:
            return
        for step, seconds, rss in self.steps:
            print(f"timing: {step:<22} {seconds:7.3f} s  (peak RSS so far {rss:.0f} MiB)",
                  file=sys.stderr)
        print(f"timing: {'total':<22} {time.perf_counter() - self.t0:7.3f} s  (peak RSS "
              f"{_peak_rss_mib():.0f} MiB)", file=sys.stderr)


def _peak_rss_mib() -> float:
    """This process's peak resident set: VmHWM, which starts afresh at exec (ru_maxrss
    carries over the RSS of whatever process forked us)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _person(identity: Identity, workitem: dict[str, Any]) -> Any:
    from .provenance import Person, RoleValues
    # Institution Name is Type 1C beside the reader's login in the SEG (PS3.3 10.1); the
    # project (Worklist Label) stands in when neither the task nor --organization gives
    # one, as routing does for Human Performer's Organization.
    org = identity.organization or first(workitem, "WorklistLabel") or "worklist"
    return Person(identity.login, identity.name or identity.login, org,
                  RoleValues(identity.role))


def _part10(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


# -- source images --------------------------------------------------------------------------
def _source_series(workitem: dict[str, Any], wanted: str | None) -> InputSeries:
    series = input_series(workitem)
    if wanted:
        for s in series:
            if s.series_uid == wanted:
                return s
        raise PerformerError(f"series {wanted} is not among the task's inputs")
    images = [s for s in series if s.is_image]
    if len(images) != 1:
        raise PerformerError(f"the task has {len(images)} image series among its inputs; "
                             "name the one the mask belongs to with --series UID")
    return images[0]


def _load_images(s: Performer, series: InputSeries, inputs: Path | None) -> list[Dataset]:
    images: list[Dataset] = []
    if inputs is not None:
        folder = inputs / series.series_uid
        if not folder.is_dir():
            raise PerformerError(f"{folder} does not exist: run 'worklist fetch' into "
                                 f"{inputs} first, or leave out --inputs")
        for path in sorted(folder.glob("*.dcm")):
            if path.stem in series.instances:
                images.append(dcmread(path))
    else:
        for part in s._retrieve(series):
            ds = dcmread(io.BytesIO(part))
            ds.buffer = None  # pydicom keeps the source buffer for deferred reads: 2x memory
            if ds.SOPInstanceUID in series.instances:
                images.append(ds)
    series.check_complete({str(ds.SOPInstanceUID) for ds in images})
    return images


# -- checks before anything is stored ---------------------------------------------------------
def _check_result(data: bytes, what: str, *, task_uid: str, login: str,
                  source_series: str | None) -> Dataset:
    """Read an encoded result back and check what the server checks at completion:
    it names the task, its source series and me (annotation-model.md §4, 6)."""
    ds = dcmread(io.BytesIO(data), stop_before_pixels=True)
    steps = [first(item, "ReferencedSOPInstanceUID") for item in
             _json_items(ds, "ReferencedPerformedProcedureStepSequence")]
    if task_uid not in steps:
        raise PerformerError(f"{what} does not name the task in its Referenced Performed "
                             "Procedure Step Sequence: not stored")
    if source_series is not None:
        refs = {first(item, "SeriesInstanceUID") for key in (
            "ReferencedSeriesSequence", "CurrentRequestedProcedureEvidenceSequence")
            for item in _json_items(ds, key)}
        refs |= {first(s, "SeriesInstanceUID") for item in _json_items(
            ds, "CurrentRequestedProcedureEvidenceSequence")
            for s in values(item, "ReferencedSeriesSequence")}
        if source_series not in refs:
            raise PerformerError(f"{what} does not reference the source series "
                                 f"{source_series}: not stored")
    if login not in _logins(ds):
        raise PerformerError(f"{what} does not name {login} as its creator or observer: "
                             "not stored")
    return ds


def _logins(ds: Dataset) -> set[str]:
    """Logins a result names: SEG Content Creator's Identification Code Sequence
    (0070,0086) > Person Identification Code Sequence; SR TID 1003 Person Observer's
    Login Name (DCM 128774) anywhere in the content tree."""
    found = set()
    for creator in ds.get("ContentCreatorIdentificationCodeSequence") or []:
        for code in creator.get("PersonIdentificationCodeSequence") or []:
            found.add(str(code.get("CodeValue", "")))
    stack = list(ds.get("ContentSequence") or [])
    while stack:
        item = stack.pop()
        names = item.get("ConceptNameCodeSequence") or []
        if names and names[0].get("CodeValue") == "128774" and "TextValue" in item:
            found.add(str(item.TextValue))
        stack.extend(item.get("ContentSequence") or [])
    return found


def _json_items(ds: Dataset, keyword: str) -> list[dict[str, Any]]:
    return [item.to_json_dict() for item in ds.get(keyword) or []]


# -- the two flows ------------------------------------------------------------------------------
def _return_freed_memory() -> None:
    """Large blocks (a slice's pixels, a frame) straight from mmap, so memory freed
    between steps goes back to the system: glibc otherwise raises its mmap threshold
    after the first such free and keeps later blocks on a heap that only grows (about
    +150 MiB peak for a 300-slice CT).  No-op where mallopt is unavailable."""
    try:
        import ctypes
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 256 * 1024)  # M_MMAP_THRESHOLD; fixing it stops the dynamic rise
    except (OSError, AttributeError):
        pass


def submit(s: Performer, args: argparse.Namespace) -> int:
    _return_freed_memory()
    timer = Timer(args.timings)
    uid = args.uid
    try:
        with timer("task"):
            tx = s._transaction(uid)
            workitem = s._task(uid)
            _require_in_progress(workitem, uid)
            identity = s.identity.resolved(workitem)
        if args.verdict:
            results = _review(s, args, workitem, identity, timer)
        elif args.mask is None:
            print("worklist submit: give --mask FILE (or --verdict for a review task)",
                  file=sys.stderr)
            return 2
        else:
            results = _segmentation(s, args, workitem, identity, timer)
        _store_and_complete(s, uid, tx, workitem, results, args.comment, timer,
                            _processing_parameters(args))
    finally:
        timer.report()
    print(f"completed {uid}: " + ", ".join(f"{kind} {ds.SOPInstanceUID}"
                                           for kind, ds, _ in results))
    return 0


def _segmentation(s: Performer, args: argparse.Namespace, workitem: dict[str, Any],
                  identity: Identity, timer: Timer) -> list[tuple[str, Dataset, bytes]]:
    from seg.build import build_segmentation, present_labels
    from seg.masks import MaskError, check_geometry, is_nifti, load_mask, sort_images
    from sr.build import build_measurement_report
    from sr.measure import measure_segments

    from .provenance import Algorithm, Provenance

    uid = args.uid
    label_set = _label_set(workitem, args.label_set)
    series = _source_series(workitem, args.series)
    algorithm = None
    if args.ai_input:
        name, sep, version = args.ai_input.rpartition(":")
        if not sep or not name or not version:
            raise PerformerError(f"--ai-input {args.ai_input!r}: expected ALGO:VERSION")
        algorithm = Algorithm(name, version)
    try:
        nifti = is_nifti(args.mask)  # oriented against the series: read after it
        if not nifti:
            with timer("load mask"):
                mask = load_mask(args.mask, label_set)
        with timer("source series " + ("(files)" if args.inputs else "(WADO-RS)")):
            images = _load_images(s, series, args.inputs)
        with timer("check geometry"):
            try:
                images = sort_images(images)
            except ValueError as exc:
                raise PerformerError(f"source series {series.series_uid}: {exc}") from None
            if nifti:
                mask = load_mask(args.mask, label_set, images)
            check_geometry(mask, images, what=f"mask file {args.mask}")
            labels, _ = present_labels(mask)
    except MaskError as exc:
        raise PerformerError(str(exc)) from None
    provenance = Provenance(task_uid=uid, person=_person(identity, workitem), tool=TOOL,
                            algorithm=algorithm, session=args.session)
    with timer("measure"):
        stats = measure_segments(mask, images, [int(v) for v in labels])
        for ds in images:  # SEG and SR reference the images; only the statistics read pixels
            del ds.PixelData
    try:
        with timer("build SEG"):
            seg = build_segmentation(images, mask, label_set, provenance)
        with timer("build SR"):
            sr = build_measurement_report(seg, images, stats, provenance, label_set=label_set)
    except (TypeError, ValueError) as exc:
        raise PerformerError(f"building the results: {exc}") from None
    del mask, images
    with timer("encode and check"):
        out: list[tuple[str, Dataset, bytes]] = []
        for kind, ds in (("SEG", seg), ("SR", sr)):
            data = _part10(ds)
            _check_result(data, kind, task_uid=uid, login=identity.login,
                          source_series=series.series_uid)
            out.append((kind, ds, data))
    return out


def _label_set(workitem: dict[str, Any], named: str | None) -> Any:
    """The task's label set (Scheduled Processing Parameters, ``worklist.labelsets``); a
    task routed without one (the default rule) takes ``--label-set NAME`` from
    ``config/labelsets.toml``.  A name that contradicts the task's own set is refused."""
    from .labelsets import LabelSetError, from_workitem, load_label_sets

    try:
        carried = from_workitem(workitem)
        if carried is not None:
            if named and named != carried.name:
                raise PerformerError(f"the task's label set is '{carried.name}', not '{named}'")
            return carried
        if not named:
            raise PerformerError("the task carries no label set (Scheduled Processing "
                                 "Parameters): name one with --label-set NAME")
        sets = load_label_sets()
    except LabelSetError as exc:
        raise PerformerError(f"label set: {exc}") from None
    if named not in sets:
        raise PerformerError(f"no label set '{named}' (known: {', '.join(sorted(sets)) or 'none'})")
    return sets[named]


def _review(s: Performer, args: argparse.Namespace, workitem: dict[str, Any],
            identity: Identity, timer: Timer) -> list[tuple[str, Dataset, bytes]]:
    """A review task: the verdict on a reader's SR, as a new SR (annotation-model §4, 8)."""
    from sr.review import build_review_report

    from .provenance import Provenance

    with timer("fetch reviewed SR"):
        reviewed = _reviewed_report(s, workitem, args.reviewed)
    provenance = Provenance(task_uid=args.uid, person=_person(identity, workitem), tool=TOOL,
                            session=args.session)
    try:
        with timer("build review SR"):
            sr = build_review_report(reviewed, provenance, args.verdict.replace("_", " "),
                                     comment=args.comment)
    except (TypeError, ValueError) as exc:
        raise PerformerError(f"building the review report: {exc}") from None
    with timer("encode and check"):
        data = _part10(sr)
        _check_result(data, "review SR", task_uid=args.uid, login=identity.login,
                      source_series=None)
    return [("SR", sr, data)]


def _reviewed_report(s: Performer, workitem: dict[str, Any], wanted: str | None) -> Dataset:
    candidates = [(item, sop) for item in input_series(workitem)
                  for sop, cls in item.instances.items()
                  if cls.startswith(SR_PREFIX) and (wanted is None or sop == wanted)]
    if wanted is None and len(candidates) != 1:
        raise PerformerError(f"the task has {len(candidates)} SR inputs; name the reviewed one "
                             "with --reviewed SR_UID")
    root = dicomweb_root(workitem)
    if candidates:
        item, sop = candidates[0]
        study, series = item.study_uid, item.series_uid
    else:
        if not root:
            raise PerformerError("the task names no DICOMweb service to find the reviewed SR")
        try:
            hits = s.web.search_instances(root, {"SOPInstanceUID": str(wanted)})
        except ClientError as exc:
            raise PerformerError(f"looking up {wanted}: {exc.message}") from None
        if not hits:
            raise PerformerError(f"the reviewed SR {wanted} is not in the image store")
        sop, study, series = (str(wanted), first(hits[0], "StudyInstanceUID"),
                              first(hits[0], "SeriesInstanceUID"))
    base = root or ""
    url = f"{base}/studies/{study}/series/{series}/instances/{sop}"
    try:
        parts = list(s.web.retrieve(url))
    except ClientError as exc:
        raise PerformerError(f"retrieving the reviewed SR {sop}: {exc.message}") from None
    if not parts:
        raise PerformerError(f"the reviewed SR {sop} is not in the image store")
    return dcmread(io.BytesIO(parts[0]))


# -- storing ----------------------------------------------------------------------------------
def _processing_parameters(args: argparse.Namespace) -> list[Dataset]:
    """Performed Processing Parameters Sequence (0074,1212) items (PS3.4 Table CC.2.5-3;
    Content Item Macro, PS3.3 Table 10-2): the tool and its version, the algorithm whose
    pre-segmentation the reader edited, the reading session.  The Standard has no
    concept codes for these: our private scheme 99WORKLIST."""
    def text(code: str, meaning: str, value: str) -> Dataset:
        item = Dataset()
        item.ValueType = "TEXT"
        concept = Dataset()
        concept.CodeValue, concept.CodingSchemeDesignator, concept.CodeMeaning = (
            code, "99WORKLIST", meaning)
        item.ConceptNameCodeSequence = [concept]
        item.TextValue = value
        return item

    items = [text("TOOL", "Annotation tool",
                  f"{TOOL.manufacturer} {TOOL.model_name} {TOOL.software_version}")]
    if getattr(args, "ai_input", None):
        items.append(text("AIINPUT", "Algorithm pre-segmentation edited", args.ai_input))
    if getattr(args, "session", None):
        items.append(text("SESSION", "Reading session", args.session))
    return items


def _store_and_complete(s: Performer, uid: str, tx: str, workitem: dict[str, Any],
                        results: list[tuple[str, Dataset, bytes]], comment: str | None,
                        timer: Timer, parameters: list[Dataset] | None = None) -> None:
    url = stow_url(workitem)
    with timer("pre-flight update"):
        progress = Dataset()
        old = values(workitem, "ProcedureStepProgressInformationSequence")
        if old:
            progress = Dataset.from_json(old[0])
        progress.ProcedureStepProgress = "90"
        progress.ProcedureStepProgressDescription = "Storing results"
        s._update(uid, tx, {"ProcedureStepProgressInformationSequence": [progress]},
                  step="checking the claim before storing (nothing stored)")
    with timer("STOW-RS"):
        try:
            s.web.store(url, [data for _, _, data in results])
        except ClientError as exc:
            raise PerformerError(f"storing the results failed, nothing linked to the task: "
                                 f"{exc.message}") from None
    uids = " ".join(str(ds.SOPInstanceUID) for _, ds, _ in results)
    note = (f" ({', '.join(f'{k} {ds.SOPInstanceUID}' for k, ds, _ in results)} are in the "
            f"image store but not linked to the task; resubmit, or link them with "
            f"'worklist link {uid} {uids} --complete')")
    # Results linked before (worklist link, without --complete) stay linked beside these.
    instances = output_instances(workitem) + [
        (str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPClassUID),
         str(ds.SOPInstanceUID)) for _, ds, _ in results]
    with timer("update and complete"):
        s.finish(uid, tx, workitem, instances, complete=True, comment=comment,
                 stored_note=note, parameters=parameters)
