"""Label sets: the coded picklists annotation tasks use (issue 6, point 1).

A label set is named in ``config/labelsets.toml`` (or the file ``label_sets`` names); a
routing rule names the set its tasks use, and the workitem carries the whole list in its
Scheduled Processing Parameters Sequence (0074,1210), so any client that reads the
workitem (UPS-RS, C-FIND, N-GET) can build the picklist without our configuration.

Encoding in the workitem (PS3.4 Table CC.2.5-3: the sequence's items are the Content
Item Macro, PS3.3 Table 10-2, flat, in order)::

    TEXT (LABELSET, 99WORKLIST, "Label set")                        = set name
    then for each label, in order (its mask value is its position, from 1):
    TEXT (LABEL, 99WORKLIST, "Segmentation label")                  = label name
    CODE (SEGCATEGORY, 99WORKLIST, "Segmented Property Category")   = CID 7150 code
    CODE (SEGTYPE, 99WORKLIST, "Segmented Property Type")           = CID 7151 code
    CODE (363698007, SCT, "Finding Site")                           = anatomic region (optional)
    TEXT (COLOR, 99WORKLIST, "Recommended Display Color")           = "#rrggbb" (optional)

The Standard has no concept codes for these parameters, so the concept names use our
private coding scheme ``99WORKLIST`` (PS3.16 8.2: "99" prefix for private schemes);
the values are standard SCT/DCM codes.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

__all__ = ["Code", "Label", "LabelSet", "LabelSetError", "load_label_sets", "parse_label_sets",
           "to_processing_parameters", "from_processing_parameters", "from_workitem",
           "DEFAULT_LABEL_SETS_FILE", "LABEL_SET_CONCEPT"]

DEFAULT_LABEL_SETS_FILE = Path(__file__).resolve().parent.parent / "config" / "labelsets.toml"

SCHEME = "99WORKLIST"
LABEL_SET_CONCEPT = ("LABELSET", SCHEME, "Label set")
_LABEL = ("LABEL", SCHEME, "Segmentation label")
_CATEGORY = ("SEGCATEGORY", SCHEME, "Segmented Property Category")
_TYPE = ("SEGTYPE", SCHEME, "Segmented Property Type")
_REGION = ("363698007", "SCT", "Finding Site")
_COLOR = ("COLOR", SCHEME, "Recommended Display Color")
_HEX = re.compile(r"^#[0-9a-fA-F]{6}$")


class LabelSetError(ValueError):
    """A label set definition is invalid; the message names the set, label and field."""


@dataclass(frozen=True)
class Code:
    """A coded concept (PS3.3 Table 8.8-1): value, coding scheme designator, meaning."""

    value: str
    scheme: str
    meaning: str

    def to_dataset(self) -> Dataset:
        item = Dataset()
        item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = (
            self.value, self.scheme, self.meaning)
        return item

    @classmethod
    def from_dataset(cls, item: Dataset) -> Code:
        value = item.get("CodeValue") or item.get("LongCodeValue") or item.get("URNCodeValue")
        return cls(str(value or ""), str(item.get("CodingSchemeDesignator", "")),
                   str(item.get("CodeMeaning", "")))

    def same_concept(self, other: Code) -> bool:
        """Codes name the same concept when value and scheme agree (meaning is display)."""
        return (self.value, self.scheme) == (other.value, other.scheme)


@dataclass(frozen=True)
class Label:
    value: int
    """The label's value in a label mask (its 1-based position in the set)."""
    name: str
    category: Code
    type: Code
    region: Code | None = None
    color: str | None = None
    """Recommended display colour, ``#rrggbb``."""

    @property
    def rgb(self) -> tuple[int, int, int] | None:
        if not self.color:
            return None
        return tuple(int(self.color[i:i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


@dataclass(frozen=True)
class LabelSet:
    name: str
    labels: tuple[Label, ...]
    description: str = field(default="", compare=False)

    def by_value(self, value: int) -> Label:
        if not 1 <= value <= len(self.labels):
            raise KeyError(value)
        return self.labels[value - 1]

    def by_name(self, name: str) -> Label:
        for label in self.labels:
            if label.name == name:
                return label
        raise KeyError(name)


# -- reading the configuration ---------------------------------------------------------
def _code(raw: Any, where: str) -> Code:
    if (not isinstance(raw, (list, tuple)) or len(raw) != 3
            or not all(isinstance(x, str) and x.strip() for x in raw)):
        raise LabelSetError(f"{where}: expected [code value, coding scheme, meaning]")
    if len(raw[0]) > 16 or len(raw[1]) > 16 or len(raw[2]) > 64:
        raise LabelSetError(f"{where}: code value and scheme are SH (16 characters), "
                            "meaning LO (64)")
    return Code(raw[0].strip(), raw[1].strip(), raw[2].strip())


def parse_label_sets(raw: dict[str, Any]) -> dict[str, LabelSet]:
    """``{name: {description, labels: [{name, category, type, region?, color?}]}}``."""
    sets: dict[str, LabelSet] = {}
    if not isinstance(raw, dict):
        raise LabelSetError("label_sets must be a table of named sets")
    for set_name, body in raw.items():
        where = f"label set '{set_name}'"
        if not isinstance(body, dict) or not isinstance(body.get("labels"), list):
            raise LabelSetError(f"{where}: needs a 'labels' list")
        if not body["labels"]:
            raise LabelSetError(f"{where}: has no labels")
        unknown = set(body) - {"description", "labels"}
        if unknown:
            raise LabelSetError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        labels = []
        for i, entry in enumerate(body["labels"], start=1):
            lw = f"{where}, label {i}"
            if not isinstance(entry, dict):
                raise LabelSetError(f"{lw}: expected a table")
            bad = set(entry) - {"name", "category", "type", "region", "color"}
            if bad:
                raise LabelSetError(f"{lw}: unknown field(s) {', '.join(sorted(bad))}")
            name = entry.get("name")
            if not isinstance(name, str) or not name.strip() or len(name) > 64:
                raise LabelSetError(f"{lw}: 'name' must be a non-empty text of at most 64 "
                                    "characters (Segment Label is LO)")
            color = entry.get("color")
            if color is not None and (not isinstance(color, str) or not _HEX.match(color)):
                raise LabelSetError(f"{lw} ({name}): 'color' must be '#rrggbb'")
            labels.append(Label(
                i, name.strip(), _code(entry.get("category"), f"{lw} ({name}) category"),
                _code(entry.get("type"), f"{lw} ({name}) type"),
                _code(entry["region"], f"{lw} ({name}) region") if "region" in entry else None,
                color.lower() if color else None))
        names = [label.name for label in labels]
        if len(set(names)) != len(names):
            raise LabelSetError(f"{where}: label names must be unique")
        sets[set_name] = LabelSet(set_name, tuple(labels), str(body.get("description", "")))
    return sets


def load_label_sets(path: str | Path | None = None) -> dict[str, LabelSet]:
    """The label sets of a TOML file (default ``config/labelsets.toml``); ``{}`` when the
    default file is absent."""
    file = Path(path) if path else DEFAULT_LABEL_SETS_FILE
    if not file.exists():
        if path:
            raise LabelSetError(f"label sets file {file} does not exist")
        return {}
    try:
        data = tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise LabelSetError(f"{file}: {exc}") from None
    return parse_label_sets(data.get("label_sets", {}))


# -- the workitem encoding ------------------------------------------------------------------
def _item(concept: tuple[str, str, str], *, text: str | None = None,
          code: Code | None = None) -> Dataset:
    item = Dataset()
    item.ConceptNameCodeSequence = [Code(*concept).to_dataset()]
    if code is not None:
        item.ValueType = "CODE"
        item.ConceptCodeSequence = [code.to_dataset()]
    else:
        item.ValueType = "TEXT"
        item.TextValue = text or ""
    return item


def to_processing_parameters(label_set: LabelSet) -> list[Dataset]:
    """Items for the Scheduled Processing Parameters Sequence (0074,1210)."""
    items = [_item(LABEL_SET_CONCEPT, text=label_set.name)]
    for label in label_set.labels:
        items.append(_item(_LABEL, text=label.name))
        items.append(_item(_CATEGORY, code=label.category))
        items.append(_item(_TYPE, code=label.type))
        if label.region is not None:
            items.append(_item(_REGION, code=label.region))
        if label.color:
            items.append(_item(_COLOR, text=label.color))
    return items


def _concept(item: Dataset) -> tuple[str, str] | None:
    seq = item.get("ConceptNameCodeSequence")
    if not seq:
        return None
    code = Code.from_dataset(seq[0])
    return code.value, code.scheme


def from_processing_parameters(items: Iterable[Dataset]) -> LabelSet | None:
    """The label set a workitem carries, or None.  Tolerant on read: items it does not
    know are skipped; a label without both codes is refused (LabelSetError)."""
    name: str | None = None
    labels: list[dict[str, Any]] = []
    for item in items:
        concept = _concept(item)
        if concept == LABEL_SET_CONCEPT[:2]:
            name = str(item.get("TextValue", ""))
        elif concept == _LABEL[:2]:
            labels.append({"name": str(item.get("TextValue", ""))})
        elif labels and concept in (_CATEGORY[:2], _TYPE[:2], _REGION[:2]):
            seq = item.get("ConceptCodeSequence")
            if seq:
                key = {_CATEGORY[:2]: "category", _TYPE[:2]: "type"}.get(concept, "region")
                labels[-1][key] = Code.from_dataset(seq[0])
        elif labels and concept == _COLOR[:2]:
            labels[-1]["color"] = str(item.get("TextValue", "")) or None
    if name is None:
        return None
    out = []
    for i, entry in enumerate(labels, start=1):
        if "category" not in entry or "type" not in entry:
            raise LabelSetError(f"label set '{name}', label '{entry['name']}': the workitem "
                                "gives no Segmented Property Category or Type code")
        out.append(Label(i, entry["name"], entry["category"], entry["type"],
                         entry.get("region"), entry.get("color")))
    return LabelSet(name, tuple(out))


def from_workitem(ds: Dataset | dict[str, Any]) -> LabelSet | None:
    """The label set of a workitem (pydicom Dataset or DICOM JSON)."""
    if isinstance(ds, dict):
        ds = Dataset.from_json(ds)
    items: Sequence[Dataset] = ds.get("ScheduledProcessingParametersSequence") or []
    return from_processing_parameters(items)
