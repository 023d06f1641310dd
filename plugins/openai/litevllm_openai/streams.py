"""asyncio helpers: merge several requests' output streams, and stop (aborting the requests)
as soon as the HTTP client goes away."""
from __future__ import annotations

import asyncio
from typing import AsyncIterator


class ClientGone(Exception):
    """The HTTP client disconnected."""


async def _disconnected(request) -> None:
    """Returns when the client disconnects (the body was read, so only http.disconnect comes)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


async def merge(gens: list) -> AsyncIterator[tuple[int, object]]:
    """(index, item) from several async iterators as they come; closing this closes them all."""
    if len(gens) == 1:
        try:
            async for item in gens[0]:
                yield 0, item
        finally:
            await gens[0].aclose()
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(i, gen):
        try:
            async for item in gen:
                await queue.put((i, item, None))
        except Exception as e:
            await queue.put((i, None, e))
        finally:
            await queue.put((i, None, None))

    tasks = [asyncio.ensure_future(pump(i, g)) for i, g in enumerate(gens)]
    try:
        remaining = len(tasks)
        while remaining:
            i, item, error = await queue.get()
            if error is not None:
                raise error
            if item is None:
                remaining -= 1
            else:
                yield i, item
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def until_disconnect(request, coro):
    """Await ``coro`` unless the client disconnects first: then cancel it (which aborts its
    requests) and raise ClientGone."""
    task = asyncio.ensure_future(coro)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            return task.result()
        raise ClientGone
    finally:
        for t in (task, watcher):
            t.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)


async def iterate_until_disconnect(request, source):
    """Items of the async iterator ``source`` until the client disconnects: then close it
    (which aborts its requests) and raise ClientGone."""
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        while True:
            step = asyncio.ensure_future(source.__anext__())
            await asyncio.wait({step, watcher}, return_when=asyncio.FIRST_COMPLETED)
            if not step.done():
                step.cancel()
                await asyncio.gather(step, return_exceptions=True)
                raise ClientGone
            try:
                item = step.result()
            except StopAsyncIteration:
                return
            yield item
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
        await source.aclose()
