"""DICOM JSON straight to DICOM Little Endian bytes, for C-FIND responses.

The worklist stores workitems as DICOM JSON.  Building a pydicom Dataset from JSON and
encoding it costs about 1 ms per workitem, more than pynetdicom's own cost of sending
it; writing the bytes directly from the JSON object takes a tenth of that.  The encoder
covers what UPS workitems hold (text, person names, numbers, tags, sequences) in
Implicit and Explicit VR Little Endian; for anything else (Big Endian, DS/IS given as
JSON numbers, binary VRs, a character set other than the default or UTF-8 holding
non-ASCII text, a value too long for a 16-bit length) it answers ``None`` and the
caller falls back to pydicom.  Its output is byte-for-byte what pydicom writes
(tests/integration/test_dimse.py checks it).

PS3.5 7.1.2 (Explicit VR), 7.1.3 (Implicit VR), 7.5 (items with explicit length), 6.2
(padding: UI with NUL, other text with a space).
"""

from __future__ import annotations

import struct
from typing import Any

from pydicom.valuerep import IS, DSfloat

__all__ = ["encode_json"]

# PS3.5 Table 7.1-1: VRs with a 2-byte length in Explicit VR.
_SHORT = frozenset({"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT",
                    "PN", "SH", "SL", "SS", "ST", "TM", "UI", "UL", "US"})
_ASCII_TEXT = frozenset({"AE", "AS", "CS", "DA", "DS", "DT", "IS", "TM", "UI", "UR"})
_CHARSET_TEXT = frozenset({"LO", "LT", "SH", "ST", "UC", "UT"})
_NUMBERS = {"US": "<H", "SS": "<h", "UL": "<L", "SL": "<l", "FL": "<f", "FD": "<d",
            "SV": "<q", "UV": "<Q"}
_ITEM = b"\xfe\xff\x00\xe0"
_SCS_KEY = "00080005"


class _Unsupported(Exception):
    """Outside the fast path: use pydicom."""


def encode_json(obj: dict[str, Any], implicit: bool) -> bytes | None:
    """``obj`` (a DICOM JSON object) as Little Endian bytes, or ``None`` (see above)."""
    scs = (obj.get(_SCS_KEY) or {}).get("Value") or []
    if not scs or scs == [""]:
        codec = "ascii"
    elif scs == ["ISO_IR 192"]:
        codec = "utf-8"
    else:
        codec = "ascii"  # other character sets: only while the text is ASCII
    try:
        return _dataset(obj, implicit, codec)
    except (_Unsupported, UnicodeEncodeError, struct.error, TypeError, ValueError, KeyError):
        return None


def _dataset(obj: dict[str, Any], implicit: bool, codec: str) -> bytes:
    out = []
    for key in sorted(obj, key=lambda k: int(k, 16)):
        tag = int(key, 16)
        if tag & 0xFFFF == 0:
            continue  # group lengths are not written (PS3.5 7.2)
        elem = obj[key]
        vr = elem["vr"]
        value = _value(vr, elem.get("Value"), implicit, codec)
        head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
        if implicit:
            out.append(head + struct.pack("<L", len(value)))
        elif vr in _SHORT:
            if len(value) > 0xFFFF:
                raise _Unsupported(key)
            out.append(head + vr.encode("ascii") + struct.pack("<H", len(value)))
        else:
            out.append(head + vr.encode("ascii") + b"\0\0" + struct.pack("<L", len(value)))
        out.append(value)
    return b"".join(out)


def _value(vr: str, values: list[Any] | None, implicit: bool, codec: str) -> bytes:
    if not values:
        return b""
    if vr == "SQ":
        items = []
        for item in values:
            data = _dataset(item or {}, implicit, codec)
            items.append(_ITEM + struct.pack("<L", len(data)) + data)
        return b"".join(items)
    if vr == "PN":
        text = "\\".join(_person_name(v) for v in values)
        return _pad(text.encode(codec), b" ")
    if vr in _ASCII_TEXT or vr in _CHARSET_TEXT:
        if vr in ("DS", "IS"):
            values = [_number_text(vr, v) for v in values]  # PS3.18 F.2.3: JSON numbers
        elif any(v is not None and not isinstance(v, str) for v in values):
            raise _Unsupported(vr)
        text = "\\".join("" if v is None else v for v in values)
        data = text.encode("ascii" if vr in _ASCII_TEXT else codec)
        return _pad(data, b"\0" if vr == "UI" else b" ")
    if vr in _NUMBERS:
        if any(v is None or isinstance(v, bool) for v in values):
            raise _Unsupported(vr)
        return b"".join(struct.pack(_NUMBERS[vr], v) for v in values)
    if vr == "AT":
        return b"".join(struct.pack("<HH", int(v, 16) >> 16, int(v, 16) & 0xFFFF)
                        for v in values)
    raise _Unsupported(vr)


def _number_text(vr: str, value: Any) -> str | None:
    """A DS or IS value as pydicom writes it (its own formatting of JSON numbers)."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _Unsupported(vr)
    text = str(DSfloat(value)) if vr == "DS" else str(IS(value))
    if len(text) > (16 if vr == "DS" else 12):
        raise _Unsupported(vr)
    return text


def _person_name(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, dict):
        raise _Unsupported("PN")
    groups = [value.get("Alphabetic", ""), value.get("Ideographic", ""),
              value.get("Phonetic", "")]
    while groups and not groups[-1]:
        groups.pop()
    return "=".join(groups)


def _pad(data: bytes, pad: bytes) -> bytes:
    return data + pad if len(data) % 2 else data
