"""UPS events (PS3.4 CC.2.4) as the service layer emits them, and the publisher port.

The service layer decides *which* events a change causes, on every mutation path;
delivery to subscribers (N-EVENT-REPORT, WebSocket) is the publisher's job.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

__all__ = ["EventType", "UPSEvent", "EventPublisher", "NullPublisher", "RecordingPublisher"]


class EventType(IntEnum):
    """Event Type ID (0000,1002) of the UPS Event SOP Class (PS3.4 Table CC.2.4-1)."""

    UPS_STATE_REPORT = 1
    UPS_CANCEL_REQUESTED = 2
    UPS_PROGRESS_REPORT = 3
    SCP_STATUS_CHANGE = 4
    UPS_ASSIGNED = 5


@dataclass(frozen=True)
class UPSEvent:
    """One event about one workitem (or, for SCP Status Change, about the SCP)."""

    event_type: EventType
    uid: str
    attributes: dict[str, Any] = field(default_factory=dict)
    """The event's attributes as DICOM JSON (PS3.18 F.2), keyed by tag."""
    worklist_label: str | None = None
    created: bool = False
    """True for the reports that announce a new workitem (global subscribers)."""


class EventPublisher(Protocol):
    """Takes the events of one committed change, in the order they happened."""

    def publish(self, events: list[UPSEvent]) -> None: ...


class NullPublisher:
    """Drops events (no subscriber support configured)."""

    def publish(self, events: list[UPSEvent]) -> None:
        return None


class RecordingPublisher:
    """Keeps events in memory (unit tests)."""

    def __init__(self) -> None:
        self.events: list[UPSEvent] = []

    def publish(self, events: list[UPSEvent]) -> None:
        self.events.extend(events)
