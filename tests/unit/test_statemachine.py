"""The UPS transition table (PS3.4 CC.1.1, CC.2.1.3, CC.2.2.3, CC.2.6.3), every pair.

The expected outcomes are written out here from the Standard (and the digest in
/work/shared/reference/ups-standard.md 1.3/1.4), not read from ``TRANSITIONS``: a
change to the table that contradicts the Standard fails one of these rows.

Each row is tried with the Transaction UID supplied correctly, supplied wrong and
missing.  ``recorded`` is what an SCP holds in that state: nothing while SCHEDULED,
the claim's UID afterwards (it stays recorded after COMPLETED/CANCELED).
"""

from __future__ import annotations

import itertools

import pytest

from worklist import errors
from worklist.statemachine import TRANSITIONS, Action, Outcome, decide
from worklist.status import Status
from worklist.values import ProcedureStepStateValues as State

RECORDED = "1.2.826.0.1.3680043.8.498.1"
WRONG = "1.2.826.0.1.3680043.8.498.2"
NEW = "1.2.826.0.1.3680043.8.498.3"

SCHEDULED, IN_PROGRESS, COMPLETED, CANCELED = (
    "SCHEDULED", "IN PROGRESS", "COMPLETED", "CANCELED")
ACTIONS = ("IN PROGRESS", "COMPLETED", "CANCELED", "SCHEDULED", "REQUEST CANCEL", "UPDATE")


def ok(next_state=None, final=False):
    return ("ok", next_state, final)


def warn(status):
    return ("warn", status)


def fail(error, status):
    return ("fail", error, status)


# (state, action) -> {"correct": ..., "wrong": ..., "missing": ...}
# "correct" is the recorded UID (for SCHEDULED, which has none, any new UID);
# an entry given once applies to all three.
E = errors
EXPECTED = {
    # -- N-ACTION type 1 to IN PROGRESS: claim with a new Transaction UID (CC.2.1.3)
    (SCHEDULED, "IN PROGRESS"): {
        "correct": ok(IN_PROGRESS), "wrong": ok(IN_PROGRESS),
        # Table CC.2.1-1: Transaction UID is 1/1 in the action information.
        "missing": fail(E.InvalidArgumentValue, 0x0115)},
    (IN_PROGRESS, "IN PROGRESS"): fail(E.AlreadyInProgress, 0xC302),
    (COMPLETED, "IN PROGRESS"): fail(E.MayNoLongerBeUpdated, 0xC300),
    (CANCELED, "IN PROGRESS"): fail(E.MayNoLongerBeUpdated, 0xC300),
    # -- to COMPLETED
    (SCHEDULED, "COMPLETED"): fail(E.NotInProgress, 0xC310),
    (IN_PROGRESS, "COMPLETED"): {
        "correct": ok(COMPLETED, final=True),
        "wrong": fail(E.WrongTransactionUID, 0xC301),
        "missing": fail(E.WrongTransactionUID, 0xC301)},
    (COMPLETED, "COMPLETED"): {
        "correct": warn(0xB306),
        "wrong": fail(E.MayNoLongerBeUpdated, 0xC300),
        "missing": fail(E.MayNoLongerBeUpdated, 0xC300)},
    (CANCELED, "COMPLETED"): fail(E.MayNoLongerBeUpdated, 0xC300),
    # -- to CANCELED (by the performer holding the lock)
    (SCHEDULED, "CANCELED"): fail(E.NotInProgress, 0xC310),
    (IN_PROGRESS, "CANCELED"): {
        "correct": ok(CANCELED, final=True),
        "wrong": fail(E.WrongTransactionUID, 0xC301),
        "missing": fail(E.WrongTransactionUID, 0xC301)},
    (COMPLETED, "CANCELED"): fail(E.MayNoLongerBeUpdated, 0xC300),
    (CANCELED, "CANCELED"): {
        "correct": warn(0xB304),
        "wrong": fail(E.MayNoLongerBeUpdated, 0xC300),
        "missing": fail(E.MayNoLongerBeUpdated, 0xC300)},
    # -- to SCHEDULED: only N-CREATE makes a SCHEDULED UPS (C303)
    (SCHEDULED, "SCHEDULED"): fail(E.MayOnlyBecomeScheduledViaCreate, 0xC303),
    (IN_PROGRESS, "SCHEDULED"): fail(E.MayOnlyBecomeScheduledViaCreate, 0xC303),
    (COMPLETED, "SCHEDULED"): fail(E.MayOnlyBecomeScheduledViaCreate, 0xC303),
    (CANCELED, "SCHEDULED"): fail(E.MayOnlyBecomeScheduledViaCreate, 0xC303),
    # -- N-ACTION type 2, Request Cancellation (CC.2.2.3): no Transaction UID involved
    (SCHEDULED, "REQUEST CANCEL"): ok(CANCELED, final=True),
    (IN_PROGRESS, "REQUEST CANCEL"): ok(None),
    (COMPLETED, "REQUEST CANCEL"): fail(E.AlreadyCompleted, 0xC311),
    (CANCELED, "REQUEST CANCEL"): warn(0xB304),
    # -- N-SET (CC.2.6.2/CC.2.6.3)
    (SCHEDULED, "UPDATE"): {
        "correct": fail(E.NotInProgress, 0xC310),  # a UID on a SCHEDULED UPS
        "wrong": fail(E.NotInProgress, 0xC310),
        "missing": ok(None)},
    (IN_PROGRESS, "UPDATE"): {
        "correct": ok(None),
        "wrong": fail(E.WrongTransactionUID, 0xC301),
        "missing": fail(E.WrongTransactionUID, 0xC301)},
    (COMPLETED, "UPDATE"): fail(E.MayNoLongerBeUpdated, 0xC300),
    (CANCELED, "UPDATE"): fail(E.MayNoLongerBeUpdated, 0xC300),
}

