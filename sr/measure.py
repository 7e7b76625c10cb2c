"""Volume and intensity statistics of labelled regions (issue 6, point 3).

:func:`measure_segments` measures each label of a label map against its source series:
voxel count, volume in mm³ and the statistics of the source values inside it (mean,
standard deviation, minimum, maximum) after the Modality LUT (PS3.3 C.11.1: Rescale
Slope/Intercept, i.e. Hounsfield units for CT), which are the figures a TID 1411
Volumetric ROI group reports (``sr.build``).

Cost: one pass over the slices.  Each source slice is decoded on its own (no cached
pixel arrays left in the caller's datasets, no float copy of the volume); only the
labelled voxels of a slice are converted to float, and each label's figures are merged
slice by slice (Chan et al.'s pairwise update of mean and sum of squared deviations,
which stays exact where "sum of squares minus square of sum" cancels).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut
from pydicom.pixels import pixel_array as _decode

__all__ = ["SegmentStats", "measure_segments", "slice_thicknesses"]


@dataclass(frozen=True)
class SegmentStats:
    """What :func:`measure_segments` finds for one label value.

    The intensity figures are None when the label has no voxel.  ``std`` is the
    population standard deviation (divisor n) of the voxel values: the region is the
    whole population measured, not a sample of one.
    """

    label_value: int
    voxel_count: int
    volume_mm3: float
    mean: float | None = None
    std: float | None = None
    minimum: float | None = None
    maximum: float | None = None


class _Running:
    """Count, mean, sum of squared deviations, min, max; merged chunk by chunk."""

    __slots__ = ("n", "mean", "m2", "lo", "hi", "volume")

    def __init__(self) -> None:
        self.n, self.mean, self.m2 = 0, 0.0, 0.0
        self.lo, self.hi, self.volume = math.inf, -math.inf, 0.0

    def add(self, values: np.ndarray, voxel_volume: float) -> None:
        n_b = int(values.size)
        mean_b = float(values.mean())
        m2_b = float(np.square(values - mean_b).sum())
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n
        self.lo = min(self.lo, float(values.min()))
        self.hi = max(self.hi, float(values.max()))
        self.volume += n_b * voxel_volume


def _direction_cosines(ds: Dataset, index: int) -> np.ndarray:
    value = ds.get("ImageOrientationPatient")
    if value is None or len(value) != 6:
        raise ValueError(f"source_images[{index}]: needs ImageOrientationPatient (6 values)")
    return np.asarray(value, dtype=float)


def slice_thicknesses(source_images: Sequence[Dataset]) -> np.ndarray:
    """The thickness (mm) each slice stands for, from the slice positions.

    Positions are Image Position (Patient) (0020,0032) projected on the slice normal
    (row × column direction cosines of Image Orientation (Patient), PS3.3 C.7.6.2.1.1);
    they must ascend strictly.  A slice stands for half the gap to each neighbour (the
    whole gap at either end), so a uniformly spaced series gets its spacing everywhere and
    a series with a missing slice is not inflated.  Slice Thickness (0018,0050) is the
    reconstructed thickness, not the spacing, and is used only for a single slice
    (after Spacing Between Slices (0018,0088)).
    """
    n = len(source_images)
    if n == 0:
        raise ValueError("source_images: no images")
    if n == 1:
        ds = source_images[0]
        for keyword in ("SpacingBetweenSlices", "SliceThickness"):
            value = ds.get(keyword)
            if value not in (None, "") and float(value) > 0:
                return np.array([float(value)])
        raise ValueError("source_images: a single slice needs SpacingBetweenSlices or "
                         "SliceThickness to give it a thickness")
    first = _direction_cosines(source_images[0], 0)
    normal = np.cross(first[:3], first[3:])
    positions = np.empty(n)
    for i, ds in enumerate(source_images):
        if not np.allclose(_direction_cosines(ds, i), first, atol=1e-4):
            raise ValueError(f"source_images[{i}]: ImageOrientationPatient differs from "
                             "the first image's; the images must be one stack of slices")
        ipp = ds.get("ImagePositionPatient")
        if ipp is None or len(ipp) != 3:
            raise ValueError(f"source_images[{i}]: needs ImagePositionPatient (3 values)")
        positions[i] = np.dot(np.asarray(ipp, dtype=float), normal)
    gaps = np.diff(positions)
    if np.any(gaps <= 1e-6):
        raise ValueError("source_images: slice positions along the normal must ascend "
                         "strictly (the mask's axis-0 order); sort the images first")
    thickness = np.empty(n)
    thickness[0], thickness[-1] = gaps[0], gaps[-1]
    thickness[1:-1] = (gaps[:-1] + gaps[1:]) / 2
    return thickness


def _pixel_area(ds: Dataset, index: int) -> float:
    spacing = ds.get("PixelSpacing")
    if spacing is None or len(spacing) != 2:
        raise ValueError(f"source_images[{index}]: needs PixelSpacing (2 values)")
    return float(spacing[0]) * float(spacing[1])


def _frame(ds: Dataset) -> np.ndarray:
    """One slice's stored values, decoded without caching them in ``ds``."""
    if getattr(ds, "_pixel_array", None) is not None:
        return ds.pixel_array
    try:
        return _decode(ds)
    except AttributeError:  # no File Meta (e.g. read from DICOM JSON): pydicom guesses
        return ds.pixel_array


