"""dimse.eventscu against an independent peer (pynetdicom): the association is
refused cleanly when the peer rejects it or does not take the UPS Event SOP Class,
and N-EVENT-REPORTs carry what PS3.4 CC.2.4 says, in both Little Endian syntaxes."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification

from dimse.events import _encoder, _report
from dimse.eventscu import AssociationRefused, EventAssociation
from tests.conftest import free_port
from worklist.values import UPS_EVENT, UPS_PUSH

PAYLOAD = json.dumps({
    "00000002": {"vr": "UI", "Value": [UPS_PUSH]},
    "00001000": {"vr": "UI", "Value": ["1.2.826.0.1.3680043.8.498.1"]},
    "00001002": {"vr": "US", "Value": [1]},
    "00741000": {"vr": "CS", "Value": ["IN PROGRESS"]},
    "00404041": {"vr": "CS", "Value": ["READY"]},
})


def _peer(contexts: list[tuple[str, list[str]]], **kwargs: Any) -> tuple[Any, int, list]:
    ae = AE(ae_title="PEER")
    for uid, syntaxes in contexts:
        ae.add_supported_context(uid, syntaxes, scu_role=True, scp_role=True)
    for key, value in kwargs.items():
        setattr(ae, key, value)
    got: list[Any] = []

    def on_report(event: Any) -> tuple[int, None]:
        got.append((event.request, event.event_information, event.context.transfer_syntax))
        return 0, None

    port = free_port()
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    return server, port, got


@pytest.mark.parametrize("syntax", [ImplicitVRLittleEndian, ExplicitVRLittleEndian])
def test_event_report_reaches_pynetdicom_in_either_syntax(syntax: str) -> None:
    server, port, got = _peer([(UPS_EVENT, [syntax])])
    try:
        assoc = EventAssociation("127.0.0.1", port, "PEER", "WORKLIST", timeout=5).open()
        assert assoc.transfer_syntax == syntax
        obj, event_type, uid = _report(PAYLOAD)
        assert assoc.send_event_report(_encoder(obj), event_type, UPS_PUSH, uid) == 0
        assoc.release()
        (request, info, ts), = got
        assert ts == syntax
        assert request.AffectedSOPClassUID == UPS_PUSH
        assert request.AffectedSOPInstanceUID == uid and request.EventTypeID == 1
        assert (info.ProcedureStepState, info.InputReadinessState) == ("IN PROGRESS", "READY")
    finally:
        server.shutdown()


def test_a_peer_without_ups_event_refuses_the_context() -> None:
    server, port, _ = _peer([(Verification, [ImplicitVRLittleEndian])])
    try:
        with pytest.raises(AssociationRefused, match="did not accept the UPS Event"):
            EventAssociation("127.0.0.1", port, "PEER", "WORKLIST", timeout=5).open()
    finally:
        server.shutdown()


def test_a_rejected_association_says_so() -> None:
    server, port, _ = _peer([(UPS_EVENT, [ImplicitVRLittleEndian])], require_called_aet=True)
    try:
        with pytest.raises(AssociationRefused, match="rejected the association"):
            EventAssociation("127.0.0.1", port, "SOMEONE", "WORKLIST", timeout=5).open()
    finally:
        server.shutdown()


def test_a_silent_peer_times_out() -> None:
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    accepted: list[socket.socket] = []
    t = threading.Thread(target=lambda: accepted.append(listener.accept()[0]))
    t.start()
    try:
        with pytest.raises(ConnectionError, match="no answer from PEER within 0.5 s"):
            EventAssociation("127.0.0.1", port, "PEER", "WORKLIST", timeout=0.5).open()
    finally:
        t.join(2)
        for s in accepted:
            s.close()
        listener.close()
