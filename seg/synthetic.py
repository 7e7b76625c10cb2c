"""Synthetic CT series and label maps: for the tests, the benchmarks and the README tour.

:func:`ct_volume` makes a valid CT Image Storage series (PS3.3 A.3) of any size with a
realistic geometry (axial slices, 0.7 mm pixels, 2.5 mm spacing) and HU values: air
around a water-density body with denser spheres in it. :func:`sphere_labels` makes a label
map of spheres (label value k = k-th label of a label set), aligned to that series.
Slices are returned in acquisition order = ascending z = the order of a mask's axis 0.
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

__all__ = ["ct_volume", "sphere_labels", "sphere_centres", "nifti_affine"]


def sphere_centres(n: int, shape: tuple[int, int, int]) -> list[tuple[float, float, float, float]]:
    """(z, y, x, radius) in voxels for ``n`` spheres placed apart inside ``shape``."""
    frames, rows, cols = shape
    out = []
    for k in range(n):
        angle = 2 * np.pi * k / max(n, 1)
        cy = rows / 2 + rows * 0.22 * np.sin(angle)
        cx = cols / 2 + cols * 0.22 * np.cos(angle)
        out.append((frames / 2, cy, cx, max(2.0, min(rows, cols) * 0.08)))
    return out


def sphere_labels(shape: tuple[int, int, int], n_labels: int,
                  spacing: tuple[float, float, float] = (2.5, 0.7, 0.7)) -> np.ndarray:
    """A uint8 label map ``(frames, rows, cols)``: label k is a sphere (k = 1..n_labels).
    Spheres are round in millimetres (``spacing`` = slice spacing, row, column)."""
    labels = np.zeros(shape, dtype=np.uint8)
    z, y, x = np.ogrid[:shape[0], :shape[1], :shape[2]]
    for k, (cz, cy, cx, r) in enumerate(sphere_centres(n_labels, shape), start=1):
        rz = r * spacing[1] / spacing[0]
        inside = (((z - cz) / rz) ** 2 + ((y - cy) / r) ** 2 + ((x - cx) / r) ** 2) <= 1.0
        labels[inside] = k
    return labels


def ct_volume(rows: int = 64, columns: int = 64, frames: int = 16, *,
              study_uid: str | None = None, patient_id: str = "SYN-0001",
              patient_name: str = "Synthetic^Patient", accession: str = "SYN-ACC-1",
              description: str = "Synthetic CT", n_spheres: int = 5,
              pixel_spacing: float = 0.7, slice_spacing: float = 2.5) -> list[Dataset]:
    """A CT series of ``frames`` slices of ``rows`` × ``columns`` (signed 16-bit, HU)."""
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    shape = (frames, rows, columns)
    z, y, x = np.ogrid[:frames, :rows, :columns]
    body = ((y - rows / 2) / (rows * 0.45)) ** 2 + ((x - columns / 2) / (columns * 0.45)) ** 2 <= 1
    spheres = sphere_labels(shape, n_spheres, (slice_spacing, pixel_spacing, pixel_spacing))
    rng = np.random.default_rng(7)
    slices = []
    for i in range(frames):
        hu = np.where(body[0], 40, -1000).astype(np.int16)
        hu[spheres[i] > 0] = (60 + 20 * spheres[i][spheres[i] > 0]).astype(np.int16)
        hu += rng.integers(-10, 10, size=hu.shape, dtype=np.int16)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.PatientName, ds.PatientID = patient_name, patient_id
        ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber = "20260315", "101500", accession
        ds.SeriesDate, ds.SeriesTime = "20260315", "101600"
        ds.ContentDate, ds.ContentTime = "20260315", "101600"
        ds.AcquisitionNumber = 1
        ds.StudyDescription, ds.SeriesDescription = description, "axial"
        ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, i + 1
        ds.Modality, ds.ReferringPhysicianName = "CT", ""
        ds.Manufacturer = "worklist synthetic"
        ds.PositionReferenceIndicator, ds.PatientPosition, ds.Laterality = "", "HFS", ""
        ds.FrameOfReferenceUID = frame_uid
        ds.ImagePositionPatient = [-columns * pixel_spacing / 2, -rows * pixel_spacing / 2,
                                   round(i * slice_spacing, 4)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [pixel_spacing, pixel_spacing]
        ds.SliceThickness = slice_spacing
        ds.KVP = 120
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = rows, columns
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.PixelData = hu.tobytes()
        slices.append(ds)
    return slices


def nifti_affine(images: list[Dataset]) -> np.ndarray:
    """The RAS affine of a NIfTI whose voxel (i, j, k) is (column, row, frame) of the
    series ``images`` sorted along the slice normal, as dcm2niix-style converters write
    it (NIfTI is RAS, DICOM LPS: the first two rows change sign)."""
    first = images[0]
    iop = np.asarray([float(v) for v in first.ImageOrientationPatient])
    dr, dc = (float(v) for v in first.PixelSpacing)
    p0 = np.asarray([float(v) for v in first.ImagePositionPatient])
    p1 = np.asarray([float(v) for v in images[1].ImagePositionPatient])
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1], lps[:3, 2], lps[:3, 3] = iop[:3] * dc, iop[3:] * dr, p1 - p0, p0
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps
