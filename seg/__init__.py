"""DICOM Segmentation (SEG) for annotation results (issue 6, point 2).

* :mod:`seg.masks` — label maps from ``.npy``/``.npz`` files, the source series order
  every mask's axis 0 follows (:func:`sort_images`), shape checks;
* :mod:`seg.build` — :func:`build_segmentation`: label map + label set + provenance → a
  valid BINARY Segmentation (dciodvfy-clean) that says who, how, with what, when and for
  which task;
* :mod:`seg.read` — :func:`read_segmentation` (masks per Segment Label) and
  :func:`describe` (a :class:`worklist.provenance.ResultRecord`, tolerant of other tools'
  SEGs and of metadata without pixels);
* :mod:`seg.synthetic` — CT series and label maps for tests and benchmarks.
"""

from seg.build import CONTENT_LABEL, build_segmentation
from seg.masks import MaskError, check_geometry, load_mask, sort_images
from seg.read import SegReadError, describe, read_segmentation

__all__ = ["build_segmentation", "CONTENT_LABEL", "load_mask", "check_geometry",
           "sort_images", "MaskError", "read_segmentation", "describe", "SegReadError"]