SUPPLY = ("correct", "wrong", "missing")


def _recorded(state):
    return None if state == SCHEDULED else RECORDED


def _supplied(state, how):
    if how == "missing":
        return None
    if how == "wrong":
        return WRONG
    return NEW if state == SCHEDULED else RECORDED


def _cases():
    for (state, action), expected in EXPECTED.items():
        for how in SUPPLY:
            exp = expected[how] if isinstance(expected, dict) else expected
            yield pytest.param(state, action, how, exp, id=f"{state}|{action}|{how}")


def test_expectations_cover_every_pair():
    states = [s.value for s in State]
    assert sorted(states) == sorted([SCHEDULED, IN_PROGRESS, COMPLETED, CANCELED])
    assert sorted(a.value for a in Action) == sorted(ACTIONS)
    assert set(EXPECTED) == set(itertools.product(states, ACTIONS))
    assert len(EXPECTED) == 24


def test_table_covers_every_pair():
    pairs = {(s.value, a.value) for s, a in TRANSITIONS}
    assert pairs == set(itertools.product([s.value for s in State], ACTIONS))
    assert len(TRANSITIONS) == 24
    assert all(isinstance(o, Outcome) for o in TRANSITIONS.values())


def test_table_uses_the_standards_spellings():
    assert {s.value for s, _ in TRANSITIONS} == {"SCHEDULED", "IN PROGRESS", "COMPLETED",
                                                  "CANCELED"}


@pytest.mark.parametrize(("state", "action", "how", "expected"), list(_cases()))
def test_decide(state, action, how, expected):
    supplied, recorded = _supplied(state, how), _recorded(state)
    kind = expected[0]
    if kind == "fail":
        _, error, status = expected
        with pytest.raises(errors.UPSError) as info:
            decide(state, action, supplied, recorded)
        assert type(info.value) is error
        assert int(info.value.status) == status
        assert info.value.message  # a person can act on it
        return
    outcome = decide(state, action, supplied, recorded)
    if kind == "warn":
        assert outcome.warning is not None and int(outcome.warning) == expected[1]
        assert outcome.next_state is None  # no change
        return
    _, next_state, final = expected
    assert outcome.warning is None
    assert (outcome.next_state.value if outcome.next_state else None) == next_state
    assert outcome.check_final_state is final


@pytest.mark.parametrize("state", [SCHEDULED, IN_PROGRESS, COMPLETED, CANCELED])
@pytest.mark.parametrize("action", ACTIONS)
def test_decide_accepts_enums_and_strings_alike(state, action):
    def run(s, a):
        try:
            out = decide(s, a, RECORDED, RECORDED)
            return ("ok", out)
        except errors.UPSError as exc:
            return ("fail", type(exc), exc.status)

    assert run(state, action) == run(State(state), Action(action))


