"""Scanner-side I/O: DICOM cines in (dicom_scan → series → dicom_pixels; `dicom.read_cines`), derived DICOM series
out (dicom_write), 4-D NIfTI cines in and out (nifti)."""

from cmrvsr_fast.io.dicom import Discovery, find_cine_series, read_cines, rescale
from cmrvsr_fast.io.series import CineSeries, NotACine, SeriesRefused

__all__ = ["CineSeries", "Discovery", "NotACine", "SeriesRefused", "find_cine_series", "read_cines", "rescale"]
