"""Load on the in-process server: 256 concurrent streams, a storm of disconnects (stream and
non-stream), hostile requests in the middle of load, and the bounded waiting queue."""
from __future__ import annotations

import asyncio
import json
import socket
import time

import httpx
import pytest

from litevllm import SamplingParams

MODEL_NAME = "tiny-llama"  # the conftest servers' name


def wait_until(cond, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return cond()


async def sse(http: httpx.AsyncClient, body: dict) -> list:
    """Every parsed ``data:`` payload of one stream, "[DONE]" included."""
    events = []
    async with http.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
        assert r.status_code == 200, await r.aread()
        async for line in r.aiter_lines():
            if line.startswith("data: "):
                events.append("[DONE]" if line == "data: [DONE]" else json.loads(line[6:]))
    return events


def client(server, n=300) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=server.url, timeout=60, limits=httpx.Limits(
        max_connections=n, max_keepalive_connections=n))


def test_256_concurrent_streams(server):
    async def main():
        async with client(server) as http:
            bodies = [{"model": MODEL_NAME, "prompt": f"Request number {i}", "max_tokens": 6,
                       "ignore_eos": True, "temperature": 0} for i in range(256)]
            return await asyncio.gather(*(sse(http, b) for b in bodies))
    results = asyncio.run(main())
    for events in results:
        assert events[-1] == "[DONE]"
        chunks = events[:-1]
        assert chunks[-1]["choices"][0]["finish_reason"] == "length"
        assert len({c["id"] for c in chunks}) == 1
    assert wait_until(server.all_blocks_free, 5)


def test_disconnect_storm_frees_every_block(server):
    async def main():
        async with client(server) as http:
            long = {"model": MODEL_NAME, "prompt": "Tell me a story", "max_tokens": 900,
                    "ignore_eos": True}

            async def stream_then_leave():
                async with http.stream("POST", "/v1/completions",
                                       json={**long, "stream": True}) as r:
                    async for line in r.aiter_lines():
                        if line.startswith("data: "):
                            return  # leaving the block closes the connection

            async def non_stream_then_leave():
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(http.post("/v1/completions", json=long), 0.5)

            await asyncio.gather(*[stream_then_leave() for _ in range(24)],
                                 *[non_stream_then_leave() for _ in range(12)])
    asyncio.run(main())
    # every request was abandoned mid-flight; the engine must drop them all within about 1 s
    assert wait_until(server.all_blocks_free, 1.5), server.engine.stats()


def _raw(port: int, head: bytes, body_chunks=(), read=True) -> bytes:
    """Send a raw HTTP request (the body possibly cut short by the server) and read the reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head)
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
        except OSError:  # the server answered and closed before the whole body
            pass
        data = b""
        while read:
            try:
                part = sock.recv(65536)
            except OSError:
                break
            if not part:
                break
            data += part
            if b"\r\n\r\n" in data and b"}" in data:
                break
        return data


def test_hostile_requests_fail_alone_under_load(server, ref_llm, model_dir):
    port, url = server.port, server.url
    good = {"model": MODEL_NAME, "prompt": "Hello world", "max_tokens": 60, "ignore_eos": True,
            "temperature": 0}
    want = ref_llm.generate("Hello world", SamplingParams(temperature=0, max_tokens=60,
                                                          ignore_eos=True))[0].outputs[0].text
    big = 50 * 2**20

    def hostile() -> list:
        replies = []
        with httpx.Client(base_url=url, timeout=30) as http:
            for body in ({"model": MODEL_NAME, "prompt": "Hi", "max_tokens": 2, "temperature": 1,
                          "top_k": 9223372036854775808},
                         {"model": MODEL_NAME, "prompt": "Hi", "max_tokens": True}):
                replies.append(http.post("/v1/completions", json=body))
            for raw in (b'{"prompt": "Hi", "temperature": Infinity}',
                        b'{"prompt": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                        b"[" * 200_000 + b"]" * 200_000, b"{not json"):
                replies.append(http.post("/v1/completions", content=raw,
                                         headers={"Content-Type": "application/json"}))
            replies.append(http.post("/v1/completions", content=b'{"prompt": "Hi"}',
                                     headers={"Content-Type": "text/plain"}))  # cross-site form
        return replies

    async def main():
        async with client(server) as http:
            streams = [asyncio.ensure_future(sse(http, good)) for _ in range(6)]
            await asyncio.sleep(0.2)
            replies = await asyncio.to_thread(hostile)
            # a 50 MB body: refused from its Content-Length, and while streaming (chunked)
            head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                    b"\r\nContent-Length: %d\r\n\r\n" % big)
            declared = await asyncio.to_thread(_raw, port, head, [b"x" * 2**20] * 2)
            head = (b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json"
                    b"\r\nTransfer-Encoding: chunked\r\n\r\n")
            chunk = b"%x\r\n%s\r\n" % (2**20, b" " * 2**20)
            chunked = await asyncio.to_thread(_raw, port, head, [chunk] * 50)
            return await asyncio.gather(*streams), replies, declared, chunked
    results, replies, declared, chunked = asyncio.run(main())
    for events in results:
        assert events[-1] == "[DONE]"
        assert "".join(c["choices"][0]["text"] for c in events[:-1]) == want
    assert [r.status_code for r in replies] == [400] * 7
    assert replies[0].json()["error"]["param"] == "top_k"
    assert replies[1].json()["error"]["param"] == "max_tokens"
    assert replies[2].json()["error"]["param"] == "temperature"
    assert declared.startswith(b"HTTP/1.1 413") and chunked.startswith(b"HTTP/1.1 413")
    for r in replies:
        err = r.json()["error"]
        assert set(err) == {"message", "type", "param", "code"}
        assert str(model_dir) not in r.text and "Traceback" not in r.text and "python" not in r.text.lower()
    assert wait_until(server.all_blocks_free, 5)


@pytest.fixture(scope="module")
def tight_server(start_server):
    return start_server(llm_options={"max_num_seqs": 2}, engine_options={"max_waiting": 2})


def test_full_queue_answers_503_with_retry_after(tight_server):
    body = {"model": MODEL_NAME, "prompt": "Hi", "max_tokens": 200, "ignore_eos": True}

    async def main():
        async with client(tight_server) as http:
            return await asyncio.gather(*(http.post("/v1/completions", json=body)
                                          for _ in range(10)))
    replies = asyncio.run(main())
    codes = sorted(r.status_code for r in replies)
    assert codes.count(200) >= 2 and 503 in codes, codes
    busy = next(r for r in replies if r.status_code == 503)
    assert busy.headers["retry-after"] == "1" and busy.json()["error"]["type"] == "server_error"
    assert wait_until(tight_server.all_blocks_free, 5)


def test_dead_engine_reports_503(tight_server):
    """Runs last on this server: once the engine loop stops, /health and requests say 503."""
    tight_server.engine.shutdown(0)
    with httpx.Client(base_url=tight_server.url, timeout=10) as http:
        assert http.get("/health").status_code == 503
        r = http.post("/v1/completions", json={"model": MODEL_NAME, "prompt": "Hi"})
        assert r.status_code == 503 and r.json()["error"]["type"] == "server_error"
