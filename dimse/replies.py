"""DIMSE replies: a status with its Error Comment, built in one place.

pynetdicom handlers return a status either as an ``int`` or as a Dataset holding
Status (0000,0900) and optional status elements; the latter is how an Error Comment
(0000,0902) reaches the peer.  Every failure this adapter sends carries one.

:func:`guarded` is the single place where the core's errors become DIMSE statuses
(STYLE rule 7): a :class:`~worklist.errors.UPSError` gives its ``.status`` and
``.error_comment``; anything else is logged and answered 0x0110 Processing Failure,
so an unexpected exception never reaches pynetdicom nor ends the association.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset

from worklist.errors import UPSError, Warning
from worklist.status import Status

__all__ = ["reply", "error_reply", "warning_reply", "guarded", "comment"]

log = logging.getLogger("dimse")

# PS3.7 C.4 / PS3.5 Table 6.2-1: Error Comment is LO, at most 64 characters, no backslash.
_LO_MAX = 64


def comment(text: str) -> str:
    """``text`` as a valid LO value for Error Comment (0000,0902)."""
    text = text.encode("ascii", "replace").decode("ascii").replace("\\", "/")
    text = " ".join(text.split())  # no control characters (LO has no CR/LF)
    return text if len(text) <= _LO_MAX else text[: _LO_MAX - 3] + "..."


def reply(status: int, error_comment: str | None = None) -> Dataset:
    """A status Dataset, with an Error Comment when one is given."""
    ds = Dataset()
    ds.Status = int(status)
    if error_comment:
        ds.ErrorComment = comment(error_comment)
    return ds


def error_reply(exc: UPSError) -> Dataset:
    return reply(exc.status, exc.error_comment)


def warning_reply(warning: Warning | None) -> Dataset | int:
    """Success, or the warning status the service returned (e.g. B304, B306)."""
    if warning is None:
        return int(Status.SUCCESS)
    return reply(warning.status, warning.text)


def guarded(operation: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wrap an N-* handler returning ``(status, dataset)`` so that errors become replies."""

    def wrap(handler: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(handler)
        def run(*args: Any, **kwargs: Any) -> Any:
            try:
                return handler(*args, **kwargs)
            except UPSError as exc:
                log.info("%s refused: 0x%04X %s", operation, int(exc.status), exc.message)
                return error_reply(exc), None
            except Exception as exc:  # never let pynetdicom see it: answer and go on
                log.exception("%s failed unexpectedly", operation)
                return reply(Status.PROCESSING_FAILURE,
                             f"{operation} failed: {type(exc).__name__}: {exc}"), None

        return run

    return wrap
