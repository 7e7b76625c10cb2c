"""DIMSE status codes used by the Unified Worklist and Procedure Step service.

PS3.4 CC.2.1.4, CC.2.2.4, CC.2.3.4, CC.2.5.4, CC.2.6.4, CC.2.7.4, CC.2.8.4 and the
generic codes of PS3.7 Annex C.  Names follow the Standard's meanings.
"""

from __future__ import annotations

from enum import IntEnum

__all__ = ["Status"]


class Status(IntEnum):
    """DIMSE status values (PS3.4 Annex CC, PS3.7 Annex C)."""

    SUCCESS = 0x0000
    """0x0000 Success."""
    OPTIONAL_ATTRIBUTES_NOT_SUPPORTED = 0x0001
    """0x0001 Warning: requested optional attributes are not supported (N-GET, N-SET)."""
    ATTRIBUTE_LIST_ERROR = 0x0107
    """0x0107 Warning: attribute list error (PS3.7 C.4)."""
    ATTRIBUTE_VALUE_OUT_OF_RANGE = 0x0116
    """0x0116 Warning: attribute value out of range."""

    UPS_CREATED_WITH_MODIFICATIONS = 0xB300
    """0xB300 Warning: the UPS was created with modifications (N-CREATE)."""
    DELETION_LOCK_NOT_GRANTED = 0xB301
    """0xB301 Warning: Deletion Lock not granted (Subscribe)."""
    ALREADY_CANCELED = 0xB304
    """0xB304 Warning: the UPS is already in the requested state of CANCELED."""
    COERCED_INVALID_VALUES = 0xB305
    """0xB305 Warning: coerced invalid values to valid values (N-SET)."""
    ALREADY_COMPLETED = 0xB306
    """0xB306 Warning: the UPS is already in the requested state of COMPLETED."""

    MAY_NO_LONGER_BE_UPDATED = 0xC300
    """0xC300 Failure: the UPS may no longer be updated."""
    WRONG_TRANSACTION_UID = 0xC301
    """0xC301 Failure: the correct Transaction UID was not provided."""
    ALREADY_IN_PROGRESS = 0xC302
    """0xC302 Failure: the UPS is already IN PROGRESS."""
    MAY_ONLY_BECOME_SCHEDULED_VIA_CREATE = 0xC303
    """0xC303 Failure: the UPS may only become SCHEDULED via N-CREATE."""
    FINAL_STATE_REQUIREMENTS_NOT_MET = 0xC304
    """0xC304 Failure: the UPS has not met final state requirements."""
    NO_SUCH_UPS = 0xC307
    """0xC307 Failure: specified SOP Instance UID does not exist or is not a UPS Instance managed by this SCP."""
    RECEIVING_AE_UNKNOWN = 0xC308
    """0xC308 Failure: Receiving AE-TITLE is unknown to this SCP."""
    NOT_SCHEDULED_AT_CREATE = 0xC309
    """0xC309 Failure: the provided value of UPS State was not SCHEDULED."""
    NOT_IN_PROGRESS = 0xC310
    """0xC310 Failure: the UPS is not yet in the IN PROGRESS state."""
    ALREADY_COMPLETED_FAILURE = 0xC311
    """0xC311 Failure: the UPS is already COMPLETED (Request Cancel)."""
    PERFORMER_CANNOT_BE_CONTACTED = 0xC312
    """0xC312 Failure: the performer cannot be contacted."""
    PERFORMER_CHOOSES_NOT_TO_CANCEL = 0xC313
    """0xC313 Failure: the performer chooses not to cancel."""
    ACTION_NOT_APPROPRIATE = 0xC314
    """0xC314 Failure: specified action not appropriate for specified instance."""
    EVENT_REPORTS_NOT_SUPPORTED = 0xC315
    """0xC315 Failure: SCP does not support Event Reports."""

    NO_SUCH_ATTRIBUTE = 0x0105
    """0x0105 Failure: no such attribute (PS3.7 C.4)."""
    INVALID_ATTRIBUTE_VALUE = 0x0106
    """0x0106 Failure: invalid attribute value."""
    PROCESSING_FAILURE = 0x0110
    """0x0110 Failure: processing failure."""
    DUPLICATE_SOP_INSTANCE = 0x0111
    """0x0111 Failure: duplicate SOP Instance."""
    NO_SUCH_SOP_INSTANCE = 0x0112
    """0x0112 Failure: no such SOP Instance."""
    INVALID_ARGUMENT_VALUE = 0x0115
    """0x0115 Failure: invalid argument value."""
    INVALID_OBJECT_INSTANCE = 0x0117
    """0x0117 Failure: invalid SOP Instance."""
    MISSING_ATTRIBUTE = 0x0120
    """0x0120 Failure: missing attribute."""
    MISSING_ATTRIBUTE_VALUE = 0x0121
    """0x0121 Failure: missing attribute value."""
    NO_SUCH_SOP_CLASS = 0x0118
    """0x0118 Failure: no such SOP Class (PS3.7 C.5.10)."""
    UNRECOGNIZED_OPERATION = 0x0211
    """0x0211 Failure: unrecognized operation (PS3.7 C.5.23)."""
    SOP_CLASS_NOT_SUPPORTED = 0x0122
    """0x0122 Failure: SOP Class not supported."""
    NO_SUCH_ACTION = 0x0123
    """0x0123 Failure: no such action type."""
    NOT_AUTHORIZED = 0x0124
    """0x0124 Failure: refused, not authorized."""
    OUT_OF_RESOURCES = 0xA700
    """0xA700 Failure: refused, out of resources (C-FIND)."""
    IDENTIFIER_DOES_NOT_MATCH_SOP_CLASS = 0xA900
    """0xA900 Failure: identifier does not match SOP Class (C-FIND)."""
    UNABLE_TO_PROCESS = 0xC000
    """0xC000 Failure: unable to process (C-FIND, C000-CFFF)."""
    MATCHING_TERMINATED_BY_CANCEL = 0xFE00
    """0xFE00 Cancel: matching terminated due to a Cancel request (C-FIND)."""
    PENDING = 0xFF00
    """0xFF00 Pending: matches are continuing (C-FIND)."""
    PENDING_WARNING = 0xFF01
    """0xFF01 Pending: matches are continuing, optional keys not supported (C-FIND)."""

    @property
    def is_failure(self) -> bool:
        return self not in _NON_FAILURE

    @property
    def is_warning(self) -> bool:
        return self in _WARNINGS


_WARNINGS = frozenset({
    Status.OPTIONAL_ATTRIBUTES_NOT_SUPPORTED, Status.ATTRIBUTE_LIST_ERROR,
    Status.ATTRIBUTE_VALUE_OUT_OF_RANGE, Status.UPS_CREATED_WITH_MODIFICATIONS,
    Status.DELETION_LOCK_NOT_GRANTED, Status.ALREADY_CANCELED, Status.COERCED_INVALID_VALUES,
    Status.ALREADY_COMPLETED,
})
_NON_FAILURE = _WARNINGS | {Status.SUCCESS, Status.PENDING, Status.PENDING_WARNING,
                            Status.MATCHING_TERMINATED_BY_CANCEL}
