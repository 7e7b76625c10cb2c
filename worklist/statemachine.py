"""The UPS state machine as one transition table (PS3.4 CC.1.1, CC.2.1.3, CC.2.2.3, CC.2.6.3).

Keyed by (current Procedure Step State, requested action), with the Standard's
spellings.  Each entry says what the Transaction UID must be, which state follows,
whether the final-state requirements (PS3.4 CC.2.5.1.1) are checked first, or which
refusal or warning the request gets.  :func:`decide` is the only reader of the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from . import errors
from .status import Status
from .values import ProcedureStepStateValues as State

__all__ = ["Action", "Outcome", "TRANSITIONS", "decide"]


class Action(str, Enum):
    """What a request asks of a workitem."""

    IN_PROGRESS = "IN PROGRESS"
    """N-ACTION type 1 / Change State to IN PROGRESS: claim it with a new Transaction UID."""
    COMPLETED = "COMPLETED"
    """N-ACTION type 1 / Change State to COMPLETED."""
    CANCELED = "CANCELED"
    """N-ACTION type 1 / Change State to CANCELED (by the performer holding the lock)."""
    SCHEDULED = "SCHEDULED"
    """N-ACTION type 1 / Change State to SCHEDULED (never allowed: C303)."""
    REQUEST_CANCEL = "REQUEST CANCEL"
    """N-ACTION type 2 / Request Cancellation."""
    UPDATE = "UPDATE"
    """N-SET / Update Workitem."""


@dataclass(frozen=True)
class Outcome:
    """One cell of the table."""

    transaction_uid: str = "any"
    """``"match"``: the recorded Transaction UID must be supplied; ``"absent"``: none may be
    supplied; ``"new"``: the request supplies the UID to record; ``"any"``: not checked."""
    transaction_uid_error: type[errors.UPSError] | None = None
    """The refusal when the ``transaction_uid`` rule is not met."""
    next_state: State | None = None
    """The state after success; ``None`` leaves the state as it is."""
    check_final_state: bool = False
    """PS3.4 CC.2.5.1.1: verify the final-state requirements before the transition."""
    error: type[errors.UPSError] | None = None
    """Refusal of the action in this state, whatever the Transaction UID."""
    warning: Status | None = None
    """Success with this warning status and no change (B304/B306)."""


_S, _P, _X, _C = State.SCHEDULED, State.IN_PROGRESS, State.CANCELED, State.COMPLETED
_final = errors.MayNoLongerBeUpdated

TRANSITIONS: dict[tuple[State, Action], Outcome] = {
    # PS3.4 CC.2.1.3: claiming records the performer's Transaction UID.
    (_S, Action.IN_PROGRESS): Outcome(transaction_uid="new", next_state=_P),
    (_P, Action.IN_PROGRESS): Outcome(error=errors.AlreadyInProgress),
    (_X, Action.IN_PROGRESS): Outcome(error=_final),
    (_C, Action.IN_PROGRESS): Outcome(error=_final),
    # C310 when not yet claimed; C301 without the lock; B306/B304 when already there.
    (_S, Action.COMPLETED): Outcome(error=errors.NotInProgress),
    (_P, Action.COMPLETED): Outcome(transaction_uid="match",
                                    transaction_uid_error=errors.WrongTransactionUID,
                                    next_state=_C, check_final_state=True),
    (_X, Action.COMPLETED): Outcome(error=_final),
    (_C, Action.COMPLETED): Outcome(transaction_uid="match", transaction_uid_error=_final,
                                    warning=Status.ALREADY_COMPLETED),
    (_S, Action.CANCELED): Outcome(error=errors.NotInProgress),
    (_P, Action.CANCELED): Outcome(transaction_uid="match",
                                   transaction_uid_error=errors.WrongTransactionUID,
                                   next_state=_X, check_final_state=True),
    (_X, Action.CANCELED): Outcome(transaction_uid="match", transaction_uid_error=_final,
                                   warning=Status.ALREADY_CANCELED),
    (_C, Action.CANCELED): Outcome(error=_final),
    # C303: SCHEDULED is reached only by creation.
    (_S, Action.SCHEDULED): Outcome(error=errors.MayOnlyBecomeScheduledViaCreate),
    (_P, Action.SCHEDULED): Outcome(error=errors.MayOnlyBecomeScheduledViaCreate),
    (_X, Action.SCHEDULED): Outcome(error=errors.MayOnlyBecomeScheduledViaCreate),
    (_C, Action.SCHEDULED): Outcome(error=errors.MayOnlyBecomeScheduledViaCreate),
    # PS3.4 CC.2.2.3: a SCHEDULED UPS is canceled by the SCP itself (through IN PROGRESS,
    # meeting the final-state requirements); an IN PROGRESS one gets the request passed
    # to its performer (UPS Cancel Requested event) and stays as it is.
    (_S, Action.REQUEST_CANCEL): Outcome(next_state=_X, check_final_state=True),
    (_P, Action.REQUEST_CANCEL): Outcome(),
    (_X, Action.REQUEST_CANCEL): Outcome(warning=Status.ALREADY_CANCELED),
    (_C, Action.REQUEST_CANCEL): Outcome(error=errors.AlreadyCompleted),
    # PS3.4 CC.2.6.3: N-SET of a SCHEDULED UPS carries no Transaction UID; of an IN
    # PROGRESS one the recorded one; a final UPS may no longer be updated.
    (_S, Action.UPDATE): Outcome(transaction_uid="absent",
                                 transaction_uid_error=errors.NotInProgress),
    (_P, Action.UPDATE): Outcome(transaction_uid="match",
                                 transaction_uid_error=errors.WrongTransactionUID),
    (_X, Action.UPDATE): Outcome(error=_final),
    (_C, Action.UPDATE): Outcome(error=_final),
}

_MESSAGES = {
    errors.AlreadyInProgress: "The workitem is already IN PROGRESS (claimed by another performer)",
    errors.MayNoLongerBeUpdated: "The workitem is {state} and may no longer be updated",
    errors.NotInProgress: "The workitem is SCHEDULED, not yet IN PROGRESS",
    errors.MayOnlyBecomeScheduledViaCreate: "A workitem may only become SCHEDULED by its creation",
    errors.AlreadyCompleted: "The workitem is already COMPLETED",
}


def decide(state: State | str, action: Action | str, supplied_uid: str | None,
           recorded_uid: str | None) -> Outcome:
    """The table's outcome for this request, raising the refusal it names.

    ``supplied_uid`` is the Transaction UID the request carries (``None`` when absent);
    ``recorded_uid`` is the one recorded on the workitem.
    """
    state, action = State(state), Action(action)
    outcome = TRANSITIONS[(state, action)]
    # PS3.18 11.6.3.2 and 11.7.3.2 word the state conflict differently.
    conflict = (errors.INCONSISTENT_STATE if action is Action.UPDATE
                else errors.INCONSISTENT_UPS_STATE)
    if outcome.error is not None:
        err = outcome.error
        keep = err is errors.AlreadyCompleted or (
            action is Action.UPDATE and err is errors.NotInProgress)
        warning = err.warning if keep else conflict
        raise err(_MESSAGES.get(err, err.__doc__ or "").format(state=state.value),
                  warning=warning)
    rule = outcome.transaction_uid
    if rule == "match" and (not supplied_uid or supplied_uid != recorded_uid):
        err = outcome.transaction_uid_error or errors.WrongTransactionUID
        if err is errors.WrongTransactionUID:
            if not supplied_uid:
                raise err("The Transaction UID is missing: the workitem is IN PROGRESS and only "
                          "its performer, with the Transaction UID of its claim, may change it",
                          warning="The Transaction UID is missing.")
            raise err("The Transaction UID is incorrect: it is not the one the workitem was "
                      "claimed with", warning="The Transaction UID is incorrect.")
        raise err(_MESSAGES.get(err, "").format(state=state.value), warning=conflict)
    if rule == "absent" and supplied_uid:
        raise (outcome.transaction_uid_error or errors.NotInProgress)(
            "A Transaction UID was given but the workitem is SCHEDULED, not claimed: "
            "update it without one")
    if rule == "new" and not supplied_uid:
        raise errors.InvalidArgumentValue("The Transaction UID is missing: claiming a workitem "
                                          "needs the performer's new Transaction UID",
                                          warning="The Transaction UID is missing.")
    return outcome
