"""DICOM JSON (PS3.18 F.2) in and out, and value checks per VR (PS3.5 6.2).

Strict on what we accept from the network: every element must carry the VR the data
dictionary gives its tag, and every value must be valid for that VR.  A violation is
an :class:`~worklist.errors.InvalidRequest` naming the attribute, never an exception
from deep inside pydicom.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import re
from typing import Any

from pydicom import config as _pdconfig
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag
from pydicom.valuerep import validate_value

from .errors import InvalidAttributeValue, InvalidRequest, NoSuchAttribute

__all__ = [
    "parse_json", "check_json", "CheckedJson", "tag_key", "key_keyword", "values", "first", "has_value", "put",
    "sorted_json", "parse_json_dataset", "dataset_from_json_dict", "dataset_to_json_dict", "dumps",
    "validate_dataset", "attribute_name", "parse_tag", "check_uid", "normalize_dt",
]

_STRING_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "SH", "ST", "TM", "UC",
               "UI", "UR", "UT"}
_NUMBER_VRS = {"FD", "FL", "SL", "SS", "SV", "UL", "US", "UV"}
_BINARY_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
_KNOWN_VRS = _STRING_VRS | _NUMBER_VRS | _BINARY_VRS | {"PN", "SQ", "AT"}
_TAG_RE = re.compile(r"^[0-9A-Fa-f]{8}$")
_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
_DA_RE = re.compile(r"^\d{8}$")
_TM_RE = re.compile(r"^(\d{2})(\d{2})?(\d{2})?(\.\d{1,6})?$")
_DT_RE = re.compile(r"^(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\.\d{1,6})?([+-]\d{4})?$")
_MAX_DEPTH = 16
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
# PS3.5 6.1.3 and Table 6.2-1: no control characters but ESC in values, and in the text
# VRs LT, ST and UT also TAB, LF, FF and CR.  (NUL would also break PostgreSQL text.)
_CONTROL = re.compile("[\x00-\x1a\x1c-\x1f]")
_TEXT_CONTROL = re.compile("[\x00-\x08\x0b\x0e-\x1a\x1c-\x1f]")


@functools.lru_cache(maxsize=None)
def tag_key(keyword: str) -> str:
    """The DICOM JSON key (8 upper-case hex digits) of a keyword."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        raise KeyError(keyword)
    return f"{tag:08X}"


@functools.lru_cache(maxsize=4096)
def key_keyword(key: str) -> str:
    """The keyword of a DICOM JSON key ('' for private or unknown tags)."""
    return keyword_for_tag(int(key, 16)) or ""


def values(d: dict[str, Any], keyword: str) -> list[Any]:
    """The values of an attribute of a DICOM JSON object ([] when absent or empty)."""
    elem = d.get(tag_key(keyword))
    if not elem:
        return []
    return [v for v in (elem.get("Value") or []) if v is not None and v != ""]


def first(d: dict[str, Any], keyword: str) -> Any:
    vals = values(d, keyword)
    return vals[0] if vals else None


def has_value(d: dict[str, Any], keyword: str) -> bool:
    return bool(values(d, keyword))


def put(d: dict[str, Any], keyword: str, vr: str, *vals: Any) -> None:
    """Set an attribute of a DICOM JSON object (no values: present and empty)."""
    d[tag_key(keyword)] = {"vr": vr, "Value": list(vals)} if vals else {"vr": vr}


def sorted_json(d: dict[str, Any]) -> dict[str, Any]:
    """The object with its attributes in tag order, as PS3.18 F.2 prints them."""
    return dict(sorted(d.items()))


def attribute_name(tag: int) -> str:
    """``Keyword (gggg,eeee)`` for messages."""
    tag = Tag(tag)
    kw = keyword_for_tag(tag)
    return f"{kw} ({tag.group:04X},{tag.element:04X})" if kw else f"({tag.group:04X},{tag.element:04X})"


def parse_tag(text: str) -> int:
    """A keyword or 8 hex digits to a tag; ``InvalidRequest`` when it is neither."""
    if _TAG_RE.match(text):
        return int(text, 16)
    # pydicom's keyword table maps "" to a retired tag (keyword-less entries), so an
    # empty name (e.g. "Sequence..Code" in a query) must be refused here.
    tag = tag_for_keyword(text) if text else None
    if tag is None:
        raise InvalidRequest(f"'{text}' is neither a DICOM keyword nor a tag of 8 hex digits")
    return tag


