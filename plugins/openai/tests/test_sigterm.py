"""`lite serve` in a subprocess: SIGTERM stops accepting, lets a short stream finish, ends a
long one with an error chunk after --shutdown-timeout, and the process exits cleanly."""
from __future__ import annotations

import http.client
import json
import signal
import threading
import time


def stream(port, max_tokens, first_event: threading.Event, out: list, **extra):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    body = {"model": "m", "prompt": "Once upon a time", "max_tokens": max_tokens,
            "ignore_eos": True, "stream": True, **extra}
    conn.request("POST", "/v1/completions", json.dumps(body), {"Content-Type": "application/json"})
    resp = conn.getresponse()
    for raw in resp:
        if raw.startswith(b"data: "):
            out.append(raw[6:].strip().decode())
            first_event.set()
    conn.close()


def test_sigterm_drains_then_aborts(lite_serve):
    proc, port = lite_serve("--shutdown-timeout", "0.5")
    try:
        short, long_ = [], []
        started = [threading.Event(), threading.Event()]
        # the long one (4 samples of 1000 tokens with logprobs) cannot finish in 0.5 s
        threads = [threading.Thread(target=stream, args=(port, 1000, started[0], long_),
                                    kwargs={"n": 4, "logprobs": 5}),
                   threading.Thread(target=stream, args=(port, 10, started[1], short))]
        threads[0].start()
        assert started[0].wait(30)
        threads[1].start()
        assert started[1].wait(30)
        proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        try:  # no longer accepting (refused, or 503 while the socket closes)
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("GET", "/health")
            assert conn.getresponse().status == 503
        except OSError:
            pass
        for t in threads:
            t.join(30)
        assert proc.wait(30) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal it handled
    finally:
        proc.kill()
    # the short stream finished normally during the drain
    assert short[-1] == "[DONE]"
    events = [json.loads(e) for e in short[:-1]]
    assert events[-1]["choices"][0]["finish_reason"] == "length"
    assert sum(len(e["choices"][0]["text"]) > 0 for e in events) >= 1
    # the long one was cut at the deadline: an error chunk, then [DONE]
    assert long_[-1] == "[DONE]" and "error" in json.loads(long_[-2])
    assert "shutting down" in json.loads(long_[-2])["error"]["message"]
