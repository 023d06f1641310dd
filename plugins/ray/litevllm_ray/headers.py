"""``x-litevllm-replica``: every reply names the replica that served it.

The replica is known only when its first output arrives, after a streaming reply may have
started; the middleware holds the reply's start (and any early chunks) until then.
"""
from __future__ import annotations

import contextvars

HEADER = b"x-litevllm-replica"
_served_by: contextvars.ContextVar[dict | None] = contextvars.ContextVar("served_by", default=None)


def note_replica(name: str) -> None:
    """Record the replica serving the current HTTP request (first one wins)."""
    holder = _served_by.get()
    if holder is not None:
        holder.setdefault("replica", name)


class ReplicaHeader:
    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        holder: dict = {}
        _served_by.set(holder)   # tasks the app spawns share this dict
        held: list = []

        async def flush():
            start = held[0]
            if "replica" in holder:
                start["headers"] = [*start.get("headers", []),
                                    (HEADER, holder["replica"].encode())]
            for message in held:
                await send(message)
            held.clear()

        async def send_held(message):
            if held or message["type"] == "http.response.start":
                held.append(message)
                done = message["type"] == "http.response.body" and not message.get("more_body")
                if "replica" in holder or done:
                    await flush()
                return
            await send(message)
        await self.app(scope, receive, send_held)
        if held:
            await flush()
