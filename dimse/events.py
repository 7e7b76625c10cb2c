"""UPS events to DIMSE subscribers: N-EVENT-REPORT (PS3.4 CC.2.4) from the outbox.

One thread per configured peer AE (``Settings.peers``: only those can subscribe over
DIMSE, anything else is refused with C308).  Each thread keeps an association to its
peer open (``dimse.eventscu``: a lean requester on one socket), proposing the UPS Event
SOP Class with SCP/SCU Role Selection (the worklist is the SCP of UPS Event:
scu_role=False, scp_role=True, as dcm4chee does), and sends
the peer's events after its "DIMSE" delivery cursor in outbox order, one at a time
(TCP_NODELAY: no Nagle delay per message); the cursor advances past the events
answered Success (0000), once per batch.  A failure (no association, a refused
context, a non-Success status) is retried with exponential backoff (0.5 s to 30 s)
from the same event, so order is kept and nothing is skipped.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset

from worklist.delivery import Channel
from worklist.values import UPS_PUSH

from .encoding import encode_json
from .eventscu import EventAssociation

__all__ = ["EventSender", "start_event_senders"]

log = logging.getLogger("worklist.dimse.events")
_MIN_BACKOFF, _MAX_BACKOFF = 0.5, 30.0
_BATCH = 500


def _report(payload: str) -> tuple[dict[str, Any], int, str]:
    """The event's data set as DICOM JSON (no command group), Event Type ID and
    affected instance."""
    ds = json.loads(payload)
    event_type = int(ds.pop("00001002")["Value"][0])
    uid = str(ds.pop("00001000")["Value"][0])
    return {k: v for k, v in ds.items() if not k.startswith("0000")}, event_type, uid


def _encoder(obj: dict[str, Any]) -> Any:
    """``encode(implicit) -> bytes``: the fast JSON encoder, else pydicom."""
    def encode(implicit: bool) -> bytes:
        data = encode_json(obj, implicit)
        if data is None:
            buf = DicomBytesIO()
            buf.is_little_endian, buf.is_implicit_VR = True, implicit
            write_dataset(buf, Dataset.from_json(obj))
            data = buf.getvalue()
        return data
    return encode


class _Wakeup(Channel):
    """A channel that only wakes its sender: events are read from the outbox."""

    def offer(self, seq: int, payload: str) -> bool:
        return True


class EventSender:
    """Delivers one peer AE's events over DIMSE, in order, until stopped."""

    def __init__(self, service: Any, ae_title: str, address: str, *, calling_ae: str,
                 timeout: float = 10.0) -> None:
        self.service = service
        self.ae_title = ae_title
        host, _, port = address.rpartition(":")
        self.host, self.port = host, int(port)
        self.calling_ae = calling_ae
        self.timeout = timeout
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._channel = _Wakeup(ae_title, self._wake.set)
        self._assoc: Any = None
        self._thread = threading.Thread(target=self._run, name=f"events-{ae_title}",
                                        daemon=True)

    def start(self) -> EventSender:
        self._sent = self.service.delivery_cursor(self.ae_title, "DIMSE")
        self.service.hub.attach(self._channel)
        self._thread.start()
        return self

    def pending(self) -> bool:
        """Whether the outbox holds events for this peer not yet answered Success."""
        return bool(self.service.pending_events(self.ae_title, after=self._sent, limit=1,
                                                channel="DIMSE", newest=False))

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self.service.hub.detach(self._channel)
        self._thread.join(timeout=self.timeout + 5)
        self._release()
        self.service.hub.flush_cursors()

    def _run(self) -> None:
        backoff = _MIN_BACKOFF
        while not self._stop.is_set():
            self._wake.clear()
            try:
                pending = self.service.pending_events(self.ae_title, after=self._sent,
                                                      limit=_BATCH, channel="DIMSE",
                                                      newest=False)
                sent = 0
                try:
                    for seq, payload in pending:
                        if self._stop.is_set():
                            break
                        self._send(payload)
                        sent = seq
                finally:
                    # Noted, and written by the hub with every other cursor at most every
                    # 0.5 s: after a crash the peer may get some events again (at least
                    # once), never miss one.
                    if sent:
                        self._sent = sent
                        self.service.hub.note_delivered(self.ae_title, sent, "DIMSE")
                if self._stop.is_set():
                    return
                backoff = _MIN_BACKOFF
                if len(pending) == _BATCH:
                    continue
                self._wake.wait(self.service.hub.poll_seconds)
            except Exception as exc:  # retried from the same event after a pause
                log.warning("N-EVENT-REPORT to %s failed (%s); retrying in %.1f s",
                            self.ae_title, exc, backoff)
                self._release()
                self._stop.wait(backoff)
                backoff = min(backoff * 2, _MAX_BACKOFF)

    def _send(self, payload: str) -> None:
        obj, event_type, uid = _report(payload)
        assoc = self._association()
        # PS3.4 CC.2.4: Affected SOP Class UID is UPS Push in every UPS event
        code = assoc.send_event_report(_encoder(obj), event_type, UPS_PUSH, uid)
        if code != 0:
            self._release()
            raise RuntimeError(f"status 0x{code:04X}")

    def _association(self) -> EventAssociation:
        if self._assoc is not None and self._assoc.is_established:
            return self._assoc
        self._assoc = EventAssociation(self.host, self.port, self.ae_title, self.calling_ae,
                                       timeout=self.timeout).open()
        return self._assoc

    def _release(self) -> None:
        assoc, self._assoc = self._assoc, None
        if assoc is not None:
            assoc.release()


def start_event_senders(service: Any, peers: dict[str, str], calling_ae: str,
                        timeout: float = 10.0) -> list[EventSender]:
    """One running :class:`EventSender` per peer AE."""
    return [EventSender(service, ae, addr, calling_ae=calling_ae, timeout=timeout).start()
            for ae, addr in peers.items()]