def check_uid(value: str, what: str = "UID") -> str:
    """PS3.5 9.1: digits and dots, no leading zeros, at most 64 characters."""
    if not isinstance(value, str) or not value or len(value) > 64 or not _UID_RE.match(value):
        raise InvalidAttributeValue(f"{what} '{value}' is not a valid UID (PS3.5 9.1: digits and "
                                    "dots, no leading zeros, at most 64 characters)")
    return value


def parse_json(body: bytes | str) -> dict[str, Any]:
    """A request body holding one DICOM JSON dataset (or a list of exactly one), checked
    for structure, VRs and values; returned as the DICOM JSON object itself."""
    try:
        # Strict UTF-8 (json.loads would let encoded surrogates and UTF-16/32 through).
        obj = json.loads(body.decode("utf-8-sig") if isinstance(body, bytes) else body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidRequest(f"The body is not valid JSON: {exc}") from None
    except RecursionError:
        raise InvalidRequest("The body is not valid JSON: it is nested too deeply") from None
    if _SURROGATE_ESCAPE.search(body if isinstance(body, bytes) else body.encode("utf-8",
                                                                               "replace")):
        try:  # only a pair of \uD8xx\uDCxx escapes is a character (RFC 8259 section 7)
            dumps(obj).encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidRequest("The body is not valid JSON text: it escapes an unpaired "
                                 "surrogate (\\uD800-\\uDFFF), which is no character") from None
    if isinstance(obj, list):
        if len(obj) != 1:
            raise InvalidRequest(f"The body must hold one DICOM JSON dataset, not {len(obj)}")
        obj = obj[0]
    if not isinstance(obj, dict):
        raise InvalidRequest("The body is not a DICOM JSON dataset (a JSON object keyed by tags)")
    return check_json(obj)


def check_json(obj: dict[str, Any]) -> CheckedJson:
    """Check a DICOM JSON object: tags, VRs against the dictionary, value types and
    values per VR (PS3.5 6.2), recursively; tag keys are made upper case."""
    if isinstance(obj, CheckedJson):
        return obj
    _check_json(obj, 0, "")
    return CheckedJson(obj)


def parse_json_dataset(body: bytes | str) -> Dataset:
    """Like :func:`parse_json`, as a pydicom Dataset."""
    return dataset_from_json_dict(parse_json(body))


def dataset_from_json_dict(obj: dict[str, Any]) -> Dataset:
    """Check the DICOM JSON structure and values and build the Dataset."""
    _check_json(obj, 0, "")
    try:
        return Dataset.from_json(obj)
    except Exception as exc:  # pydicom raises several types for malformed JSON
        raise InvalidRequest(f"The dataset is not valid DICOM JSON: {exc}") from None


@functools.lru_cache(maxsize=8192)
def _dictionary_vr(tag: int) -> str | None:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return None


class _Name:
    """An attribute's path for messages, formatted only when a message needs it."""

    __slots__ = ("where", "tag", "item")

    def __init__(self, where: Any, tag: int, item: int = 0) -> None:
        self.where, self.tag, self.item = where, tag, item

    def __str__(self) -> str:
        text = f"{self.where}{attribute_name(self.tag)}"
        return f"{text} item {self.item} > " if self.item else text

    def __add__(self, other: str) -> str:
        return str(self) + other


class CheckedJson(dict):  # type: ignore[type-arg]
    """A DICOM JSON object that :func:`check_json` has accepted."""


def _check_json(obj: dict[str, Any], depth: int, where: Any) -> None:
    if depth > _MAX_DEPTH:
        raise InvalidRequest(f"Sequences are nested deeper than {_MAX_DEPTH} levels")
    if any(isinstance(k, str) and k != k.upper() for k in obj):
        for k in [k for k in obj if isinstance(k, str) and k != k.upper()]:
            obj[k.upper()] = obj.pop(k)
    for key, elem in obj.items():
        if not isinstance(key, str) or not _TAG_RE.match(key):
            raise InvalidRequest(f"{where}'{key}' is not a DICOM JSON tag (8 hex digits)")
        tag = int(key, 16)
        name = _Name(where, tag)
        if not isinstance(elem, dict):
            raise InvalidRequest(f"{name}: each attribute must be a JSON object with a 'vr'")
        vr = elem.get("vr")
        if vr not in _KNOWN_VRS:
            raise InvalidAttributeValue(f"{name}: '{vr}' is not a DICOM Value Representation",
                                        attribute=key)
        if tag >> 16 == 0 or (tag & 0xFFFF) == 0:
            raise NoSuchAttribute(f"{name}: command and group length elements are not allowed "
                                  "in a dataset", attribute=key)
        if not (tag >> 16) % 2:  # public tag
            expected = _dictionary_vr(tag)
            if expected is None:
                raise NoSuchAttribute(f"{name} is not an attribute of the DICOM data dictionary",
                                      attribute=key)
            if vr not in expected.split(" or ") and not (vr == "UN"):
                raise InvalidAttributeValue(f"{name} has VR {vr}; the data dictionary says "
                                            f"{expected}", attribute=key)
            if vr == "UN":
                raise InvalidAttributeValue(f"{name} has VR UN; send it with its VR {expected}",
                                            attribute=key)
        value = elem.get("Value")
        extra = set(elem) - {"vr", "Value", "InlineBinary", "BulkDataURI"}
        if extra:
            raise InvalidRequest(f"{name}: unexpected member(s) {sorted(extra)}")
        if value is None:
            continue
        if not isinstance(value, list):
            raise InvalidAttributeValue(f"{name}: 'Value' must be a JSON array", attribute=key)
        if vr == "SQ":
            for i, item in enumerate(value):
                if not isinstance(item, dict):
                    raise InvalidAttributeValue(f"{name} item {i + 1} is not a JSON object",
                                                attribute=key)
                _check_json(item, depth + 1, _Name(where, tag, i + 1))
        elif vr == "PN":
            for v in value:
                if v is not None and not (isinstance(v, dict) and set(v) <= {
                        "Alphabetic", "Ideographic", "Phonetic"}
                        and all(isinstance(x, str) for x in v.values())):
                    raise InvalidAttributeValue(f"{name}: a PN value must be an object with "
                                                "Alphabetic/Ideographic/Phonetic strings",
                                                attribute=key)
                for group in (v or {}).values():
                    if group:
                        _validate_value("PN", group, name)
        elif vr in _NUMBER_VRS:
            for v in value:
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
                    raise InvalidAttributeValue(f"{name}: VR {vr} values must be numbers",
                                                attribute=key)
                if v is not None and not _number_fits(vr, v):
                    # PS3.5 6.2: binary numbers of fixed size; a value that does not fit
                    # could be stored but never encoded for a DIMSE peer.
                    raise InvalidAttributeValue(f"{name}: {v!r} is not a valid VR {vr} value "
                                                f"({_NUMBER_RANGES[vr]})", attribute=key)
        elif vr in ("DS", "IS"):
            for v in value:
                if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float, str))):
                    raise InvalidAttributeValue(f"{name}: VR {vr} values must be numbers",
                                                attribute=key)
                if isinstance(v, str) and v.strip():
                    _validate_value(vr, v, name)
        elif vr in _STRING_VRS or vr == "AT":
            for v in value:
                if v is not None and not isinstance(v, str):
                    raise InvalidAttributeValue(f"{name}: VR {vr} values must be strings",
                                                attribute=key)
                if v and vr != "AT":
                    _validate_value(vr, v, name)
        else:
            raise InvalidAttributeValue(f"{name}: VR {vr} carries InlineBinary, not Value",
                                        attribute=key)


