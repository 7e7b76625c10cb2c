"""A lean association for sending N-EVENT-REPORT, straight on a socket.

pynetdicom's association threads poll their queues every millisecond on both sides,
so one N-EVENT-REPORT round trip costs about 8 ms and five kept-open associations keep
ten threads spinning: too slow for 200 events a second to each of several subscribers
(issue 4).  This module speaks the few PDUs a sender of UPS events needs, written from
PS3.8 and PS3.7, with one blocking socket and no threads:

* A-ASSOCIATE-RQ (PS3.8 9.3.2) proposing the UPS Event SOP Class (PS3.4 CC.3.1) with
  Explicit and Implicit VR Little Endian and SCP/SCU Role Selection (PS3.7 D.3.3.4:
  the worklist, association requester, takes the SCP role of UPS Event, the one that
  sends N-EVENT-REPORT); A-ASSOCIATE-AC / -RJ (9.3.3, 9.3.4) read back;
* N-EVENT-REPORT-RQ (PS3.7 10.1.1.1): the command set in Implicit VR Little Endian
  (PS3.7 6.3.1), the data set in the accepted transfer syntax, each in P-DATA-TF PDVs
  (PS3.8 9.3.5, E.2) no longer than the peer's Maximum Length; the N-EVENT-REPORT-RSP
  status read back (PS3.7 10.1.1.1.8);
* A-RELEASE-RQ/RP (9.3.6, 9.3.7) and A-ABORT (9.3.8).

Only one operation is outstanding at a time (no Asynchronous Operations Window is
proposed, PS3.7 D.3.3.3), as PS3.4 requires unless one is negotiated.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Callable, Iterator

__all__ = ["EventAssociation", "AssociationRefused", "AssociationLost"]

APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"  # PS3.7 A.2.1
EXPLICIT_LE, IMPLICIT_LE = "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"
IMPLEMENTATION_CLASS_UID = "1.2.826.0.1.3680043.10.1347.1"
IMPLEMENTATION_VERSION = "WORKLIST_010"
_PC_ID = 1
_OUR_MAX_PDU = 1 << 20
_N_EVENT_REPORT_RQ, _N_EVENT_REPORT_RSP = 0x0100, 0x8100


class AssociationRefused(ConnectionError):
    """A-ASSOCIATE-RJ, or the presentation context was not accepted."""


class AssociationLost(ConnectionError):
    """A-ABORT, an unexpected PDU, a closed socket or a timeout."""


def _uid(value: str) -> bytes:
    data = value.encode("ascii")
    return data + b"\x00" if len(data) % 2 else data


def _ascii(value: str) -> bytes:
    return value.encode("ascii")


def _ae(value: str) -> bytes:
    return value.encode("ascii")[:16].ljust(16, b" ")


def _item(item_type: int, body: bytes) -> bytes:
    return struct.pack(">BBH", item_type, 0, len(body)) + body


def _element(group: int, elem: int, value: bytes) -> bytes:  # Implicit VR LE
    return struct.pack("<HHI", group, elem, len(value)) + value


def _command(fields: list[tuple[int, bytes]]) -> bytes:
    body = b"".join(_element(0x0000, e, v) for e, v in fields)
    return _element(0x0000, 0x0000, struct.pack("<I", len(body))) + body


def pdvs(data: bytes) -> Iterator[tuple[int, int, bytes]]:
    """The PDVs of a P-DATA-TF PDU's body (PS3.8 9.3.5): (presentation context ID,
    message control header, fragment)."""
    i = 0
    while i + 6 <= len(data):
        length = struct.unpack_from(">I", data, i)[0]
        yield data[i + 4], data[i + 5], data[i + 6:i + 4 + length]
        i += 4 + length


def _parse_command(data: bytes) -> dict[int, bytes]:
    out, i = {}, 0
    while i + 8 <= len(data):
        group, elem, length = struct.unpack_from("<HHI", data, i)
        out[(group << 16) | elem] = data[i + 8:i + 8 + length]
        i += 8 + length
    return out


class EventAssociation:
    """One association to a subscriber's Receiving AE, used for N-EVENT-REPORT."""

    def __init__(self, host: str, port: int, called_ae: str, calling_ae: str, *,
                 timeout: float = 10.0,
                 connect: Callable[..., socket.socket] = socket.create_connection) -> None:
        self.host, self.port = host, port
        self.called_ae, self.calling_ae = called_ae, calling_ae
        self.timeout = timeout
        self._connect = connect
        self._sock: socket.socket | None = None
        self.transfer_syntax = ""
        self.peer_max_pdu = 0
        self.peer_implementation = ""
        self._message_id = 0

    @property
    def is_established(self) -> bool:
        return self._sock is not None

    # -- association -----------------------------------------------------------------
    def open(self) -> EventAssociation:
        from worklist.values import UPS_EVENT

        sock = self._connect((self.host, self.port), timeout=self.timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.settimeout(self.timeout)
        self._sock = sock
        # PS3.8 Annex F: UIDs in PDU items are not padded.
        pc = (struct.pack(">BBBB", _PC_ID, 0, 0, 0) + _item(0x30, _ascii(UPS_EVENT))
              + _item(0x40, _ascii(EXPLICIT_LE)) + _item(0x40, _ascii(IMPLICIT_LE)))
        role_uid = _ascii(UPS_EVENT)
        role = struct.pack(">H", len(role_uid)) + role_uid + bytes((0, 1))  # SCU 0, SCP 1
        user = (_item(0x51, struct.pack(">I", _OUR_MAX_PDU))
                + _item(0x52, _ascii(IMPLEMENTATION_CLASS_UID))
                + _item(0x54, role)
                + _item(0x55, IMPLEMENTATION_VERSION.encode("ascii")))
        body = (struct.pack(">HH", 1, 0) + _ae(self.called_ae) + _ae(self.calling_ae)
                + bytes(32) + _item(0x10, APPLICATION_CONTEXT.encode("ascii"))
                + _item(0x20, pc) + _item(0x50, user))
        try:
            self._send_pdu(0x01, body)
            pdu_type, data = self._read_pdu()
        except Exception:
            self._close()
            raise
        if pdu_type == 0x03:
            self._close()
            result, source, reason = data[1], data[2], data[3]
            raise AssociationRefused(f"{self.called_ae} rejected the association (result "
                                     f"{result}, source {source}, reason {reason})")
        if pdu_type != 0x02:
            self.abort()
            raise AssociationLost(f"unexpected PDU 0x{pdu_type:02X} instead of A-ASSOCIATE-AC")
        self._read_accept(data)
        return self

    def _read_accept(self, data: bytes) -> None:
        i = 68  # protocol version, reserved, AE titles (echoed), 32 reserved bytes
        accepted = False
        while i + 4 <= len(data):
            item_type, length = data[i], struct.unpack_from(">H", data, i + 2)[0]
            body = data[i + 4:i + 4 + length]
            if item_type == 0x21 and body[0] == _PC_ID:
                if body[2] == 0:  # PS3.8 9.3.3.2: 0 = acceptance
                    j = 4
                    while j + 4 <= len(body):
                        sub, sub_len = body[j], struct.unpack_from(">H", body, j + 2)[0]
                        if sub == 0x40:
                            self.transfer_syntax = body[j + 4:j + 4 + sub_len] \
                                .rstrip(b"\x00 ").decode("ascii")
                        j += 4 + sub_len
                    accepted = bool(self.transfer_syntax)
            elif item_type == 0x50:
                j = 0
                while j + 4 <= len(body):
                    sub, sub_len = body[j], struct.unpack_from(">H", body, j + 2)[0]
                    value = body[j + 4:j + 4 + sub_len]
                    if sub == 0x51 and sub_len == 4:
                        self.peer_max_pdu = struct.unpack(">I", value)[0]
                    elif sub == 0x52:
                        self.peer_implementation = value.rstrip(b"\x00").decode("ascii", "replace")
                    j += 4 + sub_len
            i += 4 + length
        if not accepted or self.transfer_syntax not in (EXPLICIT_LE, IMPLICIT_LE):
            self.release()
            raise AssociationRefused(f"{self.called_ae} did not accept the UPS Event SOP "
                                     "Class with a Little Endian transfer syntax")

    def release(self) -> None:
        """A-RELEASE-RQ, and wait (briefly) for the A-RELEASE-RP."""
        if self._sock is None:
            return
        try:
            self._send_pdu(0x05, bytes(4))
            for _ in range(4):
                pdu_type, _data = self._read_pdu()
                if pdu_type in (0x06, 0x07):
                    break
        except (OSError, AssociationLost):
            pass
        finally:
            self._close()

    def abort(self) -> None:
        if self._sock is None:
            return
        try:
            self._send_pdu(0x07, bytes((0, 0, 0, 0)))  # source 0: service user
        except OSError:
            pass
        finally:
            self._close()

    def _close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:  # pragma: no cover
                pass

    # -- N-EVENT-REPORT ------------------------------------------------------------------
    def send_event_report(self, encode: Callable[[bool], bytes], event_type: int,
                          sop_class_uid: str, sop_instance_uid: str) -> int:
        """Send one N-EVENT-REPORT-RQ; return the response's Status.  ``encode(implicit)``
        gives the Event Information data set in the accepted transfer syntax."""
        if self._sock is None:
            raise AssociationLost("the association is not open")
        self._message_id = self._message_id % 0xFFFF + 1
        command = _command([
            (0x0002, _uid(sop_class_uid)),
            (0x0100, struct.pack("<H", _N_EVENT_REPORT_RQ)),
            (0x0110, struct.pack("<H", self._message_id)),
            (0x0800, struct.pack("<H", 0x0000)),  # a data set follows
            (0x1000, _uid(sop_instance_uid)),
            (0x1002, struct.pack("<H", event_type)),
        ])
        dataset = encode(self.transfer_syntax == IMPLICIT_LE)
        try:
            self._sock.sendall(self._p_data(command, 0x03) + self._p_data(dataset, 0x00))
            return self._read_response()
        except (OSError, AssociationLost):
            self.abort()
            raise

    def _p_data(self, data: bytes, control: int) -> bytes:
        """P-DATA-TF PDUs carrying ``data``; control bit 0 = command, bit 1 = last."""
        limit = (self.peer_max_pdu or (1 << 24)) - 6  # PDV header: length, id, control
        chunks = [data[i:i + limit] for i in range(0, len(data), limit)] or [b""]
        out = []
        for n, chunk in enumerate(chunks):
            header = control | (0x02 if n == len(chunks) - 1 else 0)
            pdv = struct.pack(">IBB", len(chunk) + 2, _PC_ID, header) + chunk
            out.append(struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv)
        return b"".join(out)

    def _read_response(self) -> int:
        command = b""
        has_data = False
        while True:
            pdu_type, data = self._read_pdu()
            if pdu_type == 0x07:
                self._close()
                raise AssociationLost(f"{self.called_ae} aborted the association")
            if pdu_type == 0x05:  # the peer asks to release: answer, then report it
                self._send_pdu(0x06, bytes(4))
                self._close()
                raise AssociationLost(f"{self.called_ae} released the association")
            if pdu_type != 0x04:
                raise AssociationLost(f"unexpected PDU 0x{pdu_type:02X}")
            for _pc_id, control, fragment in pdvs(data):
                if control & 0x01:
                    command += fragment
                    if control & 0x02:
                        fields = _parse_command(command)
                        has_data = struct.unpack("<H", fields.get(0x00000800, b"\x01\x01"))[0] \
                            != 0x0101
                        if not has_data:
                            return self._status(fields)
                elif control & 0x02 and command:  # the response's data set, last fragment
                    return self._status(_parse_command(command))

    def _status(self, fields: dict[int, bytes]) -> int:
        field = struct.unpack("<H", fields.get(0x00000100, b"\x00\x00"))[0]
        answered = struct.unpack("<H", fields.get(0x00000120, b"\x00\x00"))[0]
        if field != _N_EVENT_REPORT_RSP or answered != self._message_id:
            raise AssociationLost(f"unexpected response (command 0x{field:04X} to "
                                  f"message {answered})")
        return struct.unpack("<H", fields.get(0x00000900, b"\xff\xff"))[0]

    # -- PDUs ------------------------------------------------------------------------------
    def _send_pdu(self, pdu_type: int, body: bytes) -> None:
        assert self._sock is not None
        self._sock.sendall(struct.pack(">BBI", pdu_type, 0, len(body)) + body)

    def _read_pdu(self) -> tuple[int, bytes]:
        header = self._recv(6)
        pdu_type, _reserved, length = struct.unpack(">BBI", header)
        if length > max(_OUR_MAX_PDU, 1 << 16) + 64:
            raise AssociationLost(f"a PDU of {length} bytes exceeds our maximum")
        return pdu_type, self._recv(length)

    def _recv(self, n: int) -> bytes:
        assert self._sock is not None
        buf = bytearray()
        try:
            while len(buf) < n:
                chunk = self._sock.recv(n - len(buf))
                if not chunk:
                    raise AssociationLost(f"{self.called_ae} closed the connection")
                buf += chunk
        except socket.timeout:
            raise AssociationLost(f"no answer from {self.called_ae} within "
                                  f"{self.timeout:g} s") from None
        return bytes(buf)
