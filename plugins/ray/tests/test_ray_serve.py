"""`lite serve --replicas 2` on a local Ray cluster with the demo model (CPU): requests spread
over both replicas, a replica killed by PID is replaced without failing later requests, auth
and limits work through Ray's proxy, and SIGTERM leaves no Ray process behind."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest

KEY = "test-key"
REPLICA = "ServeReplica:litevllm:EngineReplica"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url, body: dict | bytes, key: str | None = KEY, timeout=120):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data, headers)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read() or b"{}")


def _ray_pids(pattern: str) -> list[int]:
    out = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
    return [int(line.split()[0]) for line in out.splitlines()[1:] if pattern in line]


@pytest.fixture(scope="module")
def server():
    port = _free_port()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "litevllm.cli", "serve", "--model", "smollm2", "--replicas", "2",
         "--port", str(port), "--api-key", KEY, "--max-request-bytes", "4096",
         "--cpus-per-replica", "0.5", "--shutdown-timeout", "3", "--max-model-len", "512"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"lite serve exited: {proc.stdout.read()[-2000:]}"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        time.sleep(1)
    else:
        proc.kill()
        pytest.fail("the Ray Serve app did not become healthy in 300 s")
    yield proc, url
    if proc.poll() is None:
        proc.kill()


def _complete(url, prompt="The capital of France is"):
    return _post(f"{url}/v1/completions", {"prompt": prompt, "max_tokens": 4, "temperature": 0})


def test_auth_and_limits_through_the_proxy(server):
    _, url = server
    assert _post(f"{url}/v1/completions", {"prompt": "Hi", "max_tokens": 1}, key=None)[0] == 401
    assert _post(f"{url}/v1/completions", {"prompt": "Hi", "max_tokens": 1}, key="wrong")[0] == 401
    status, _, body = _post(f"{url}/v1/completions", b'{"prompt": "' + b"x" * 8000 + b'"}')
    assert status == 413 and body["error"]["message"]
    status, _, body = _post(f"{url}/v1/completions", {"prompt": "Hi", "max_tokens": 1, "top_k": 2**63})
    assert status == 400 and "top_k" in body["error"]["message"]


def test_requests_spread_over_both_replicas(server):
    _, url = server
    prompts = [f"Request {i}: tell me about the number {i}" for i in range(16)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda p: _complete(url, p), prompts))
    assert all(status == 200 for status, _, _ in results)
    replicas = {headers.get("x-litevllm-replica") for _, headers, _ in results}
    assert None not in replicas and len(replicas) == 2


def test_killed_replica_is_replaced(server):
    _, url = server
    pids = _ray_pids(REPLICA)
    assert len(pids) == 2
    os.kill(pids[0], signal.SIGKILL)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda i: _complete(url, f"After the crash {i}"), range(8)))
    assert [r[0] for r in results] == [200] * 8
    deadline = time.monotonic() + 180   # Ray starts a replacement
    while time.monotonic() < deadline and len(set(_ray_pids(REPLICA)) - {pids[0]}) < 2:
        time.sleep(2)
    assert len(set(_ray_pids(REPLICA)) - {pids[0]}) == 2
    assert _complete(url)[0] == 200


def test_sigterm_leaves_no_ray_process(server):
    proc, _ = server
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=180)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and (_ray_pids("ray::") or _ray_pids("raylet")):
        time.sleep(1)
    assert not _ray_pids("ray::") and not _ray_pids("gcs_server")
