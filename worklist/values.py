"""Well-known UIDs and enumerated values of the UPS service (PS3.4 Annex CC, PS3.3 C.30)."""

from __future__ import annotations

from enum import Enum

__all__ = [
    "UPS_PUSH", "UPS_PULL", "UPS_WATCH", "UPS_EVENT", "UPS_QUERY", "UPS_SOP_CLASSES",
    "GLOBAL_SUBSCRIPTION", "FILTERED_GLOBAL_SUBSCRIPTION", "VERIFICATION",
    "ProcedureStepStateValues", "ScheduledProcedureStepPriorityValues",
    "InputReadinessStateValues", "Protocol",
]

# PS3.4 CC.3.1: every UPS instance is of the UPS Push SOP Class, whatever context
# the request travelled on.
UPS_PUSH = "1.2.840.10008.5.1.4.34.6.1"
UPS_WATCH = "1.2.840.10008.5.1.4.34.6.2"
UPS_PULL = "1.2.840.10008.5.1.4.34.6.3"
UPS_EVENT = "1.2.840.10008.5.1.4.34.6.4"
UPS_QUERY = "1.2.840.10008.5.1.4.34.6.5"
UPS_SOP_CLASSES = (UPS_PUSH, UPS_PULL, UPS_WATCH, UPS_EVENT, UPS_QUERY)
VERIFICATION = "1.2.840.10008.1.1"

# PS3.4 CC.3.2: well-known SOP Instances for subscriptions.
GLOBAL_SUBSCRIPTION = "1.2.840.10008.5.1.4.34.5"
FILTERED_GLOBAL_SUBSCRIPTION = "1.2.840.10008.5.1.4.34.5.1"


class ProcedureStepStateValues(str, Enum):
    """Procedure Step State (0074,1000), PS3.3 C.30.1, with the Standard's spellings."""

    SCHEDULED = "SCHEDULED"
    IN_PROGRESS = "IN PROGRESS"
    CANCELED = "CANCELED"
    COMPLETED = "COMPLETED"

    @property
    def is_final(self) -> bool:
        return self in (ProcedureStepStateValues.CANCELED, ProcedureStepStateValues.COMPLETED)


class ScheduledProcedureStepPriorityValues(str, Enum):
    """Scheduled Procedure Step Priority (0074,1200)."""

    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"


class InputReadinessStateValues(str, Enum):
    """Input Readiness State (0040,4041)."""

    INCOMPLETE = "INCOMPLETE"
    UNAVAILABLE = "UNAVAILABLE"
    READY = "READY"


class Protocol(str, Enum):
    """Which path a mutation came by; recorded in the workitem history."""

    DIMSE = "DIMSE"
    UPS_RS = "UPS-RS"
    INTERNAL = "INTERNAL"
    CLI = "CLI"
