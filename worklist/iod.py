"""Checks of a workitem dataset against PS3.4 Table CC.2.5-3.

* :func:`check_create` - the N-CREATE column (CC.2.5.1): Type 1 present with a value,
  Type 2 present, "not allowed" attributes absent, in items too.
* :func:`check_update` - the N-SET column (CC.2.6.2): only attributes the table allows,
  sequences replaced whole and complete.
* :func:`check_final_state` - the Final State column (CC.2.5.1.1) before COMPLETED or
  CANCELED.

Each raises the domain error of the first kind of problem found, naming every
attribute with that problem, so one answer tells a client all it must fix.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from typing import Any

from pydicom.datadict import dictionary_VM

from . import errors
from .dicomjson import first, has_value, key_keyword, tag_key, values
from .ups_table import BY_KEYWORD, UPS_ATTRIBUTES, Requirement

# Each check works on the DICOM JSON object (PS3.18 F.2) the service stores; a pydicom
# Dataset is accepted too and converted.
Json = dict[str, Any]


def _json(ds: Any) -> Json:
    return ds if isinstance(ds, dict) else ds.to_json_dict()
from .values import (InputReadinessStateValues, ProcedureStepStateValues,
                     ScheduledProcedureStepPriorityValues)

__all__ = ["check_create", "check_update", "check_final_state", "missing_for_final_state"]

# Attributes whose value the Standard enumerates (PS3.3 C.30.1).
_ENUMERATED = {
    "ScheduledProcedureStepPriority": {v.value for v in ScheduledProcedureStepPriorityValues},
    "InputReadinessState": {v.value for v in InputReadinessStateValues},
    "ProcedureStepState": {v.value for v in ProcedureStepStateValues},
}
# Carried in the DIMSE command or the URL, or maintained by the SCP itself
# (PS3.4 CC.2.5.3), so not refused as dataset content at creation.
_SCP_MANAGED = {"SOPClassUID", "SOPInstanceUID", "TransactionUID", "ProcedureStepState",
                "ScheduledProcedureStepModificationDateTime"}


def _items(ds: Json, keyword: str) -> list[Json]:
    elem = ds.get(tag_key(keyword))
    if not elem or elem.get("vr") != "SQ":
        return []
    return [i for i in (elem.get("Value") or []) if isinstance(i, dict)]


@functools.lru_cache(maxsize=None)
def _single_valued(keyword: str) -> bool:
    return dictionary_VM(keyword) == "1"


def _too_many_values(ds: Json, keyword: str) -> bool:
    """More than one value in an attribute of VM 1 (PS3.6).  The store indexes the one
    value of such attributes, so a second one would be matched in Python but not in SQL."""
    elem = ds.get(tag_key(keyword)) or {}
    return (elem.get("vr") != "SQ" and _single_valued(keyword)
            and len(values(ds, keyword)) > 1)


def _walk(ds: Json, rows: Iterable[Requirement], column: str, where: str,
          problems: dict[type[errors.UPSError], list[str]]) -> None:
    for row in rows:
        need = getattr(row, column)
        name = where + row.keyword
        present = tag_key(row.keyword) in ds
        if need == "-":
            if present and not (where == "" and row.keyword in _SCP_MANAGED):
                problems.setdefault(errors.NoSuchAttribute, []).append(name)
            continue
        if need == "1" and not present:
            problems.setdefault(errors.MissingAttribute, []).append(name)
        elif need == "1" and not has_value(ds, row.keyword):
            problems.setdefault(errors.MissingAttributeValue, []).append(name)
        elif need == "2" and not present and row.keyword != "TransactionUID":
            # Transaction UID is the claim's lock, not content: PS3.18 11.4 clients leave
            # it out, DIMSE clients send it empty; both mean "not claimed".
            problems.setdefault(errors.MissingAttribute, []).append(name)
        if present and row.keyword in _ENUMERATED and has_value(ds, row.keyword):
            if str(first(ds, row.keyword)) not in _ENUMERATED[row.keyword]:
                problems.setdefault(errors.InvalidAttributeValue, []).append(
                    f"{name} (must be one of {', '.join(sorted(_ENUMERATED[row.keyword]))})")
        if present and _too_many_values(ds, row.keyword):
            problems.setdefault(errors.InvalidAttributeValue, []).append(
                f"{name} (takes one value: VM 1, PS3.6)")
        if present and row.items:
            for i, item in enumerate(_items(ds, row.keyword), 1):
                _walk(item, row.items, column, f"{name}[{i}] > ", problems)


_ORDER = (errors.NoSuchAttribute, errors.MissingAttribute, errors.MissingAttributeValue,
          errors.InvalidAttributeValue)
_WHAT = {
    errors.NoSuchAttribute: "not allowed in {op} (PS3.4 Table CC.2.5-3)",
    errors.MissingAttribute: "required in {op} but absent (PS3.4 Table CC.2.5-3, Type 1/2)",
    errors.MissingAttributeValue: "required to have a value in {op} (Type 1)",
    errors.InvalidAttributeValue: "invalid",
}


def _raise(problems: dict[type[errors.UPSError], list[str]], op: str) -> None:
    for cls in _ORDER:
        if cls in problems:
            names = problems[cls]
            raise cls(f"{'Attribute' if len(names) == 1 else 'Attributes'} "
                      f"{', '.join(names)} {_WHAT[cls].format(op=op)}", attribute=names[0])


def check_create(ds: Json) -> None:
    """PS3.4 CC.2.5.1 / Table CC.2.5-3 N-CREATE column, and CC.2.5.3 (state SCHEDULED,
    Transaction UID empty)."""
    ds = _json(ds)
    if tag_key("ProcedureStepState") not in ds:
        raise errors.MissingAttribute("Procedure Step State (0074,1000) is required at creation "
                                      "and must be SCHEDULED", attribute="ProcedureStepState")
    state = first(ds, "ProcedureStepState") or ""
    if str(state) != ProcedureStepStateValues.SCHEDULED.value:
        raise errors.NotScheduledAtCreate(
            f"Procedure Step State is '{state}': a workitem is created SCHEDULED "
            "(PS3.4 CC.2.5.3)", attribute="ProcedureStepState")
    if has_value(ds, "TransactionUID"):
        raise errors.InvalidAttributeValue("Transaction UID (0008,1195) must be empty at creation: "
                                           "it is set when a performer claims the workitem",
                                           attribute="TransactionUID")
    problems: dict[type[errors.UPSError], list[str]] = {}
    _walk(ds, UPS_ATTRIBUTES, "create", "", problems)
    _raise(problems, "N-CREATE")


def check_update(ds: Json) -> None:
    """PS3.4 CC.2.6.2 / Table CC.2.5-3 N-SET column."""
    ds = _json(ds)
    problems: dict[type[errors.UPSError], list[str]] = {}
    for key, elem in ds.items():
        kw = key_keyword(key)
        row = BY_KEYWORD.get(kw)
        if row is None:
            continue
        if kw == "ProcedureStepState":
            raise errors.NoSuchAttribute("Procedure Step State cannot be set by an update: change "
                                         "it with the Change State transaction (N-ACTION)",
                                         attribute=kw)
        if kw in _SCP_MANAGED:
            continue  # handled by the service: overwritten or compared with the stored value
        if row.set == "-":
            problems.setdefault(errors.NoSuchAttribute, []).append(kw)
            continue
        if row.create == "1" and not has_value(ds, kw):
            problems.setdefault(errors.MissingAttributeValue, []).append(kw)
        if kw in _ENUMERATED and has_value(ds, kw) and str(first(ds, kw)) not in _ENUMERATED[kw]:
            problems.setdefault(errors.InvalidAttributeValue, []).append(
                f"{kw} (must be one of {', '.join(sorted(_ENUMERATED[kw]))})")
        if _too_many_values(ds, kw):
            problems.setdefault(errors.InvalidAttributeValue, []).append(
                f"{kw} (takes one value: VM 1, PS3.6)")
        if row.items:
            for i, item in enumerate(_items(ds, kw), 1):
                _walk(item, row.items, "set", f"{kw}[{i}] > ", problems)
    _raise(problems, "N-SET")


def _final_rows(rows: Iterable[Requirement], ds: Json, target: str, where: str,
                missing: list[str]) -> None:
    wanted = {"R", "P"} if target == ProcedureStepStateValues.COMPLETED.value else {"R", "X"}
    for row in rows:
        name = where + row.keyword
        if row.final in wanted:
            # A sequence that is Type 2 in N-SET (e.g. Output Information Sequence) must be
            # present but may be empty; anything else needs a value.
            may_be_empty = row.items and row.set == "2"
            if tag_key(row.keyword) not in ds or (not may_be_empty
                                                  and not has_value(ds, row.keyword)):
                missing.append(name)
                continue
        if row.items and row.final != "O":
            for i, item in enumerate(_items(ds, row.keyword), 1):
                _final_rows(row.items, item, target, f"{name}[{i}] > ", missing)


def missing_for_final_state(ds: Json, target: str) -> list[str]:
    """Attributes the Final State column requires for ``target`` that ``ds`` lacks."""
    missing: list[str] = []
    _final_rows(UPS_ATTRIBUTES, _json(ds), target, "", missing)
    return [m for m in missing if m not in ("TransactionUID",)]


def check_final_state(ds: Json, target: str) -> None:
    """PS3.4 CC.2.5.1.1: refuse COMPLETED/CANCELED (C304) until the requirements are met."""
    missing = missing_for_final_state(ds, target)
    if missing:
        raise errors.FinalStateRequirementsNotMet(
            f"The workitem cannot become {target}: it lacks {', '.join(missing)} "
            "(PS3.4 Table CC.2.5-3, Final State column)", attribute=missing[0])
