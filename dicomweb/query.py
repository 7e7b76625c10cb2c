"""UPS-RS Search query parameters (PS3.18 8.3.4, 11.9) as a C-FIND identifier.

``{attributeID}={value}`` where attributeID is a keyword, eight hex digits, or a
dotted path into sequence items (``00404018.00080100=SEG``); comma-separated values
are a UID list (PS3.18 8.3.4.1).  The identifier then goes to the core's matching
module, exactly as a DIMSE C-FIND identifier does.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from pydicom.datadict import dictionary_VR
from pydicom.dataset import Dataset
from pydicom.valuerep import PersonName

from worklist.dicomjson import attribute_name, parse_tag
from worklist.errors import InvalidRequest

__all__ = ["SearchParameters", "parse_search", "CONTROL_PARAMETERS", "looks_like_attribute"]

CONTROL_PARAMETERS = frozenset({"includefield", "fuzzymatching", "limit", "offset",
                                "emptyvaluematching", "multiplevaluematching", "accept",
                                "charset", "orderby"})
_ATTRIBUTE_RE = re.compile(r"^([A-Z][A-Za-z0-9]*|[0-9A-Fa-f]{8})(\.([A-Z][A-Za-z0-9]*|[0-9A-Fa-f]{8}))*$")


def looks_like_attribute(name: str) -> bool:
    """A parameter name in the form of an attribute ID (keyword, tag or dotted path).

    PS3.18 8.3.4: parameters the origin server does not know are ignored; names in the
    form of an attribute that name no attribute are an error the client should hear of.
    """
    return bool(_ATTRIBUTE_RE.match(name))


@dataclass
class SearchParameters:
    identifier: Dataset
    offset: int = 0
    limit: int | None = None
    fuzzy: bool = False
    include_fields: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _bool(name: str, value: str) -> bool:
    if value.lower() in ("true", ""):
        return True
    if value.lower() == "false":
        return False
    raise InvalidRequest(f"Query parameter {name} must be true or false, not '{value}'")


# SQLite and PostgreSQL take OFFSET as a signed 64-bit integer.
_MAX_OFFSET = 2**63 - 1


def _int(name: str, value: str, minimum: int, maximum: int | None = None) -> int:
    try:
        number = int(value)
    except ValueError:
        raise InvalidRequest(f"Query parameter {name} must be a whole number, not '{value}'") \
            from None
    if number < minimum:
        raise InvalidRequest(f"Query parameter {name} must be at least {minimum}, not {number}")
    if maximum is not None and number > maximum:
        raise InvalidRequest(f"Query parameter {name} must be at most {maximum}, not {number}")
    return number


def parse_search(params: Iterable[tuple[str, str]]) -> SearchParameters:
    """Split the query into control parameters and match keys (PS3.18 8.3.4.1)."""
    out = SearchParameters(Dataset())
    seen: set[str] = set()
    for name, value in params:
        lname = name.lower()
        if lname in CONTROL_PARAMETERS:
            if lname == "limit":
                out.limit = _int(name, value, 1)
            elif lname == "offset":
                out.offset = _int(name, value, 0, _MAX_OFFSET)
            elif lname == "fuzzymatching":
                out.fuzzy = _bool(name, value)
            elif lname == "includefield":
                for part in value.split(","):
                    part = part.strip()
                    if part and part != "all":
                        _path(part)  # an invalid attribute is a 400
                    out.include_fields.append(part)
            continue
        if not looks_like_attribute(name):
            continue  # PS3.18 8.3.4: unknown query parameters are ignored
        path = _path(name)
        key = ".".join(f"{t:08X}" for t in path)
        if key in seen:
            raise InvalidRequest(f"Attribute {name} is repeated in the query: give it once, with "
                                 "comma-separated values for a UID list (PS3.18 8.3.4.1)")
        seen.add(key)
        _set(out.identifier, path, value)
    return out


def _path(name: str) -> list[int]:
    tags = [parse_tag(part) for part in name.split(".")]
    for tag in tags:
        try:
            dictionary_VR(tag)
        except KeyError:
            if (tag >> 16) % 2:
                raise InvalidRequest(f"Private attribute {attribute_name(tag)} cannot be "
                                     "searched") from None
            raise InvalidRequest(f"{name}: ({tag >> 16:04X},{tag & 0xFFFF:04X}) is not an "
                                 "attribute of the DICOM data dictionary") from None
    for tag in tags[:-1]:
        if dictionary_VR(tag) != "SQ":
            raise InvalidRequest(f"{name}: {attribute_name(tag)} is not a sequence, so it "
                                 "cannot be followed by '.'")
    return tags


def _set(ds: Dataset, path: list[int], value: str) -> None:
    for tag in path[:-1]:
        if tag not in ds:
            ds.add_new(tag, "SQ", [Dataset()])
        ds = ds[tag].value[0]
    tag = path[-1]
    vr = dictionary_VR(tag).split(" or ")[0]
    if vr == "SQ":
        if value:
            raise InvalidRequest(f"{attribute_name(tag)} is a sequence: match on its items' "
                                 "attributes with a dotted path")
        ds.add_new(tag, "SQ", [])
        return
    if vr == "UI":
        value = "\\".join(v.strip() for v in value.split(","))
    elif "," in value and vr not in ("LT", "ST", "UT", "UC"):
        raise InvalidRequest(f"{attribute_name(tag)}: several values are allowed only for UID "
                             "keys (PS3.18 8.3.4.1)")
    if vr == "PN":
        ds.add_new(tag, vr, PersonName(value) if value else "")
    elif vr in ("US", "SS", "UL", "SL", "FL", "FD", "SV", "UV", "AT", "OB", "OW", "OF", "OD",
                "OL", "OV", "UN"):
        raise InvalidRequest(f"{attribute_name(tag)} (VR {vr}) cannot be used as a matching key")
    else:
        ds.add_new(tag, vr, value)
