"""Is a SEG or SR well-formed enough to check and index?  (issue 6, point 5)

Tolerant on read: only what the result index needs is required, each problem naming the
attribute (its Standard name and tag) so the performer's tool can be fixed.  A SEG needs
its Segment Sequence with, per segment, number, label, one category and one type code and
an algorithm type (PS3.3 C.8.20.2); an SR needs a CONTAINER root with a title and content
items that carry the value their Value Type requires (PS3.3 C.17.3, Table C.17-5).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, NamedTuple

from pydicom.datadict import dictionary_description, tag_for_keyword
from pydicom.dataset import Dataset

__all__ = ["Problem", "seg_structure", "sr_structure", "walk", "concept_code", "words"]

_ALGORITHM_TYPES = ("MANUAL", "SEMIAUTOMATIC", "AUTOMATIC")  # PS3.3 C.8.20.2


class Problem(NamedTuple):
    """One reason a result is refused: the text names the object and the attribute;
    ``attribute`` is the keyword the error reports."""

    text: str
    attribute: str


def words(keyword: str) -> str:
    """An attribute's name in the Standard's words (e.g. "Segment Label")."""
    tag = tag_for_keyword(keyword)
    return dictionary_description(tag) if tag is not None else keyword


# -- the checks of form ------------------------------------------------------------------
def seg_structure(ds: Dataset, where: str) -> list[Problem]:
    """PS3.3 C.8.20.2 Segmentation Image Module, Segment Description Macro (C.8.20.4)."""
    segments = ds.get("SegmentSequence")
    if not segments:
        return [Problem(f"{where}: Segment Sequence (0062,0002) is absent or empty",
                        "SegmentSequence")]
    problems = []
    for i, seg in enumerate(segments, start=1):
        at = f"{where}: Segment Sequence item {i}"
        for keyword, tag in (("SegmentNumber", "(0062,0004)"), ("SegmentLabel", "(0062,0005)")):
            if seg.get(keyword) in (None, ""):
                problems.append(Problem(f"{at}: {words(keyword)} {tag} is missing", keyword))
        for keyword, tag in (("SegmentedPropertyCategoryCodeSequence", "(0062,0003)"),
                             ("SegmentedPropertyTypeCodeSequence", "(0062,000F)")):
            codes = seg.get(keyword) or []
            if len(codes) != 1 or not (codes[0].get("CodeValue") or codes[0].get("LongCodeValue")
                                       or codes[0].get("URNCodeValue")) \
                    or not codes[0].get("CodingSchemeDesignator"):
                problems.append(Problem(f"{at}: {words(keyword)} {tag} must hold one code",
                                        keyword))
        kind = seg.get("SegmentAlgorithmType")
        if kind not in _ALGORITHM_TYPES:
            problems.append(Problem(f"{at}: Segment Algorithm Type (0062,0008) is "
                                    f"{kind or '(absent)'}, not MANUAL, SEMIAUTOMATIC or "
                                    "AUTOMATIC", "SegmentAlgorithmType"))
        elif kind != "MANUAL" and not seg.get("SegmentAlgorithmName"):
            problems.append(Problem(f"{at}: Segment Algorithm Name (0062,0009) is required "
                                    f"for a {kind} segment", "SegmentAlgorithmName"))
    return problems


_VALUE_OF = {  # PS3.3 Table C.17-5 (Content Item Macro): the value each value type needs
    "TEXT": ("TextValue", "(0040,A160)"), "CODE": ("ConceptCodeSequence", "(0040,A168)"),
    "PNAME": ("PersonName", "(0040,A123)"), "UIDREF": ("UID", "(0040,A124)"),
    "IMAGE": ("ReferencedSOPSequence", "(0008,1199)"),
    "COMPOSITE": ("ReferencedSOPSequence", "(0008,1199)"),
}


def sr_structure(ds: Dataset, where: str) -> list[Problem]:
    """PS3.3 C.17.3 SR Document Content Module: a CONTAINER root with a concept name and
    content items whose values their Value Type requires (Table C.17-5, C.18.1)."""
    if ds.get("ValueType") != "CONTAINER":
        return [Problem(f"{where}: Value Type (0040,A040) of the document root is "
                        f"{ds.get('ValueType') or '(absent)'}, not CONTAINER", "ValueType")]
    if not ds.get("ConceptNameCodeSequence"):
        return [Problem(f"{where}: the document title, Concept Name Code Sequence (0040,A043), "
                        "is missing", "ConceptNameCodeSequence")]
    if not ds.get("ContentSequence"):
        return [Problem(f"{where}: Content Sequence (0040,A730) is absent or empty",
                        "ContentSequence")]
    problems: list[Problem] = []
    for path, item in walk(ds.get("ContentSequence"), ""):
        at = f"{where}: content item {path}"
        if "ReferencedContentItemIdentifier" in item:
            continue  # by-reference relationship (PS3.3 C.17.3.2.5)
        vtype = item.get("ValueType")
        if not item.get("RelationshipType") or not vtype:
            problems.append(Problem(f"{at}: Relationship Type (0040,A010) and Value Type "
                                    "(0040,A040) are required", "ContentSequence"))
            continue
        concept = item.get("ConceptNameCodeSequence")
        name = f" ({vtype} '{concept[0].get('CodeMeaning', '')}')" if concept else f" ({vtype})"
        if vtype == "NUM":
            measured = item.get("MeasuredValueSequence")
            if "MeasuredValueSequence" not in item:
                problems.append(Problem(f"{at}{name}: Measured Value Sequence (0040,A300) is "
                                        "missing", "MeasuredValueSequence"))
            elif measured and (measured[0].get("NumericValue") in (None, "")
                               or not measured[0].get("MeasurementUnitsCodeSequence")):
                problems.append(Problem(f"{at}{name}: Measured Value Sequence (0040,A300) needs "
                                        "Numeric Value (0040,A30A) and Measurement Units Code "
                                        "Sequence (0040,08EA)", "MeasuredValueSequence"))
        elif vtype in _VALUE_OF:
            keyword, tag = _VALUE_OF[vtype]
            if item.get(keyword) in (None, "") or (keyword.endswith("Sequence")
                                                   and not item.get(keyword)):
                problems.append(Problem(f"{at}{name}: {words(keyword)} {tag} is missing",
                                        keyword))
    return problems


def walk(items: Any, prefix: str) -> Iterator[tuple[str, Dataset]]:
    for i, item in enumerate(items or [], start=1):
        path = f"{prefix}{i}"
        yield path, item
        yield from walk(item.get("ContentSequence"), path + ".")


def concept_code(item: Dataset) -> tuple[str, str]:
    seq = item.get("ConceptNameCodeSequence")
    if not seq:
        return "", ""
    return str(seq[0].get("CodeValue", "")), str(seq[0].get("CodingSchemeDesignator", ""))