def validate_dataset(ds: Dataset, where: str = "") -> None:
    """Validate every value against its VR (PS3.5 6.2), recursing into sequences."""
    for elem in ds:
        name = where + attribute_name(elem.tag)
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value):
                validate_dataset(item, f"{name} item {i + 1} > ")
            continue
        values = elem.value if isinstance(elem.value, (list, MultiValue)) else [elem.value]
        for v in values:
            if v is None or v == "":
                continue
            _validate_value(elem.VR, v, name)


_INT_BOUNDS = {"US": (0, 2**16 - 1), "SS": (-2**15, 2**15 - 1), "UL": (0, 2**32 - 1),
               "SL": (-2**31, 2**31 - 1), "UV": (0, 2**64 - 1), "SV": (-2**63, 2**63 - 1)}
_FL_MAX = 3.4028234663852886e38
_NUMBER_RANGES = {**{vr: f"integers from {lo} to {hi}" for vr, (lo, hi) in _INT_BOUNDS.items()},
                  "FL": "finite 32-bit floating point numbers",
                  "FD": "finite 64-bit floating point numbers"}


def _number_fits(vr: str, v: int | float) -> bool:
    if vr in _INT_BOUNDS:
        low, high = _INT_BOUNDS[vr]
        return isinstance(v, int) and low <= v <= high
    return math.isfinite(v) and (vr != "FL" or abs(v) <= _FL_MAX)


