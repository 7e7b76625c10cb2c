"""Attribute matching for the UPS Worklist search (PS3.4 C.2.2.2, CC.2.8.3).

One condition class per matching type of PS3.4 C.2.2.2, each with the Python test of
a stored value.  :func:`parse_identifier` turns a C-FIND identifier (or the identifier
that UPS-RS builds from its query parameters) into a :class:`Query`; the store turns
the conditions it has indexed columns for into SQL (:func:`sql_condition`), and the
Python test remains the authority for every other key, so no key is ever ignored.
Both DIMSE C-FIND and UPS-RS Search call this module.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from .dicomjson import _parse_da, _parse_dt, _parse_tm, attribute_name, normalize_dt
from .errors import InvalidAttributeValue, InvalidRequest

__all__ = [
    "Condition", "Universal", "SingleValue", "ListOfUID", "Wildcard", "Range", "EmptyValue",
    "SequenceMatch", "Query", "parse_identifier", "parse_condition",
    "normalize_text", "person_name_text", "IGNORED_KEYS",
]

# Keys a C-FIND identifier may carry that are not matching keys of the UPS IOD
# (PS3.4 CC.2.8.3 has no Query/Retrieve Level; some toolkits add one anyway).
IGNORED_KEYS = frozenset({0x00080005, 0x00080052, 0x00080056})  # SCS, QR level, availability
_WILDCARD_VRS = frozenset({"AE", "CS", "LO", "LT", "PN", "SH", "ST", "UC", "UR", "UT"})
_RANGE_VRS = frozenset({"DA", "TM", "DT"})
# PS3.5 6.2: leading spaces are insignificant for these VRs, trailing ones for all text.
_LEADING_INSIGNIFICANT = frozenset({"AE", "CS", "DS", "IS", "LO", "SH", "DA", "DT", "TM"})
_TEXT_VRS = _WILDCARD_VRS | _RANGE_VRS | {"AS", "DS", "IS", "UI"}


def normalize_text(value: Any, vr: str) -> str:
    """A stored or requested text value without its insignificant padding."""
    text = str(value)
    text = text.rstrip(" \x00")
    return text.lstrip(" ") if vr in _LEADING_INSIGNIFICANT else text


def person_name_text(value: Any) -> str:
    """The Alphabetic group of a PN value (the group searched by default)."""
    if isinstance(value, PersonName):
        return (value.alphabetic or "").rstrip(" ")
    if isinstance(value, dict):
        return str(value.get("Alphabetic", "")).rstrip(" ")
    return str(value).split("=")[0].rstrip(" ")


@dataclass(frozen=True)
class Condition:
    """A matching key: the attribute (tag, VR) and how its values are matched.

    Stored workitems are DICOM JSON objects (PS3.18 F.2); :meth:`matches` takes one.
    """

    tag: int
    vr: str

    def test(self, values: Sequence[Any]) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError

    def matches(self, ds: dict[str, Any]) -> bool:
        elem = ds.get(f"{self.tag:08X}")
        if not elem:
            return self.test(())
        return self.test([v for v in (elem.get("Value") or ()) if v is not None and v != ""])


@dataclass(frozen=True)
class Universal(Condition):
    """PS3.4 C.2.2.2.3 Universal Matching: a zero-length key matches every instance."""

    def test(self, values: Sequence[Any]) -> bool:
        return True

    def matches(self, ds: dict[str, Any]) -> bool:
        return True


@dataclass(frozen=True)
class EmptyValue(Condition):
    """PS3.4 C.2.2.2.1.1 Empty Value Matching: the key ``""`` matches only instances where
    the attribute is absent or has no value."""

    def test(self, values: Sequence[Any]) -> bool:
        return not values


@dataclass(frozen=True)
class SingleValue(Condition):
    """PS3.4 C.2.2.2.1 Single Value Matching: exact and case-sensitive, except PN values
    when fuzzy matching was asked for (then case-insensitive)."""

    value: str = ""
    case_insensitive: bool = False

    def test(self, values: Sequence[Any]) -> bool:
        key = self.value.casefold() if self.case_insensitive else self.value
        for v in values:
            text = person_name_text(v) if self.vr == "PN" else normalize_text(v, self.vr)
            if self.case_insensitive:
                text = text.casefold()
            if text == key:
                return True
        return False


@dataclass(frozen=True)
class ListOfUID(Condition):
    """PS3.4 C.2.2.2.2 List of UID Matching: any of the backslash-separated UIDs."""

    uids: frozenset[str] = frozenset()

    def test(self, values: Sequence[Any]) -> bool:
        return any(normalize_text(v, "UI") in self.uids for v in values)


@dataclass(frozen=True)
class Wildcard(Condition):
    """PS3.4 C.2.2.2.4 Wildcard Matching: ``*`` any run of characters, ``?`` one."""

    pattern: str = ""
    case_insensitive: bool = False
    regex: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # Case-insensitive (fuzzy PN) matching compares case-folded texts, like
        # SingleValue and the SQL "folded" columns: re.IGNORECASE alone would let
        # "?" match "ß" but not "SS" match it, and so disagree with both.
        pattern = self.pattern.casefold() if self.case_insensitive else self.pattern
        body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c)
                       for c in pattern)
        object.__setattr__(self, "regex", re.compile(body + r"\Z", re.DOTALL))

    def test(self, values: Sequence[Any]) -> bool:
        for v in values:
            text = person_name_text(v) if self.vr == "PN" else normalize_text(v, self.vr)
            if self.regex.match(text.casefold() if self.case_insensitive else text):
                return True
        return False

    def like_pattern(self) -> str:
        """The pattern for SQL ``LIKE ... ESCAPE '\\'``."""
        out = []
        for c in self.pattern:
            if c in "%_\\":
                out.append("\\" + c)
            else:
                out.append("%" if c == "*" else "_" if c == "?" else c)
        text = "".join(out)
        return text.casefold() if self.case_insensitive else text


@dataclass(frozen=True)
class Range(Condition):
    """PS3.4 C.2.2.2.5 Range Matching for DA, TM and DT: ``a-b``, ``a-``, ``-b``.

    Bounds are kept normalised (dates as YYYYMMDD, times as HHMMSS.FFFFFF, date-times
    as UTC YYYYMMDDHHMMSS.FFFFFF) so Python and SQL compare the same strings.  A single
    date or time value is the range of its own precision (PS3.4 C.2.2.2.1).
    """

    low: str | None = None
    high: str | None = None

    def test(self, values: Sequence[Any]) -> bool:
        for v in values:
            try:
                text = normalize_stored(v, self.vr)
            except (ValueError, InvalidAttributeValue):
                continue
            if (self.low is None or text >= self.low) and (self.high is None or text <= self.high):
                return True
        return False


@dataclass(frozen=True)
class SequenceMatch(Condition):
    """PS3.4 C.2.2.2.6 Sequence Matching: an instance matches when *any* item of its
    sequence matches every key of the identifier's item (dcm4chee #3567 tested only the
    first item; we test them all)."""

    conditions: tuple[Condition, ...] = ()

    def test(self, values: Sequence[Any]) -> bool:
        return any(all(c.matches(item) for c in self.conditions) for item in values)


def normalize_stored(value: Any, vr: str) -> str:
    """A stored DA/TM/DT value in the normalised form of :class:`Range`."""
    text = normalize_text(value, vr)
    if vr == "DA":
        _parse_da(text)
        return text
    if vr == "TM":
        return _normalize_tm(text)
    return normalize_dt(text)


def _normalize_tm(text: str, upper: bool = False) -> str:
    text = text.replace(":", "")
    _parse_tm(text)
    whole, _, frac = text.partition(".")
    fill = "235959" if upper else "000000"
    whole = whole + fill[len(whole):]
    # A given fraction is a precision as well (as in normalize_dt): the upper bound of
    # ".1" is ".199999" (PS3.4 C.2.2.2.1.3: matched by meaning, not as strings).
    frac = frac.ljust(6, "9" if upper else "0") if frac else ("999999" if upper else "000000")
    return f"{whole}.{frac}"


def _range_bounds(text: str, vr: str) -> tuple[str | None, str | None]:
    def norm(part: str, upper: bool) -> str:
        if vr == "DA":
            _parse_da(part)
            return part
        if vr == "TM":
            return _normalize_tm(part, upper)
        return normalize_dt(part, upper=upper)

    try:
        low_text, high_text = _split_range(text, vr)
        if high_text is None:
            return norm(text, False), norm(text, True)
        low = norm(low_text, False) if low_text else None
        high = norm(high_text, True) if high_text else None
        if low is None and high is None:
            raise InvalidRequest(f"'{text}' is not a {vr} range")
        if low is not None and high is not None and low > high:
            raise InvalidAttributeValue(f"'{text}': the range ends before it starts")
        return low, high
    except ValueError as exc:
        raise InvalidAttributeValue(f"'{text}' is not a valid {vr} value or range: {exc}") from None


def _split_range(text: str, vr: str) -> tuple[str, str | None]:
    """Split ``a-b`` for DA/TM/DT; a DT may carry ``-ZZXX`` offsets of its own."""
    if vr != "DT":
        if text.count("-") != 1:
            return text, None
        low, high = text.split("-")
        return low, high
    # A DT offset is [+-]HHMM right after the seconds; a range dash is followed by a
    # year (4 digits then more digits or the end) or stands at either end.
    for i, c in enumerate(text):
        if c != "-":
            continue
        left, right = text[:i], text[i + 1:]
        if len(right) == 4 and right.isdigit() and _is_single_dt(text):
            # PS3.5 6.2: "-ZZXX" at the end of a valid DT is its UTC offset (e.g.
            # 20261122090000-0500), not a range up to the year ZZXX.
            continue
        if _is_dt(left) and _is_dt(right):
            return left, right
    if text.startswith("-") and _is_dt(text[1:]):
        return "", text[1:]
    if text.endswith("-") and _is_dt(text[:-1]):
        return text[:-1], ""
    return text, None


def _is_single_dt(text: str) -> bool:
    """Whether ``text`` is one DT value (with a UTC offset in range, PS3.5 6.2)."""
    try:
        _parse_dt(text)
        return True
    except ValueError:
        return False


def _is_dt(text: str) -> bool:
    if not text:
        return True
    try:
        normalize_dt(text)
        return True
    except InvalidAttributeValue:
        return False


def parse_condition(tag: int, vr: str, raw: Any, *, fuzzy: bool = False) -> Condition:
    """The condition a key's value asks for, chosen by PS3.4 C.2.2.2."""
    name = attribute_name(tag)
    if vr == "SQ":
        items = list(raw or [])
        if not items or len(items[0]) == 0:
            return Universal(tag, vr)  # PS3.4 C.2.2.2.6: empty item = universal
        if len(items) > 1:
            raise InvalidRequest(f"{name}: a sequence matching key holds exactly one item")
        return SequenceMatch(tag, vr, tuple(_item_conditions(items[0], fuzzy)))
    if isinstance(raw, (list, MultiValue)):
        if vr == "UI":
            raw = "\\".join(str(v) for v in raw)
        elif len(raw) == 0:
            raw = ""
        elif len(raw) == 1:
            raw = raw[0]
        else:
            raise InvalidRequest(f"{name}: only UID keys may hold several values (PS3.4 "
                                 "C.2.2.2.2)")
    if raw is None:
        return Universal(tag, vr)
    text = (person_name_text(raw) if vr == "PN" else str(raw)).rstrip("\x00")  # UI padding
    if "\x00" in text:
        # No stored value holds one (PS3.5 6.1.3), and PostgreSQL cannot compare it.
        raise InvalidRequest(f"{name}: the value contains a NUL character")
    if text == '""':
        return EmptyValue(tag, vr)
    text = normalize_text(text, vr) if vr != "PN" else text
    if text == "" or (text == "*" and vr in _WILDCARD_VRS):
        return Universal(tag, vr)
    if vr == "UI":
        uids = frozenset(u.strip() for u in text.split("\\"))
        return ListOfUID(tag, vr, uids) if len(uids) > 1 else SingleValue(tag, vr, next(iter(uids)))
    if vr in _RANGE_VRS:
        low, high = _range_bounds(text, vr)
        return Range(tag, vr, low, high)
    insensitive = fuzzy and vr == "PN"
    if vr in _WILDCARD_VRS and ("*" in text or "?" in text):
        return Wildcard(tag, vr, text, insensitive)
    if vr not in _TEXT_VRS and vr != "PN":
        raise InvalidRequest(f"{name}: VR {vr} attributes cannot be used as matching keys")
    return SingleValue(tag, vr, text, insensitive)