def measure_segments(label_map: np.ndarray, source_images: Sequence[Dataset],
                     label_values: Iterable[int]) -> dict[int, SegmentStats]:
    """Per label value: voxel count, volume (mm³) and Modality-LUT intensity statistics.

    ``label_map`` is an integer array ``(frames, rows, columns)`` whose frame ``i`` lies on
    ``source_images[i]`` (ascending along the slice normal, see :func:`slice_thicknesses`).
    Every requested label value gets an entry, with ``voxel_count`` 0 if absent.
    """
    if not isinstance(label_map, np.ndarray):
        raise TypeError("label_map must be a numpy array")
    if label_map.ndim != 3 or not np.issubdtype(label_map.dtype, np.integer):
        raise ValueError("label_map must be an integer array (frames, rows, columns), "
                         f"not {label_map.dtype} of shape {label_map.shape}")
    if isinstance(source_images, Dataset) or not isinstance(source_images, Sequence):
        raise TypeError("source_images must be a sequence of pydicom Datasets")
    if len(source_images) != label_map.shape[0]:
        raise ValueError(f"source_images: {len(source_images)} images for a label_map of "
                         f"{label_map.shape[0]} frames")
    values = []
    for value in label_values:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise TypeError(f"label_values: {value!r} is not an integer")
        if value < 1:
            raise ValueError(f"label_values: {value} is not a label (0 is background)")
        values.append(int(value))
    if not values:
        raise ValueError("label_values: no label values")
    wanted = sorted(set(values))

    thickness = slice_thicknesses(source_images)
    # label value -> index into the running figures; -1 = not measured
    lookup = np.full(max(int(label_map.max(initial=0)), wanted[-1]) + 1, -1, dtype=np.int64)
    lookup[wanted] = np.arange(len(wanted))
    running = [_Running() for _ in wanted]
    for z, ds in enumerate(source_images):
        if int(ds.get("Rows", -1)) != label_map.shape[1] or \
                int(ds.get("Columns", -1)) != label_map.shape[2]:
            raise ValueError(f"source_images[{z}]: {ds.get('Rows')} x {ds.get('Columns')} "
                             f"does not match the label_map's {label_map.shape[1:]}")
        labels = label_map[z].ravel()
        where = np.flatnonzero(labels)
        if where.size == 0:
            continue
        which = lookup[labels[where]]
        keep = which >= 0
        where, which = where[keep], which[keep]
        if where.size == 0:
            continue
        stored = _frame(ds).ravel()[where]
        # PS3.3 C.11.1: the Modality LUT (Rescale Slope/Intercept or a LUT) maps stored
        # values to the modality's quantity (HU for CT); float64 for the few voxels only.
        quantity = np.asarray(apply_modality_lut(stored, ds), dtype=np.float64)
        voxel = _pixel_area(ds, z) * float(thickness[z])
        for j in np.unique(which):
            running[j].add(quantity[which == j], voxel)
    out: dict[int, SegmentStats] = {}
    for value, r in zip(wanted, running):
        if r.n == 0:
            out[value] = SegmentStats(value, 0, 0.0)
        else:
            out[value] = SegmentStats(value, r.n, r.volume, r.mean, math.sqrt(r.m2 / r.n),
                                      r.lo, r.hi)
    return out
