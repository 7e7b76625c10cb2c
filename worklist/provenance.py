"""Who made a result, in which role, with what, when, for which task (issue 6).

These value objects are shared by the writers (``seg.build``, ``sr.build``), the readers
(``seg.read``, ``sr.read``) and the server's result index (``worklist.results``), so the
provenance written into a SEG or SR is the provenance read back and indexed.

DICOM homes (annotation-model.md §3.1, §3.2):

* person: SEG Content Creator's Name (0070,0084) + Content Creator's Identification Code
  Sequence (0070,0086); SR TID 1002/1003 person observer (name, login, organization,
  role in this procedure from CID 7453);
* tool: Enhanced General Equipment + Contributing Equipment Sequence (0018,A001); SR TID
  1004 device observer;
* algorithm: Segment Algorithm Type (0062,0008) + Algorithm Identification (PS3.3 10.16);
  SR TID 4019;
* task: Referenced Performed Procedure Step Sequence (0008,1111) naming the UPS (UPS Push
  SOP Class, workitem UID) in the General Series / SR Document Series module.
"""

from __future__ import annotations

import datetime as _dt
import enum
import uuid
from dataclasses import dataclass, field

from pydicom.sr.coding import Code as SRCode

__all__ = ["RoleValues", "ROLE_CODES", "AlgorithmTypeValues", "Person", "Tool", "Algorithm",
           "Provenance", "ResultItem", "ResultRecord", "LOGIN_SCHEME", "LOGIN_SCHEMES",
           "UPS_PUSH_SOP_CLASS",
           "tool_device_uid"]

UPS_PUSH_SOP_CLASS = "1.2.840.10008.5.1.4.34.6.1"
LOGIN_SCHEME = "99WLLOGIN"
"""Coding scheme of person codes whose value is a login (as in Human Performer Code
Sequence items the worklist writes: value = login, scheme ``99WLLOGIN``, meaning =
name).  A private scheme (PS3.16 8: private designators begin with "99"): the Standard
has none for user names."""
LOGIN_SCHEMES = frozenset({LOGIN_SCHEME, "L"})
"""What is read as a login: ours, and ``L`` (local), which earlier versions wrote."""


class RoleValues(str, enum.Enum):
    """Person Observer's Role in this Procedure (121011), PS3.16 CID 7453."""

    READER = "Reader"
    REVIEWER = "Reviewer"
    ADJUDICATOR = "Adjudicator"


ROLE_CODES: dict[RoleValues, SRCode] = {
    RoleValues.READER: SRCode("C28747", "NCIt", "Reader"),
    RoleValues.REVIEWER: SRCode("C54634", "NCIt", "Reviewer"),
    RoleValues.ADJUDICATOR: SRCode("C96561", "NCIt", "Adjudicator"),
}


class AlgorithmTypeValues(str, enum.Enum):
    """Segment Algorithm Type (0062,0008), PS3.3 C.8.20.2."""

    MANUAL = "MANUAL"              # "user-entered"
    SEMIAUTOMATIC = "SEMIAUTOMATIC"  # "calculated with user assistance"
    AUTOMATIC = "AUTOMATIC"        # "calculated"


@dataclass(frozen=True)
class Person:
    login: str
    name: str
    """DICOM PN, e.g. ``Doe^Jane``."""
    organization: str = ""
    role: RoleValues = RoleValues.READER

    def __post_init__(self) -> None:
        if not self.login or len(self.login) > 16:
            raise ValueError("Person.login must be 1-16 characters (it is a code value, SH)")
        if not self.name:
            raise ValueError("Person.name must not be empty")
        object.__setattr__(self, "role", RoleValues(self.role))


def tool_device_uid(manufacturer: str, model_name: str) -> str:
    """A stable UID for a tool (SR Device Observer UID, 121012): one per tool model."""
    return "2.25." + str(uuid.uuid5(uuid.NAMESPACE_URL,
                                    f"worklist-tool:{manufacturer}:{model_name}").int)


@dataclass(frozen=True)
class Tool:
    """The annotation tool that wrote the object (the equipment)."""

    manufacturer: str = "worklist"
    model_name: str = "worklist"
    software_version: str = "0.1.0"
    serial_number: str = "1"

    @property
    def device_uid(self) -> str:
        return tool_device_uid(self.manufacturer, self.model_name)


@dataclass(frozen=True)
class Algorithm:
    """An algorithm that produced (AUTOMATIC) or proposed (SEMIAUTOMATIC) segments."""

    name: str
    version: str
    family: tuple[str, str, str] = ("123110", "DCM", "Artificial Intelligence")  # CID 7162
    source: str = ""


def _now() -> _dt.datetime:
    return _dt.datetime.now(_dt.timezone.utc).astimezone()


@dataclass(frozen=True)
class Provenance:
    """Everything a result must say about its making."""

    task_uid: str
    """The UPS workitem's SOP Instance UID."""
    person: Person | None
    """The reader; None when an algorithm alone is the performer."""
    tool: Tool = field(default_factory=Tool)
    algorithm: Algorithm | None = None
    """The algorithm that proposed the input pre-segmentation, or that is the performer."""
    created: _dt.datetime = field(default_factory=_now)
    session: str | None = None
    """Reading session / repetition label (SR Activity Session, C67447)."""

    def __post_init__(self) -> None:
        if self.person is None and self.algorithm is None:
            raise ValueError("Provenance needs a person or an algorithm")

    @property
    def algorithm_type(self) -> AlgorithmTypeValues:
        """Stated honestly: drawn by a person → MANUAL; a person edited an algorithm's
        proposal → SEMIAUTOMATIC; the algorithm alone → AUTOMATIC."""
        if self.person is None:
            return AlgorithmTypeValues.AUTOMATIC
        if self.algorithm is not None:
            return AlgorithmTypeValues.SEMIAUTOMATIC
        return AlgorithmTypeValues.MANUAL


@dataclass
class ResultItem:
    """One indexed fact of a result: a segment, a measurement, a finding or a verdict."""

    kind: str
    """``segment``, ``measurement``, ``evaluation``."""
    label: str = ""
    """Segment Label / Tracking Identifier."""
    segment_number: int | None = None
    property_type: str = ""
    """Segmented Property Type meaning (e.g. ``Lesion``)."""
    algorithm_type: str = ""
    algorithm_name: str = ""
    algorithm_version: str = ""
    concept: str = ""
    """Measurement or evaluation concept meaning (e.g. ``Volume``, ``Finding``)."""
    value: float | None = None
    unit: str = ""
    text: str = ""
    """Coded or text value of an evaluation (e.g. ``Present``, ``Rejected``), or comment."""


@dataclass
class ResultRecord:
    """What the result index keeps of one SEG or SR instance."""

    sop_instance_uid: str
    sop_class_uid: str
    kind: str
    """``SEG`` or ``SR``."""
    study_uid: str
    series_uid: str
    task_uid: str | None
    content_datetime: str = ""
    person_login: str = ""
    person_name: str = ""
    organization: str = ""
    role: str = ""
    device_name: str = ""
    """Tool (SEG equipment / SR device observer)."""
    verification_flag: str = ""
    verifying_observer: str = ""
    predecessors: list[str] = field(default_factory=list)
    referenced_series: list[str] = field(default_factory=list)
    referenced_instances: list[str] = field(default_factory=list)
    items: list[ResultItem] = field(default_factory=list)
