"""Label masks as users hand them in, and the source series they belong to.

A *label map* is an integer array ``(frames, rows, columns)``: 0 is background and value
``k`` is the k-th label of a label set (``worklist.labelsets``: a label's value is its
1-based position in the set).

Axis 0 convention (every mask of this package, read or written): frame ``i`` of a mask
belongs to ``sort_images(source_images)[i]``, i.e. the source images ordered by the
projection of Image Position (Patient) (0020,0032) on the slice normal (the cross product
of the row and column direction cosines of Image Orientation (Patient) (0020,0037)),
ascending.  For an axial series in the usual orientation that is feet to head, ascending
z — the order of ``seg.synthetic.ct_volume``.  Rows and columns are the source images'
own (no transposition, no flip).

Only series of single-frame images (CT, MR, PET ...) are supported; an enhanced
multi-frame source is refused where it matters (``sort_images``, ``build_segmentation``).

Files ``load_mask`` reads:

* ``.npy`` — one integer label map (or a boolean array = label 1), or a float array whose
  values are all integral;
* ``.npz`` — either one array named ``labels`` (a label map as above), or one boolean
  array per label *name* of the set (``np.savez(path, Liver=..., Spleen=...)``), which
  must not overlap;
* ``.nii`` / ``.nii.gz`` (NIfTI-1/2, read with nibabel) — a label map in any voxel axis
  order and direction: its affine (RAS) is matched against the source series (LPS) to
  find which NIfTI axis is the slice, row and column axis and which run backwards, and
  the map is reordered to the convention above; a NIfTI whose grid is not the series'
  (other orientation, spacing or origin beyond half a voxel) is refused, never resampled.
"""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

from worklist.labelsets import LabelSet

__all__ = ["MaskError", "load_mask", "is_nifti", "check_labels", "check_geometry", "sort_images",
           "slice_positions", "element_value"]


class MaskError(ValueError):
    """A mask cannot be used: the message names the file, the value or the shapes."""


def _dtype_for(label_set: LabelSet) -> type[np.unsignedinteger]:
    n = len(label_set.labels)
    if n <= np.iinfo(np.uint8).max:
        return np.uint8
    if n <= np.iinfo(np.uint16).max:
        return np.uint16
    raise MaskError(f"label set '{label_set.name}' has {n} labels; at most 65535 fit a mask")


def _set_range(label_set: LabelSet) -> str:
    return f"label set '{label_set.name}' (1-{len(label_set.labels)})"


def check_labels(label_map: np.ndarray, label_set: LabelSet, *, what: str = "mask") -> np.ndarray:
    """``label_map`` as the set's unsigned dtype after checking it: 3-D, integer (or
    bool, or float with integral values), every value in 0..len(set), at least one
    labelled voxel.  Returns the input itself when it already has that dtype."""
    if not isinstance(label_map, np.ndarray):
        raise MaskError(f"{what}: expected a numpy array, got {type(label_map).__name__}")
    if label_map.ndim != 3:
        raise MaskError(f"{what}: expected 3 dimensions (frames, rows, columns), got shape "
                        f"{label_map.shape}")
    dtype = _dtype_for(label_set)
    kind = label_map.dtype.kind
    if kind == "b":
        if not label_map.any():
            raise MaskError(f"{what}: the mask is empty (no labelled voxel)")
        return label_map.view(np.uint8) if dtype is np.uint8 else label_map.astype(dtype)
    if kind == "f":
        if not np.isfinite(label_map).all():
            raise MaskError(f"{what}: dtype {label_map.dtype} with NaN or infinite values; "
                            "a label map holds integer label values")
        fractional = label_map != np.round(label_map)
        if fractional.any():
            bad = label_map[fractional].flat[0]
            raise MaskError(f"{what}: dtype {label_map.dtype} with non-integral value {bad:g}; "
                            "a label map holds integer label values")
    elif kind not in "iu":
        raise MaskError(f"{what}: dtype {label_map.dtype} is not an integer, boolean or "
                        "float array")
    if label_map.size == 0:
        raise MaskError(f"{what}: the mask is empty (shape {label_map.shape})")
    # min/max are one vectorised pass each; label values are 1..n with no gaps, so the
    # extremes are enough to find a value outside the set.
    high = label_map.max()
    low = label_map.min() if kind != "u" else 0
    n = len(label_set.labels)
    if low < 0:
        raise MaskError(f"{what}: label value {low:g} is not in {_set_range(label_set)}")
    if high > n:
        raise MaskError(f"{what}: label value {high:g} is not in {_set_range(label_set)}")
    if high == 0:
        raise MaskError(f"{what}: the mask is empty (no labelled voxel)")
    if label_map.dtype == dtype:
        return label_map
    return label_map.astype(dtype)


