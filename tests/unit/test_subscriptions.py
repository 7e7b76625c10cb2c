"""Pure parts of the subscriptions: AE title checks, scope from the UID, the event as
PS3.18 8.10.5 sends it, and the bounded live channel."""

from __future__ import annotations

import json

import pytest

from worklist import errors
from worklist.delivery import Channel
from worklist.events import EventType, UPSEvent
from worklist.subscriptions import (FILTERED_UID, GLOBAL_UID, Kind, check_ae_title,
                                    event_payload, kind_of)
from worklist.values import UPS_PUSH


@pytest.mark.parametrize("value,expected", [("VIEWER1", "VIEWER1"), (" QA ", "QA"),
                                            ("A" * 16, "A" * 16), ("a-b_c.d", "a-b_c.d")])
def test_valid_ae_titles(value: str, expected: str) -> None:
    assert check_ae_title(value) == expected


@pytest.mark.parametrize("value", ["", "    ", "A" * 17, "BAD\\AE", "TAB\tAE", "NL\nAE",
                                   "ÄE", "DEL\x7f", None])
def test_invalid_ae_titles_are_0115(value: str | None) -> None:
    with pytest.raises(errors.InvalidArgumentValue) as info:
        check_ae_title(value)
    assert info.value.status == 0x0115 and info.value.http_status == 400


def test_kind_of() -> None:
    assert kind_of(GLOBAL_UID) is Kind.GLOBAL
    assert kind_of(FILTERED_UID) is Kind.FILTERED
    assert kind_of("1.2.3.4") is Kind.WORKITEM


def test_event_payload_carries_the_command_fields() -> None:
    event = UPSEvent(EventType.UPS_STATE_REPORT, "1.2.3",
                     {"00741000": {"vr": "CS", "Value": ["SCHEDULED"]}})
    ds = json.loads(event_payload(event))
    assert ds["00000002"] == {"vr": "UI", "Value": [UPS_PUSH]}
    assert ds["00001000"] == {"vr": "UI", "Value": ["1.2.3"]}
    assert ds["00001002"] == {"vr": "US", "Value": [1]}
    assert ds["00741000"]["Value"] == ["SCHEDULED"]
    assert list(ds) == sorted(ds)


def test_a_channel_overflows_instead_of_growing() -> None:
    woken = []
    channel = Channel("AE", lambda: woken.append(1), limit=2)
    assert channel.offer(1, "a") and channel.offer(2, "b")
    assert not channel.offer(3, "c")
    assert channel.overflowed and channel.take() == []
    assert not channel.offer(4, "d")  # stays overflowed: the consumer reconnects


def test_deletion_lock_not_granted_is_b301() -> None:
    warning = errors.deletion_lock_not_granted()
    assert warning.status == 0xB301 and warning.text == "Deletion Lock not granted."
