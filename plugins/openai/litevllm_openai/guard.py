"""Checks every HTTP request passes before the app sees it (one pure ASGI middleware): the API
key (constant-time compare), the body-size limit (413 before any parsing, from Content-Length
or while reading), a body-read timeout, and the ``x-request-id`` header echoed back."""
from __future__ import annotations

import asyncio
import hmac
import json
import uuid

OPEN_PATHS = ("/health",)  # answered without the API key (load balancers probe it)


class TooLarge(Exception):
    """The body grew past the limit while being read."""
    pass


def _error(status: int, message: str, type: str) -> tuple[dict, bytes]:
    body = json.dumps({"error": {"message": message, "type": type, "param": None,
                                 "code": None}}).encode()
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"),
                         (b"content-length", str(len(body)).encode())]}
    return start, body


class Guard:
    def __init__(self, app, api_key: str | None, max_request_bytes: int,
                 body_timeout: float = 30.0):
        self.app, self.max_bytes, self.body_timeout = app, max_request_bytes, body_timeout
        self.api_key = api_key.encode() if api_key else None

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        rid = headers.get(b"x-request-id", b"")[:256] or uuid.uuid4().hex.encode()
        started = False

        async def send_with_id(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-request-id", rid)]}
            await send(message)

        async def reply(status, message, type, extra=()):
            start, body = _error(status, message, type)
            start["headers"] += list(extra)
            await send_with_id(start)
            await send({"type": "http.response.body", "body": body})

        if self.api_key and scope["path"] not in OPEN_PATHS:
            auth = headers.get(b"authorization", b"")
            token = auth[7:] if auth[:7].lower() == b"bearer " else b""
            if not hmac.compare_digest(token, self.api_key):
                return await reply(401, "invalid or missing API key (Authorization: Bearer ...)",
                                   "authentication_error", [(b"www-authenticate", b"Bearer")])
        try:
            declared = int(headers.get(b"content-length", b"0") or 0)
        except ValueError:
            return await reply(400, "invalid Content-Length", "invalid_request_error")
        if declared > self.max_bytes:
            return await reply(413, f"the request body exceeds {self.max_bytes} bytes",
                               "invalid_request_error", [(b"connection", b"close")])
        received, body_done = 0, False

        async def limited_receive():
            nonlocal received, body_done
            if body_done:  # afterwards only http.disconnect comes, whenever it comes
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except asyncio.TimeoutError:
                return {"type": "http.disconnect"}  # a stalled upload: drop the request
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > self.max_bytes:
                    raise TooLarge
            return message

        try:
            await self.app(scope, limited_receive, send_with_id)
        except TooLarge:
            if not started:
                await reply(413, f"the request body exceeds {self.max_bytes} bytes",
                            "invalid_request_error", [(b"connection", b"close")])