def _load_npz(path: Path, label_set: LabelSet) -> np.ndarray:
    try:
        archive = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise MaskError(f"cannot read mask file {path}: {exc}") from None
    with archive:
        names = list(archive.files)
        if not names:
            raise MaskError(f"mask file {path}: holds no array")
        try:
            if "labels" in names:
                if len(names) > 1:
                    raise MaskError(f"mask file {path}: has 'labels' and other arrays "
                                    f"({', '.join(n for n in names if n != 'labels')}); "
                                    "give either one label map or one array per label name")
                return check_labels(archive["labels"], label_set, what=f"mask file {path}")
            known = {label.name for label in label_set.labels}
            unknown = [n for n in names if n not in known]
            if unknown:
                raise MaskError(
                    f"mask file {path}: unknown label name(s) {', '.join(map(repr, unknown))} "
                    f"for label set '{label_set.name}' (known: "
                    f"{', '.join(label.name for label in label_set.labels)})")
            arrays = {name: archive[name] for name in names}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            if isinstance(exc, MaskError):
                raise
            raise MaskError(f"cannot read mask file {path}: {exc}") from None
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) > 1:
        raise MaskError(f"mask file {path}: per-label arrays differ in shape: "
                        + ", ".join(f"{n} {a.shape}" for n, a in arrays.items()))
    shape = shapes.pop()
    if len(shape) != 3:
        raise MaskError(f"mask file {path}: expected 3 dimensions (frames, rows, columns), "
                        f"got shape {shape}")
    label_map = np.zeros(shape, dtype=_dtype_for(label_set))
    for name, array in arrays.items():
        if array.dtype.kind != "b":
            if array.dtype.kind not in "iu" or array.min() < 0 or array.max() > 1:
                raise MaskError(f"mask file {path}: array '{name}' must be boolean (or 0/1), "
                                f"got dtype {array.dtype}")
            array = array.astype(bool)
        taken = label_map[array]
        taken = taken[taken > 0]
        if taken.size:
            other = label_set.by_value(int(taken[0])).name
            raise MaskError(f"mask file {path}: labels '{other}' and '{name}' overlap in "
                            f"{taken.size} voxel(s); a label map holds one label per voxel")
        label_map[array] = label_set.by_name(name).value
    if not label_map.any():
        raise MaskError(f"mask file {path}: the mask is empty (no labelled voxel)")
    return label_map


def is_nifti(path: str | Path) -> bool:
    name = Path(path).name.lower()
    return name.endswith(".nii") or name.endswith(".nii.gz")


def load_mask(path: str | Path, label_set: LabelSet,
              source_images: Sequence[Dataset] | None = None) -> np.ndarray:
    """The label map ``(frames, rows, columns)`` (uint8, or uint16 beyond 255 labels) of
    a ``.npy``, ``.npz`` or NIfTI file; :class:`MaskError` names what is wrong.  A NIfTI
    file needs ``source_images`` (sorted or not) to be oriented."""
    path = Path(path)
    if is_nifti(path):
        if not source_images:
            raise MaskError(f"mask file {path}: a NIfTI mask needs its source series to "
                            "be oriented")
        return check_labels(_load_nifti(path, sort_images(source_images)), label_set,
                            what=f"mask file {path}")
    if path.suffix == ".npz":
        return _load_npz(path, label_set)
    if path.suffix != ".npy":
        raise MaskError(f"mask file {path}: expected a .npy, .npz, .nii or .nii.gz file")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise MaskError(f"cannot read mask file {path}: {exc}") from None
    if not isinstance(array, np.ndarray):
        raise MaskError(f"cannot read mask file {path}: not a .npy array")
    return check_labels(array, label_set, what=f"mask file {path}")


