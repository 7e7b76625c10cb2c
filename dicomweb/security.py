"""Who is calling: loopback clients need no credentials, everyone else authenticates.

A client on the loopback interface may still name itself with credentials (its
name then goes into the workitem history).  Any other client must send
``Authorization: Bearer TOKEN`` or ``Basic user:TOKEN`` for a user configured in the
server's ``users`` table; without one it gets 401 and nothing else.
"""

from __future__ import annotations

import base64
import functools
import hmac
import ipaddress

from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["AuthMiddleware", "is_loopback"]


@functools.lru_cache(maxsize=1024)  # asked on every request; clients are few
def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


class AuthMiddleware:
    def __init__(self, app: ASGIApp, users: dict[str, str]) -> None:
        self.app = app
        self.users = dict(users)

    def _user(self, header: str | None) -> str | None:
        if not header:
            return None
        scheme, _, credentials = header.partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            for user, token in self.users.items():
                if hmac.compare_digest(token.encode(), credentials.strip().encode()):
                    return user
        elif scheme == "basic":
            try:
                user, _, token = base64.b64decode(credentials.strip()).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                return None
            expected = self.users.get(user)
            if expected is not None and hmac.compare_digest(expected.encode(), token.encode()):
                return user
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization")
        user = self._user(auth.decode("latin-1") if auth else None)
        client = scope.get("client")
        host = client[0] if client else None
        if user is None and not is_loopback(host):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
                return
            body = (b'{"message":"Authentication required: send Authorization: Bearer TOKEN '
                    b'for a configured user (clients on loopback need none)"}')
            await send({"type": "http.response.start", "status": 401, "headers": [
                (b"content-type", b"application/json"),
                (b"www-authenticate", b'Bearer realm="worklist", Basic realm="worklist"'),
                (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        scope.setdefault("state", {})["user"] = user or f"loopback:{host}"
        await self.app(scope, receive, send)