def test_unknown_state_or_action_is_a_value_error():
    with pytest.raises(ValueError):
        decide("DONE", "COMPLETED", None, None)
    with pytest.raises(ValueError):
        decide("SCHEDULED", "FINISH", None, None)


# -- Transaction UID rules (ups-standard.md 1.4) ----------------------------------------
def test_transaction_uid_rules_of_the_table():
    rules = {pair: o.transaction_uid for pair, o in TRANSITIONS.items()}
    s, p = State.SCHEDULED, State.IN_PROGRESS
    assert rules[(s, Action.IN_PROGRESS)] == "new"
    assert rules[(p, Action.COMPLETED)] == "match"
    assert rules[(p, Action.CANCELED)] == "match"
    assert rules[(p, Action.UPDATE)] == "match"
    assert rules[(s, Action.UPDATE)] == "absent"
    assert rules[(s, Action.REQUEST_CANCEL)] == "any"
    assert rules[(p, Action.REQUEST_CANCEL)] == "any"


def test_missing_transaction_uid_says_missing():
    with pytest.raises(errors.WrongTransactionUID) as info:
        decide(IN_PROGRESS, COMPLETED, None, RECORDED)
    assert info.value.warning == "The Transaction UID is missing."
    assert "missing" in info.value.message


def test_empty_transaction_uid_counts_as_missing():
    with pytest.raises(errors.WrongTransactionUID) as info:
        decide(IN_PROGRESS, "UPDATE", "", RECORDED)
    assert info.value.warning == "The Transaction UID is missing."
    with pytest.raises(errors.InvalidArgumentValue):
        decide(SCHEDULED, IN_PROGRESS, "", None)
    # An empty UID on a SCHEDULED update is no UID at all: allowed.
    assert decide(SCHEDULED, "UPDATE", "", None).next_state is None


def test_wrong_transaction_uid_says_incorrect():
    with pytest.raises(errors.WrongTransactionUID) as info:
        decide(IN_PROGRESS, CANCELED, WRONG, RECORDED)
    assert info.value.warning == "The Transaction UID is incorrect."
    assert "incorrect" in info.value.message


def test_a_claimed_workitem_without_a_recorded_uid_refuses_every_uid():
    # Defensive: "match" compares with what is recorded; nothing recorded matches nothing.
    with pytest.raises(errors.WrongTransactionUID):
        decide(IN_PROGRESS, COMPLETED, RECORDED, None)


def test_uid_given_for_scheduled_update_is_c310_with_claimed_warning():
    with pytest.raises(errors.NotInProgress) as info:
        decide(SCHEDULED, "UPDATE", RECORDED, None)
    assert int(info.value.status) == 0xC310
    assert info.value.warning == "The target URI did not reference a claimed Workitem."


def test_warnings_are_warning_statuses():
    assert Status(0xB304).is_warning and not Status(0xB304).is_failure
    assert Status(0xB306).is_warning and not Status(0xB306).is_failure
    for code in (0xC300, 0xC301, 0xC302, 0xC303, 0xC304, 0xC310, 0xC311):
        assert Status(code).is_failure


@pytest.mark.parametrize(("error", "http"), [
    (errors.MayNoLongerBeUpdated, 400), (errors.WrongTransactionUID, 400),
    (errors.FinalStateRequirementsNotMet, 400), (errors.AlreadyInProgress, 409),
    (errors.MayOnlyBecomeScheduledViaCreate, 409), (errors.NotInProgress, 409),
    (errors.AlreadyCompleted, 409), (errors.DuplicateWorkitem, 409),
    (errors.NoSuchWorkitem, 404), (errors.WorkitemGone, 410),
])
def test_errors_carry_the_documented_http_status(error, http):
    assert error.http_status == http


def test_error_comment_fits_dimse_lo():
    exc = errors.WrongTransactionUID("x" * 200 + "\\ é")
    assert len(exc.error_comment) == 64
    assert exc.error_comment.isascii() and "\\" not in exc.error_comment
