"""DICOM Structured Reports for annotation results (issue 6, point 3).

* :mod:`sr.measure` — :func:`measure_segments`: voxel count, volume (mm³) and Modality-LUT
  intensity statistics (HU for CT) per label of a label map, in one slice-by-slice pass;
* :mod:`sr.build` — :func:`build_measurement_report` (PS3.16 TID 1500 with one TID 1411
  group per SEG segment: the reader's or an algorithm's report), and the codes;
* :mod:`sr.review` — :func:`build_review_report` (a reviewer's/adjudicator's new version
  with a verdict, VERIFIED when accepted); both Comprehensive 3D SR, dciodvfy-clean;
* :mod:`sr.read` — :func:`describe`: a :class:`worklist.provenance.ResultRecord` of any SR
  (ours, other tools', or read from DICOM JSON).
"""

from sr.build import VerdictValues, build_measurement_report
from sr.review import build_review_report
from sr.measure import SegmentStats, measure_segments
from sr.read import SRReadError, describe

__all__ = ["measure_segments", "SegmentStats", "build_measurement_report",
           "build_review_report", "VerdictValues", "describe", "SRReadError"]
