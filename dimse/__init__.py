"""The DIMSE protocol adapter: UPS Push, Pull, Watch, Event and Query over DICOM networking.

It only translates: every request becomes one call of :class:`worklist.service.WorklistService`
and every result or error one DIMSE status.  Start it with :func:`start_dimse`.
"""

from .server import DimseServer, start_dimse

__all__ = ["DimseServer", "start_dimse"]
