"""SEG build benchmark (issue 6, point 2, "Speed"): our builder against highdicom alone.

    python bench/bench_seg.py [--frames 300] [--rows 512] [--labels 5] [--repeats 7]
                              [--dense]

1. makes a synthetic CT series of ``--frames`` slices of ``--rows`` × ``--rows``
   (``seg.synthetic.ct_volume``) and a label map of ``--labels`` spheres
   (``sphere_labels``: a few slices labelled, as in a lesion task) or, with ``--dense``,
   one bar per label through every slice (as in whole-organ segmentation), for the
   ``abdomen-organs`` label set;
2. times ``seg.build_segmentation`` (checks, sorting the series, finding the labels
   present, provenance, then highdicom) against the baseline: ``highdicom.seg.Segmentation``
   called directly on the same, already sorted images and the same label map, with the
   same segment descriptions, creator and equipment items built in the call (BINARY,
   omit_empty_frames, Explicit VR Little Endian).  One warm-up each, then ``--repeats``
   alternating runs in this process; prints best and median wall and CPU
   (``time.process_time``) time of each, and the median of the pairs' ratios (target
   ≤ 1.2× on CPU time, which other processes on a shared machine disturb far less than
   wall time; wall ratios are printed beside it);
3. peak memory of one build, measured in a child process per builder: the child makes
   the inputs, resets its peak-RSS counter (``/proc/self/clear_refs`` = 5), builds, and
   reads ``VmHWM`` from ``/proc/self/status`` — the process's peak resident set during
   the build, inputs and interpreter included (target < 1.5 GB); the growth over the RSS
   before the build is printed beside it.  Where ``clear_refs`` is unavailable the child's
   ``ru_maxrss`` (whole life, input generation included) is printed instead;
4. the encoded size of the SEG (Part 10 file, in memory) and the time to encode it.

Nothing here is asserted by the test suite.
"""

from __future__ import annotations

import argparse
import gc
import io
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import highdicom as hd  # noqa: E402
import numpy as np  # noqa: E402
from pydicom.uid import generate_uid  # noqa: E402

from seg.build import (CONTENT_LABEL, _content_creator, build_segmentation,  # noqa: E402
                       contributing_equipment, present_labels, segment_descriptions)
from seg.masks import sort_images  # noqa: E402
from seg.synthetic import ct_volume, sphere_labels  # noqa: E402
from worklist.labelsets import load_label_sets  # noqa: E402
from worklist.provenance import Person, Provenance  # noqa: E402

PROVENANCE = Provenance(generate_uid(), Person("reader1", "Reader^One", "Reading Lab"))


