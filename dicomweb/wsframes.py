"""Pre-encoded WebSocket frames for the event channel: one encoding per event, not one
per subscriber.

An event goes to every subscriber as the same text frame (PS3.18 8.10.5: one event,
one frame).  Through ASGI each send costs a message dict, the middleware chain, and a
frame serialisation by the WebSocket library, for each of N subscribers; at 200 events
a second to 50 subscribers that is the server's whole CPU.  Instead the hub encodes
each event's frame once (:func:`text_frame`, RFC 6455 5.2: FIN, opcode 1, unmasked as
a server's frames are) and the channel writes the frames of a batch to the socket in
one call.

:class:`FramesWebSocketProtocol` is uvicorn's sans-I/O WebSocket protocol with one
addition: it offers the ASGI extension ``worklist.frames`` (``write(bytes)`` and the
``writable`` event that uvicorn's own flow control sets and clears) on connections
without a negotiated WebSocket extension (permessage-deflate would change the frame
format).  Where the extension is absent (another server, another uvicorn protocol),
the channel falls back to plain ASGI sends: same frames on the wire, only slower.
"""

from __future__ import annotations

import struct
from typing import Any

__all__ = ["text_frame", "FRAMES_EXTENSION", "FramesWebSocketProtocol"]

FRAMES_EXTENSION = "worklist.frames"


def text_frame(payload: str) -> bytes:
    """An unmasked, final text frame holding ``payload`` (RFC 6455 5.2)."""
    data = payload.encode("utf-8")
    n = len(data)
    if n < 126:
        return bytes((0x81, n)) + data
    if n < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, n) + data
    return struct.pack("!BBQ", 0x81, 127, n) + data


class _Frames:
    """What the extension hands the application: write frames, wait until writable."""

    __slots__ = ("_protocol", "writable")

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol
        self.writable = protocol.writable

    def write(self, data: bytes) -> None:
        p = self._protocol
        if p.disconnected or p.close_sent or p.transport.is_closing():
            raise ConnectionResetError("the WebSocket client has gone")
        p.transport.write(data)


try:
    from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
except ImportError:  # pragma: no cover - uvicorn without the sans-I/O protocol
    FramesWebSocketProtocol: Any = "auto"
else:
    class FramesWebSocketProtocol(WebSocketsSansIOProtocol):  # type: ignore[no-redef]
        def handle_connect(self, event: Any) -> None:
            super().handle_connect(event)
            # The ASGI task is created but has not run yet: the scope can still grow.
            scope = getattr(self, "scope", None)
            if scope is not None and not self.conn.extensions:
                scope["extensions"][FRAMES_EXTENSION] = _Frames(self)
