"""Incoming DIMSE datasets, decoded strictly (STYLE rule 11: strict on what we accept).

pydicom decodes lazily and tolerantly: a value that does not parse becomes a warning,
raw bytes, or an exception on first access, and an Explicit VR peer may send any VR for
any tag.  :func:`decode_dataset` forces every element to decode, checks each public
tag's VR against the data dictionary, and runs the core's value checks
(:func:`worklist.dicomjson.validate_dataset`), so a bad dataset becomes one
:class:`~worklist.errors.InvalidRequest` naming the attribute, before any service call.
"""

from __future__ import annotations

from collections.abc import Callable

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from worklist import errors
from worklist.dicomjson import attribute_name, validate_dataset

__all__ = ["decode_dataset", "check_elements"]

_MAX_DEPTH = 16
_TEXT_VRS = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST",
                       "TM", "UC", "UI", "UR", "UT"})


def decode_dataset(read: Callable[[], Dataset], what: str, *, values: bool = True) -> Dataset:
    """Decode a request's dataset (``read`` is e.g. ``lambda: event.attribute_list``)
    and check it.  An absent dataset is an empty one.

    ``values=False`` skips the value checks: a C-FIND identifier holds matching keys
    (ranges, wildcards) that the matching module checks instead.
    """
    try:
        ds = read()
    except errors.UPSError:
        raise
    except Exception as exc:
        raise errors.InvalidAttributeValue(
            f"The {what} cannot be decoded: {type(exc).__name__}: {exc}") from None
    check_elements(ds, "", 0)
    if values:
        validate_dataset(ds)
    return ds


def check_elements(ds: Dataset, where: str, depth: int) -> None:
    """Decode every element of ``ds`` (recursively) and check its VR."""
    if depth > _MAX_DEPTH:
        raise errors.InvalidRequest(f"Sequences are nested deeper than {_MAX_DEPTH} levels")
    for tag in list(ds.keys()):
        name = where + attribute_name(tag)
        if tag.group == 0:
            raise errors.NoSuchAttribute(f"{name}: command elements are not allowed in a "
                                         "dataset", attribute=name)
        if tag.element == 0:
            del ds[tag]  # retired group length (PS3.5 7.2): ignored
            continue
        raw = ds.get_item(tag)
        if raw is not None and raw.is_raw and raw.length != 0xFFFFFFFF \
                and raw.value is not None and len(raw.value) != raw.length:
            raise errors.InvalidAttributeValue(
                f"{name}: the value is truncated ({len(raw.value)} of the {raw.length} bytes "
                "its length announces)", attribute=name)
        try:
            elem = ds[tag]
        except Exception as exc:  # pydicom's conversion errors (or warnings made errors)
            raise errors.InvalidAttributeValue(
                f"{name}: the value cannot be decoded ({type(exc).__name__}: {exc})",
                attribute=name) from None
        if not tag.is_private:
            try:
                expected = dictionary_VR(tag)
            except KeyError:
                raise errors.NoSuchAttribute(f"{name} is not an attribute of the DICOM data "
                                             "dictionary", attribute=name) from None
            if elem.VR != expected and elem.VR not in expected.split(" or "):
                raise errors.InvalidAttributeValue(
                    f"{name} has VR {elem.VR}; the data dictionary says {expected}",
                    attribute=name)
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value, 1):
                check_elements(item, f"{name}[{i}] > ", depth + 1)
        elif elem.VR in _TEXT_VRS and _holds_bytes(elem.value):
            raise errors.InvalidAttributeValue(f"{name}: the value cannot be decoded as text",
                                               attribute=name)


def _holds_bytes(value: object) -> bool:
    if isinstance(value, (bytes, bytearray)):
        return True
    if isinstance(value, (list, tuple, MultiValue)):
        return any(isinstance(v, (bytes, bytearray)) for v in value)
    return False