def _item_conditions(item: Dataset, fuzzy: bool) -> Iterable[Condition]:
    for elem in item:
        if elem.tag in IGNORED_KEYS:
            continue
        yield parse_condition(elem.tag, elem.VR, elem.value, fuzzy=fuzzy)


@dataclass(frozen=True)
class Query:
    """A parsed Worklist search: its conditions and the keys to return."""

    conditions: tuple[Condition, ...]
    return_tags: tuple[int, ...]
    fuzzy: bool = False

    def matches(self, ds: Dataset | dict[str, Any]) -> bool:
        """Whether a workitem (DICOM JSON object, or a Dataset) matches every key."""
        if isinstance(ds, Dataset):
            ds = ds.to_json_dict()
        return all(c.matches(ds) for c in self.conditions)

    @property
    def filtering(self) -> tuple[Condition, ...]:
        """The conditions that exclude anything (universal ones do not)."""
        return tuple(c for c in self.conditions if not isinstance(c, Universal))


def parse_identifier(identifier: Dataset, *, fuzzy: bool = False) -> Query:
    """A C-FIND identifier (PS3.4 CC.2.8.3) as a :class:`Query`."""
    conditions = []
    tags = []
    for elem in identifier:
        if elem.tag in IGNORED_KEYS:
            continue
        if elem.tag == 0x00081195:
            raise InvalidRequest("Transaction UID (0008,1195) is never returned nor matched "
                                 "(PS3.4 CC.2.8.3)")
        conditions.append(parse_condition(elem.tag, elem.VR, elem.value, fuzzy=fuzzy))
        tags.append(elem.tag)
    return Query(tuple(conditions), tuple(tags), fuzzy)