def _validate_value(vr: str, v: Any, name: str) -> None:
    if isinstance(v, str) and (_TEXT_CONTROL if vr in ("LT", "ST", "UT") else _CONTROL).search(v):
        raise InvalidAttributeValue(f"{name}: invalid {vr} value {v!r}: control characters "
                                    "other than ESC (and TAB, LF, FF, CR in LT, ST, UT) are "
                                    "not allowed (PS3.5 6.1.3)")
    try:
        if vr in ("DA", "DT", "TM"):
            text = str(v)
            if vr == "DA":
                _parse_da(text)
            elif vr == "TM":
                _parse_tm(text)
            else:
                _parse_dt(text)
        elif vr == "UI":
            check_uid(str(v), "value")
        elif vr in ("PN",):
            validate_value(vr, v, _pdconfig.RAISE)
        elif vr in _STRING_VRS or vr in ("DS", "IS"):
            validate_value(vr, v if vr not in ("DS", "IS") else str(v), _pdconfig.RAISE)
    except (ValueError, InvalidAttributeValue) as exc:
        msg = exc.message if isinstance(exc, InvalidAttributeValue) else str(exc)
        raise InvalidAttributeValue(f"{name}: invalid {vr} value '{v}': {msg}") from None


def _parse_da(text: str) -> _dt.date:
    if not _DA_RE.match(text):
        raise ValueError("a date is YYYYMMDD")
    return _dt.datetime.strptime(text, "%Y%m%d").date()


def _parse_tm(text: str) -> None:
    m = _TM_RE.match(text)
    if not m:
        raise ValueError("a time is HH[MM[SS[.FFFFFF]]]")
    hh, mm, ss = int(m.group(1)), int(m.group(2) or 0), int(m.group(3) or 0)
    if hh > 23 or mm > 59 or ss > 60:
        raise ValueError("hour, minute or second out of range")


def _parse_dt(text: str) -> None:
    m = _DT_RE.match(text)
    if not m:
        raise ValueError("a date-time is YYYY[MM[DD[HH[MM[SS[.FFFFFF]]]]]][&ZZXX]")
    year, month, day = int(m.group(1)), int(m.group(2) or 1), int(m.group(3) or 1)
    _dt.date(year, month, day)
    hh, mm, ss = int(m.group(4) or 0), int(m.group(5) or 0), int(m.group(6) or 0)
    if hh > 23 or mm > 59 or ss > 60:
        raise ValueError("hour, minute or second out of range")
    if m.group(8):
        off = int(m.group(8)[1:3]) * 60 + int(m.group(8)[3:5])
        if off > 14 * 60 or int(m.group(8)[3:5]) > 59:
            raise ValueError("time zone offset out of range")


def normalize_dt(text: str, *, upper: bool = False) -> str:
    """A DT value as a sortable UTC string ``YYYYMMDDHHMMSS.ffffff``.

    Missing components are filled with their earliest value, or with their latest
    when ``upper`` is true (the end of a range).  Values without an offset are taken
    as UTC.  Used for indexed range matching (PS3.4 C.2.2.2.5).
    """
    m = _DT_RE.match(text.strip())
    if not m:
        raise InvalidAttributeValue(f"'{text}' is not a DICOM date-time (YYYYMMDDHHMMSS.FFFFFF&ZZXX)")
    year = int(m.group(1))
    if upper:
        month = int(m.group(2) or 12)
        last_day = ((_dt.date(year + (month == 12), month % 12 + 1, 1) - _dt.timedelta(days=1)).day
                    if year < 9999 or month < 12 else 31)
        parts = (month, int(m.group(3) or last_day), int(m.group(4) or 23), int(m.group(5) or 59),
                 int(m.group(6) or 59))
        frac = (m.group(7) or ".").ljust(7, "9")[1:] if m.group(7) else "999999"
    else:
        parts = (int(m.group(2) or 1), int(m.group(3) or 1), int(m.group(4) or 0),
                 int(m.group(5) or 0), int(m.group(6) or 0))
        frac = (m.group(7) or ".0")[1:].ljust(6, "0")
    try:
        when = _dt.datetime(year, parts[0], parts[1], parts[2], parts[3], min(parts[4], 59),
                            int(frac))
    except ValueError as exc:
        raise InvalidAttributeValue(f"'{text}' is not a valid date-time: {exc}") from None
    if m.group(8):
        sign = 1 if m.group(8)[0] == "+" else -1
        offset = _dt.timedelta(hours=int(m.group(8)[1:3]), minutes=int(m.group(8)[3:5]))
        try:
            when = when - sign * offset
        except OverflowError:
            pass
    return when.strftime("%Y%m%d%H%M%S.%f").rjust(21, "0")


def dataset_to_json_dict(ds: Dataset) -> dict[str, Any]:
    """A Dataset as a DICOM JSON object (PS3.18 F.2)."""
    return ds.to_json_dict(bulk_data_threshold=1 << 30)


def dumps(obj: Any) -> str:
    """Compact JSON text, as sent and stored."""
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)
