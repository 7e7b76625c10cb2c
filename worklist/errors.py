"""Domain errors and warnings of the worklist, each carrying its Standard codes.

Every refusal the core can give is one class below.  Each class carries the DIMSE
status of PS3.4 Annex CC and the UPS-RS HTTP status of PS3.18 chapter 11, so the two
protocol adapters translate errors in exactly one place each and never disagree.

Where PS3.18 allows either 400 or 409 we answer (and document in the README):

* 400 Bad Request for an invalid payload, a Transaction UID that is missing or
  incorrect (C301), a workitem already COMPLETED or CANCELED (C300: PS3.18 11.6.2 says
  an Update of a final workitem "shall be" 400), and final-state requirements not met
  (C304: the request is "invalid given the current state");
* 409 Conflict when the request is "inconsistent with the current state of the
  Workitem": not yet IN PROGRESS (C310), already IN PROGRESS (C302), a change to
  SCHEDULED (C303), a duplicate UID (0111), and the Request Cancellation refusals
  (C311, C312, C313; PS3.18 11.8.3).
"""

from __future__ import annotations

from .status import Status

__all__ = [
    "UPSError", "InvalidRequest", "InvalidAttributeValue", "MissingAttribute",
    "MissingAttributeValue", "NoSuchAttribute", "InvalidArgumentValue", "NoSuchWorkitem",
    "WorkitemGone", "DuplicateWorkitem", "NotScheduledAtCreate", "MayNoLongerBeUpdated",
    "WrongTransactionUID", "AlreadyInProgress", "MayOnlyBecomeScheduledViaCreate",
    "FinalStateRequirementsNotMet", "NotInProgress", "AlreadyCompleted",
    "PerformerCannotBeContacted", "PerformerChoosesNotToCancel", "ActionNotAppropriate",
    "ReceivingAEUnknown", "EventReportsNotSupported", "NoSuchSubscription",
    "deletion_lock_not_granted", "NotAuthorized", "ProcessingFailure",
    "ServiceUnavailable", "Warning",
]

# PS3.7 C.4 / PS3.5: Error Comment (0000,0902) is LO, at most 64 characters.
_ERROR_COMMENT_MAX = 64

# PS3.18 11.x "Warning" texts used for failures of the state checks.
INCONSISTENT_STATE = "The submitted request is inconsistent with the current state of the Workitem."
INCONSISTENT_UPS_STATE = "The submitted request is inconsistent with the state of the UPS Instance."