def _load_nifti(path: Path, images: list[Dataset]) -> np.ndarray:
    """The NIfTI label map reordered to (frames, rows, columns) of the sorted ``images``."""
    try:
        import nibabel
    except ImportError:  # pragma: no cover - a dependency of the package
        raise MaskError(f"mask file {path}: reading NIfTI needs nibabel") from None
    try:
        img = nibabel.load(str(path))
        data = np.asanyarray(img.dataobj)
        affine = np.asarray(img.affine, dtype=float)
    except Exception as exc:  # nibabel raises many kinds for a damaged file
        raise MaskError(f"cannot read mask file {path}: {exc}") from None
    data = np.squeeze(data)
    if data.ndim != 3:
        raise MaskError(f"mask file {path}: a NIfTI label map must be 3-D, not "
                        f"{data.ndim}-D {data.shape}")
    # The series' voxel grid in LPS (PS3.3 C.7.6.2.1.1): column index along the row
    # direction cosines, row index along the column direction cosines, frame index along
    # the slice normal (the sort order).
    first = images[0]
    iop = np.asarray([float(v) for v in first.ImageOrientationPatient])
    row_spacing, column_spacing = (float(v) for v in first.PixelSpacing)
    positions = slice_positions(images)
    step = float(np.median(np.diff(positions))) if len(images) > 1 else float(
        first.get("SliceThickness") or 1.0)
    normal = np.cross(iop[:3], iop[3:])
    dicom_axes = [normal * step, iop[3:] * row_spacing, iop[:3] * column_spacing]
    # NIfTI's affine maps voxel indices to RAS; LPS = diag(-1, -1, 1) RAS.
    nifti_axes = (np.diag([-1.0, -1.0, 1.0]) @ affine[:3, :3]).T  # one row per NIfTI axis
    order, flips = [], []
    for d, want in enumerate(dicom_axes):
        cosines = [float(np.dot(v, want) / (np.linalg.norm(v) * np.linalg.norm(want)))
                   for v in nifti_axes]
        axis = int(np.argmax(np.abs(cosines)))
        if abs(cosines[axis]) < 0.99 or axis in order:
            raise MaskError(f"mask file {path}: its voxel axes are not the source series' "
                            "(another orientation): resample it onto the series first")
        if not np.isclose(np.linalg.norm(nifti_axes[axis]), np.linalg.norm(want), rtol=0.01):
            names = ("slice spacing", "row spacing", "column spacing")
            raise MaskError(f"mask file {path}: {names[d]} "
                            f"{np.linalg.norm(nifti_axes[axis]):.3f} mm differs from the "
                            f"source series' {np.linalg.norm(want):.3f} mm")
        order.append(axis)
        flips.append(cosines[axis] < 0)
    data = np.transpose(data, order)
    for d, flip in enumerate(flips):
        if flip:
            data = np.flip(data, axis=d)
    # where the reordered map's first voxel lies, against the first image's
    corner = [data.shape[d] - 1 if flips[d] else 0 for d in range(3)]
    index = np.zeros(3)
    for d, axis in enumerate(order):
        index[axis] = corner[d]
    origin = np.diag([-1.0, -1.0, 1.0]) @ (affine[:3, :3] @ index + affine[:3, 3])
    expected = np.asarray([float(v) for v in images[0].ImagePositionPatient])
    offset = float(np.linalg.norm(origin - expected))
    if offset > 0.5 * min(row_spacing, column_spacing, abs(step)):
        raise MaskError(f"mask file {path}: its first voxel lies {offset:.1f} mm from the "
                        "source series' first one: not the same grid")
    return np.ascontiguousarray(data)


# -- the source series -------------------------------------------------------------------
def element_value(ds: Dataset, tag: int) -> Any:
    """``ds.get(keyword)`` by tag: a third of the cost, which adds up over a series."""
    element = ds.get(tag)
    return None if element is None else element.value


_NUMBER_OF_FRAMES, _IPP, _IOP = 0x00280008, 0x00200032, 0x00200037


def _where(ds: Dataset, index: int) -> str:
    return f"source image {index} ({ds.get('SOPInstanceUID', 'no SOP Instance UID')})"


def _geometry(ds: Dataset, index: int) -> tuple[tuple[float, ...], tuple[float, ...]]:
    frames = element_value(ds, _NUMBER_OF_FRAMES)
    if frames is not None and int(frames or 1) > 1:
        raise ValueError(f"{_where(ds, index)}: has {frames} frames; only series of "
                         "single-frame images are supported")
    ipp, iop = element_value(ds, _IPP), element_value(ds, _IOP)
    for keyword, value, n in (("ImagePositionPatient", ipp, 3),
                              ("ImageOrientationPatient", iop, 6)):
        if value is None or len(value) != n:
            raise ValueError(f"{_where(ds, index)}: needs {keyword} with {n} values")
    return tuple(map(float, ipp)), tuple(map(float, iop))


def slice_positions(datasets: Sequence[Dataset]) -> np.ndarray:
    """Each image's position along the slice normal (mm), in the given order."""
    if not datasets:
        raise ValueError("no source images")
    positions = []
    orientation: tuple[float, ...] = ()
    for i, ds in enumerate(datasets):
        ipp, iop = _geometry(ds, i)
        positions.append(ipp)
        if not orientation:
            orientation = iop
        # Exact equality is the common case and costs nothing; np.allclose per image
        # would be most of the time of sorting a 300-slice series.
        elif iop != orientation and not np.allclose(iop, orientation, atol=1e-4):
            raise ValueError(f"source image {i}: ImageOrientationPatient differs from the "
                             "first image's; a mask needs one stack of parallel slices")
    normal = np.cross(orientation[:3], orientation[3:])
    return np.asarray(positions) @ normal


def sort_images(datasets: Sequence[Dataset]) -> list[Dataset]:
    """The source images in mask axis-0 order: ascending along the slice normal
    (see the module docstring).  Ties keep their given order."""
    datasets = list(datasets)
    order = np.argsort(slice_positions(datasets), kind="stable")
    return [datasets[i] for i in order]


def check_geometry(mask: np.ndarray, source_images: Sequence[Dataset], *,
                   what: str = "mask") -> None:
    """Refuse a mask whose shape is not (number of images, Rows, Columns)."""
    if not source_images:
        raise MaskError(f"{what}: no source images to check it against")
    first = source_images[0]
    expected = (len(source_images), int(first.Rows), int(first.Columns))
    if tuple(mask.shape) != expected:
        raise MaskError(f"{what}: shape (frames, rows, columns) {tuple(mask.shape)} does not "
                        f"match the source series {expected}")