def inputs(frames: int, rows: int, n_labels: int, dense: bool = False
           ) -> tuple[list, Any, Any]:
    images = ct_volume(rows, rows, frames)
    if dense:
        # every label in every slice: one bar per label across the body
        label_map = np.zeros((frames, rows, rows), dtype=np.uint8)
        step = rows // (n_labels + 1)
        for k in range(n_labels):
            label_map[:, step * k + step // 2: step * (k + 1), rows // 5: rows * 4 // 5] = k + 1
    else:
        label_map = sphere_labels((frames, rows, rows), n_labels)
    label_set = load_label_sets()["abdomen-organs"]
    return images, label_map, label_set


def ours(images: list, label_map: Any, label_set: Any) -> hd.seg.Segmentation:
    return build_segmentation(images, label_map, label_set, PROVENANCE)


def baseline_call(images: list, label_map: Any, label_set: Any):  # noqa: ANN201
    """highdicom alone: what a caller of ``highdicom.seg.Segmentation`` does with the same
    arguments — build the segment descriptions, creator and equipment items, then call
    it.  What only our builder does (checking the inputs, sorting the series, finding the
    labels present) is done beforehand, outside the timing."""
    values, _ = present_labels(label_map)
    ordered = sort_images(images)
    created = PROVENANCE.created
    tool = PROVENANCE.tool

    def call() -> hd.seg.Segmentation:
        name, identification = _content_creator(PROVENANCE)
        return hd.seg.Segmentation(
            source_images=ordered, pixel_array=label_map,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=segment_descriptions(label_set, values, PROVENANCE),
            series_instance_uid=generate_uid(), series_number=1001,
            sop_instance_uid=generate_uid(), instance_number=1,
            manufacturer=tool.manufacturer, manufacturer_model_name=tool.model_name,
            software_versions=tool.software_version, device_serial_number=tool.serial_number,
            content_label=CONTENT_LABEL, content_description=f"Label set {label_set.name}",
            content_creator_name=name, content_creator_identification=identification,
            contributing_equipment=contributing_equipment(PROVENANCE), omit_empty_frames=True,
            series_description="Segmentation by reader1", content_date=created.date(),
            content_time=created.time().replace(tzinfo=None), series_date=created.date(),
            series_time=created.time().replace(tzinfo=None))
    return call


def _status() -> dict[str, int]:
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS"):
            out[key] = int(value.split()[0]) * 1024
    return out


def memory_child(which: str, frames: int, rows: int, n_labels: int, dense: bool) -> None:
    images, label_map, label_set = inputs(frames, rows, n_labels, dense)
    build = (lambda: ours(images, label_map, label_set)) if which == "ours" else \
        baseline_call(images, label_map, label_set)
    warm = inputs(2, 16, 1)  # highdicom's lazily loaded tables are not the build's cost
    (ours(*warm) if which == "ours" else baseline_call(*warm)())
    del warm
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        before = _status()["VmRSS"]
        seg = build()
        result = {"method": "VmHWM", "peak": _status()["VmHWM"], "before": before}
    except OSError:
        seg = build()
        result = {"method": "ru_maxrss",
                  "peak": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                  "before": 0}
    result["frames"] = int(seg.NumberOfFrames)
    print(json.dumps(result))


def measure_memory(which: str, args: argparse.Namespace) -> dict[str, Any]:
    out = subprocess.run([sys.executable, __file__, "--memory-child", which,
                          "--frames", str(args.frames), "--rows", str(args.rows),
                          "--labels", str(args.labels)] + (["--dense"] if args.dense else []),
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def timed(fn) -> tuple[float, float]:  # noqa: ANN001
    """(wall seconds, this process's CPU seconds) of one call."""
    gc.collect()
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - w0, time.process_time() - c0


def summary(name: str, runs: list[tuple[float, float]]) -> None:
    wall, cpu = [r[0] for r in runs], [r[1] for r in runs]
    print(f"{name:<28} wall best {min(wall) * 1000:7.1f} ms, median "
          f"{statistics.median(wall) * 1000:7.1f} ms;  CPU best {min(cpu) * 1000:7.1f} ms, "
          f"median {statistics.median(cpu) * 1000:7.1f} ms")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--rows", type=int, default=512, help="rows = columns")
    ap.add_argument("--labels", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--dense", action="store_true",
                    help="every label in every slice (default: spheres, a few slices)")
    ap.add_argument("--memory-child", choices=["ours", "baseline"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.frames, args.rows, args.labels, args.dense)
        return 0

    t0 = time.perf_counter()
    images, label_map, label_set = inputs(args.frames, args.rows, args.labels, args.dense)
    shape = "bar" if args.dense else "sphere"
    print(f"inputs: CT {args.frames} × {args.rows} × {args.rows}, {args.labels} {shape} labels "
          f"({int((label_map > 0).reshape(args.frames, -1).any(axis=1).sum())} frames "
          f"labelled), made in {time.perf_counter() - t0:.1f} s")
    baseline = baseline_call(images, label_map, label_set)
    ours_runs: list[tuple[float, float]] = []
    base_runs: list[tuple[float, float]] = []
    seg = ours(images, label_map, label_set)  # warm-up (imports, highdicom's lazy tables)
    baseline()
    for _ in range(args.repeats):
        ours_runs.append(timed(lambda: ours(images, label_map, label_set)))
        base_runs.append(timed(baseline))
    summary("build_segmentation", ours_runs)
    summary("highdicom alone (baseline)", base_runs)
    # Runs alternate, so each pair saw about the same machine: the median of the pairs'
    # ratios is robust to other processes' load drifting during the benchmark.
    wall = statistics.median(o[0] / b[0] for o, b in zip(ours_runs, base_runs, strict=True))
    cpu = statistics.median(o[1] / b[1] for o, b in zip(ours_runs, base_runs, strict=True))
    best = min(o[0] for o in ours_runs) / min(b[0] for b in base_runs)
    print(f"ratio ours/baseline ({args.repeats} alternating pairs): median CPU {cpu:.2f}×, "
          f"median wall {wall:.2f}×, best wall / best wall {best:.2f}×  "
          f"(target ≤ 1.2×: {'met' if cpu <= 1.2 else 'NOT met'})")

    t0 = time.perf_counter()
    buffer = io.BytesIO()
    seg.save_as(buffer, enforce_file_format=True)
    encode = time.perf_counter() - t0
    size = buffer.getbuffer().nbytes
    print(f"encoded SEG: {size / 1024:.1f} KiB ({int(seg.NumberOfFrames)} frames, "
          f"{len(seg.SegmentSequence)} segments), written in {encode * 1000:.1f} ms")

    for which in ("ours", "baseline"):
        mem = measure_memory(which, args)
        peak, before = mem["peak"] / 2**20, mem["before"] / 2**20
        label = "build_segmentation" if which == "ours" else "highdicom alone"
        if mem["method"] == "VmHWM":
            print(f"peak RSS during {label}: {peak:.0f} MB (VmHWM, child process; inputs "
                  f"resident {before:.0f} MB, growth {peak - before:.0f} MB)"
                  + ("  (target < 1.5 GB: " + ("met)" if peak < 1536 else "NOT met)")
                     if which == "ours" else ""))
        else:
            print(f"peak RSS of a child that made the inputs and ran {label}: {peak:.0f} MB "
                  "(ru_maxrss)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