class UPSError(Exception):
    """A request refused by the worklist.

    ``message`` says, in words a person can act on, what was wrong; it is sent as the
    HTTP body and (cut to 64 characters) as the DIMSE Error Comment.
    """

    status: Status = Status.PROCESSING_FAILURE
    http_status: int = 400
    warning: str | None = None
    """Text of the PS3.18 ``Warning: 299`` header, when the Standard names one."""

    def __init__(self, message: str, *, warning: str | None = None,
                 attribute: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.attribute = attribute
        if warning is not None:
            self.warning = warning

    @property
    def error_comment(self) -> str:
        """The message as a valid LO value for Error Comment (0000,0902)."""
        text = self.message.encode("ascii", "replace").decode("ascii").replace("\\", "/")
        return text if len(text) <= _ERROR_COMMENT_MAX else text[: _ERROR_COMMENT_MAX - 3] + "..."

    def __str__(self) -> str:
        return self.message


class InvalidRequest(UPSError):
    """The request or its dataset cannot be processed (0x0106 / 400)."""

    status = Status.INVALID_ATTRIBUTE_VALUE


class InvalidAttributeValue(InvalidRequest):
    """An attribute has a value invalid for its VR or its definition (0x0106 / 400)."""

    status = Status.INVALID_ATTRIBUTE_VALUE


class MissingAttribute(InvalidRequest):
    """A required attribute is absent (0x0120 / 400)."""

    status = Status.MISSING_ATTRIBUTE


class MissingAttributeValue(InvalidRequest):
    """A Type 1 attribute is present without a value (0x0121 / 400)."""

    status = Status.MISSING_ATTRIBUTE_VALUE


class NoSuchAttribute(InvalidRequest):
    """An attribute is not allowed in this request (0x0105 / 400)."""

    status = Status.NO_SUCH_ATTRIBUTE


class InvalidArgumentValue(InvalidRequest):
    """An N-ACTION argument is missing or invalid (0x0115 / 400)."""

    status = Status.INVALID_ARGUMENT_VALUE


class NoSuchWorkitem(UPSError):
    """PS3.4 C307: the UID is not a UPS managed by this SCP (404)."""

    status = Status.NO_SUCH_UPS
    http_status = 404


class WorkitemGone(UPSError):
    """The workitem existed but was deleted after its retention period (C307 / 410)."""

    status = Status.NO_SUCH_UPS
    http_status = 410


class DuplicateWorkitem(UPSError):
    """A workitem with this UID already exists (0x0111 / 409, PS3.18 11.4.3.2)."""

    status = Status.DUPLICATE_SOP_INSTANCE
    http_status = 409


class NotScheduledAtCreate(UPSError):
    """PS3.4 C309: the Procedure Step State given at creation was not SCHEDULED (400)."""

    status = Status.NOT_SCHEDULED_AT_CREATE
    http_status = 400


class MayNoLongerBeUpdated(UPSError):
    """PS3.4 C300: the UPS is COMPLETED or CANCELED (400, PS3.18 11.6.2)."""

    status = Status.MAY_NO_LONGER_BE_UPDATED
    http_status = 400
    warning = INCONSISTENT_STATE


class WrongTransactionUID(UPSError):
    """PS3.4 C301: the correct Transaction UID was not provided (400)."""

    status = Status.WRONG_TRANSACTION_UID
    http_status = 400
    warning = "The Transaction UID is incorrect."


class AlreadyInProgress(UPSError):
    """PS3.4 C302: the UPS is already IN PROGRESS (409)."""

    status = Status.ALREADY_IN_PROGRESS
    http_status = 409
    warning = INCONSISTENT_STATE


class MayOnlyBecomeScheduledViaCreate(UPSError):
    """PS3.4 C303: the UPS may only become SCHEDULED via N-CREATE (409)."""

    status = Status.MAY_ONLY_BECOME_SCHEDULED_VIA_CREATE
    http_status = 409
    warning = INCONSISTENT_STATE


class FinalStateRequirementsNotMet(UPSError):
    """PS3.4 C304: the UPS has not met final state requirements (400)."""

    status = Status.FINAL_STATE_REQUIREMENTS_NOT_MET
    http_status = 400
    warning = INCONSISTENT_STATE


class NotInProgress(UPSError):
    """PS3.4 C310: the UPS is not yet IN PROGRESS (409)."""

    status = Status.NOT_IN_PROGRESS
    http_status = 409
    warning = "The target URI did not reference a claimed Workitem."


class AlreadyCompleted(UPSError):
    """PS3.4 C311: cancellation requested of a COMPLETED UPS (409)."""

    status = Status.ALREADY_COMPLETED_FAILURE
    http_status = 409
    warning = "The UPS is already COMPLETED."


class PerformerCannotBeContacted(UPSError):
    """PS3.4 C312: the performer cannot be contacted (409)."""

    status = Status.PERFORMER_CANNOT_BE_CONTACTED
    http_status = 409
    warning = "The performer cannot be contacted."


class PerformerChoosesNotToCancel(UPSError):
    """PS3.4 C313: the performer chooses not to cancel (409)."""

    status = Status.PERFORMER_CHOOSES_NOT_TO_CANCEL
    http_status = 409
    warning = "Performer chooses not to cancel."


class ActionNotAppropriate(UPSError):
    """PS3.4 C314: the action is not appropriate for the instance (400)."""

    status = Status.ACTION_NOT_APPROPRIATE
    http_status = 400


class ReceivingAEUnknown(UPSError):
    """PS3.4 C308: the Receiving AE title is unknown to this SCP (404)."""

    status = Status.RECEIVING_AE_UNKNOWN
    http_status = 404


class EventReportsNotSupported(UPSError):
    """PS3.4 C315: the SCP does not support event reports (403)."""

    status = Status.EVENT_REPORTS_NOT_SUPPORTED
    http_status = 403


class NoSuchSubscription(UPSError):
    """Unsubscribe or suspend of a subscription that does not exist (404, PS3.18 11.11.3,
    11.12.3).  Over DIMSE the state table of PS3.4 CC.2.3.1 leaves "Not Subscribed"
    unchanged, so the DIMSE adapter answers Success (see dimse.handlers)."""

    status = Status.NO_SUCH_UPS
    http_status = 404


class NotAuthorized(UPSError):
    """0x0124: refused, not authorized (401/403 over HTTP)."""

    status = Status.NOT_AUTHORIZED
    http_status = 403


class ProcessingFailure(UPSError):
    """0x0110: the request could not be processed now; it may be retried (503)."""

    status = Status.PROCESSING_FAILURE
    http_status = 503


class ServiceUnavailable(ProcessingFailure):
    """A service the request needs (database, image store) is unreachable (0x0110 / 503)."""


class Warning:  # noqa: A001 - the Standard's term; never raised
    """A success with a warning status (e.g. B304, B306), returned, not raised."""

    __slots__ = ("status", "text")

    def __init__(self, status: Status, text: str) -> None:
        self.status = status
        self.text = text

    def __repr__(self) -> str:
        return f"Warning({self.status.name}, {self.text!r})"


def deletion_lock_not_granted() -> Warning:
    """PS3.4 Table CC.2.3-1 B301 / PS3.18 11.10.3 "Deletion Lock not granted." (with 201)."""
    return Warning(Status.DELETION_LOCK_NOT_GRANTED, "Deletion Lock not granted.")
