"""A minimal UPS event receiver for the event benchmark: accepts associations for the
UPS Event SOP Class and answers every N-EVENT-REPORT with Success at once.

pynetdicom, the benchmark's default subscriber, polls its queues every millisecond on
two threads per association, which caps one subscriber at about 200 reports a second
on these machines whatever the sender does.  This receiver, one asyncio loop for all
subscribers, shows what the worklist itself delivers when the subscriber is fast.
It speaks only what a UPS event receiver needs (PS3.8 9.3, PS3.7 10.1.1): A-ASSOCIATE
-AC for the proposed UPS Event context (Implicit VR Little Endian if proposed, with the
role selection echoed), N-EVENT-REPORT-RSP, A-RELEASE-RP.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable
from typing import Any

from dimse.eventscu import _command, _item, _parse_command, pdvs

UPS_EVENT = "1.2.840.10008.5.1.4.34.6.4"
IMPLICIT, EXPLICIT = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"


def _uid_value(raw: bytes) -> str:
    return raw.rstrip(b"\x00 ").decode("ascii")


async def _pdu(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    header = await reader.readexactly(6)
    pdu_type, _, length = struct.unpack(">BBI", header)
    return pdu_type, await reader.readexactly(length)


def _accept(rq: bytes) -> bytes:
    called, calling = rq[4:20], rq[20:36]
    i, items = 68, []
    while i + 4 <= len(rq):
        kind, length = rq[i], struct.unpack_from(">H", rq, i + 2)[0]
        body = rq[i + 4:i + 4 + length]
        if kind == 0x10:
            items.append(_item(0x10, body))
        elif kind == 0x20:
            pc_id, j, abstract, syntaxes = body[0], 4, "", []
            while j + 4 <= len(body):
                sub, sub_len = body[j], struct.unpack_from(">H", body, j + 2)[0]
                value = _uid_value(body[j + 4:j + 4 + sub_len])
                if sub == 0x30:
                    abstract = value
                elif sub == 0x40:
                    syntaxes.append(value)
                j += 4 + sub_len
            ok = abstract == UPS_EVENT and (IMPLICIT in syntaxes or EXPLICIT in syntaxes)
            ts = IMPLICIT if IMPLICIT in syntaxes else EXPLICIT
            items.append(_item(0x21, bytes((pc_id, 0, 0 if ok else 3, 0))
                               + _item(0x40, ts.encode())))
        elif kind == 0x50:
            user = _item(0x51, struct.pack(">I", 1 << 20)) + _item(0x52, b"1.2.3.4.5.6")
            j = 0
            while j + 4 <= len(body):
                sub, sub_len = body[j], struct.unpack_from(">H", body, j + 2)[0]
                if sub == 0x54:  # role selection: accept what was proposed
                    user += _item(0x54, body[j + 4:j + 4 + sub_len])
                j += 4 + sub_len
            items.append(_item(0x50, user))
        i += 4 + length
    body = struct.pack(">HH", 1, 0) + called + calling + bytes(32) + b"".join(items)
    return struct.pack(">BBI", 0x02, 0, len(body)) + body


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 on_event: Callable[[int, str], None]) -> None:
    try:
        pdu_type, rq = await _pdu(reader)
        if pdu_type != 0x01:
            return
        writer.write(_accept(rq))
        command, pc_id, awaiting_data = b"", 1, False
        while True:
            pdu_type, data = await _pdu(reader)
            if pdu_type == 0x05:
                writer.write(struct.pack(">BBI", 0x06, 0, 4) + bytes(4))
                await writer.drain()
                return
            if pdu_type != 0x04:
                return
            for pc_id, control, fragment in pdvs(data):
                if control & 0x01:
                    command += fragment
                    if control & 0x02:
                        fields = _parse_command(command)
                        awaiting_data = fields.get(0x00000800) != b"\x01\x01"
                        if not awaiting_data:
                            command = _respond(writer, fields, pc_id, on_event)
                elif control & 0x02 and awaiting_data:
                    command = _respond(writer, _parse_command(command), pc_id, on_event)
                    awaiting_data = False
    except (asyncio.IncompleteReadError, ConnectionError, asyncio.CancelledError):
        pass  # the sender went, or the benchmark ends
    finally:
        writer.close()


def _respond(writer: asyncio.StreamWriter, fields: dict[int, bytes], pc_id: int,
             on_event: Callable[[int, str], None]) -> bytes:
    event_type = struct.unpack("<H", fields[0x00001002])[0]
    uid = _uid_value(fields[0x00001000])
    on_event(event_type, uid)
    rsp = _command([(0x0002, fields[0x00000002]), (0x0100, struct.pack("<H", 0x8100)),
                    (0x0120, fields[0x00000110]), (0x0800, struct.pack("<H", 0x0101)),
                    (0x0900, struct.pack("<H", 0)), (0x1000, fields[0x00001000]),
                    (0x1002, fields[0x00001002])])
    pdv = struct.pack(">IBB", len(rsp) + 2, pc_id, 0x03) + rsp
    writer.write(struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv)
    return b""


def run(names: list[str], ports: object, out: object, stop: object) -> None:
    """Process entry point, like bench_events.dimse_process."""
    seen: dict[str, list[tuple[str, float]]] = {n: [] for n in names}

    async def main() -> None:
        servers = []
        for name in names:
            def on_event(event_type: int, uid: str, name: str = name) -> None:
                if event_type == 1:
                    seen[name].append((uid, time.time()))
            server = await asyncio.start_server(
                lambda r, w, cb=on_event: _serve(r, w, cb), "127.0.0.1", 0)
            servers.append(server)
            ports.put((name, server.sockets[0].getsockname()[1]))  # type: ignore[attr-defined]
        while not stop.is_set():  # type: ignore[attr-defined]
            await asyncio.sleep(0.1)
        for server in servers:
            server.close()

    _run_fast(main())
    out.put(seen)  # type: ignore[attr-defined]


def _run_fast(coro: Any) -> None:
    """uvloop when installed (the subscribers share the machine with the server)."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        asyncio.run(coro)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(coro)
