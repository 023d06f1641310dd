"""Fixtures: a tiny random Llama with the conformance kit's tiny tokenizer and chat template,
served in-process on 127.0.0.1 (ephemeral port) in a background thread, plus a reference
LLM on the same checkpoint."""
from __future__ import annotations

import http.client
import json
import os
import re
import subprocess
import sys
import threading
import time

import pytest
import torch

from litevllm.testing import tiny_tokenizer

MODEL_NAME = "tiny-llama"
LLM_OPTIONS = dict(block_size=8, max_num_seqs=16, seed=0)


def save_model(path, vocab_size: int, seed: int = 0):
    """A tiny random Llama saved as safetensors (float32)."""
    import transformers
    cfg = transformers.LlamaConfig(
        vocab_size=vocab_size, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        initializer_range=0.3, rms_norm_eps=1e-6, tie_word_embeddings=False, bos_token_id=1,
        eos_token_id=2)
    torch.manual_seed(seed)
    transformers.LlamaForCausalLM(cfg).float().save_pretrained(path, safe_serialization=True)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("openai") / "llama"
    tok = tiny_tokenizer(path)
    save_model(path, len(tok))
    return path


@pytest.fixture(scope="session")
def bare_model_dir(tmp_path_factory):
    """The tiny random Llama without tokenizer files."""
    path = tmp_path_factory.mktemp("bare") / "llama"
    save_model(path, 128)
    return path


@pytest.fixture(scope="session")
def ref_llm(model_dir):
    """The offline API on the same checkpoint: what the server must reproduce."""
    from litevllm import LLM
    return LLM(str(model_dir), **LLM_OPTIONS)


def start_lite_serve(model_dir, *args):
    """`lite serve` on ``model_dir`` in a subprocess on an ephemeral port: (process, port)."""
    cmd = [sys.executable, "-m", "litevllm.cli", "serve", "--model", str(model_dir), "--port", "0",
           "--served-model-name", "m", "--max-num-seqs", "8", "--cpu-kv-cache-gib", "0.05",
           *args]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline, lines = time.monotonic() + 60, []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        m = re.search(r"http://127\.0\.0\.1:(\d+)/v1", line)
        if m:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep draining
            return proc, int(m.group(1))
        if not line and proc.poll() is not None:
            break
    proc.kill()
    raise AssertionError("server did not start:\n" + "".join(lines))


@pytest.fixture
def lite_serve(model_dir):
    """``lite_serve(*args, path=None)``: :func:`start_lite_serve` on the tiny model (or
    ``path``), served as "m", killed after the test."""
    procs = []

    def start(*args, path=None):
        procs.append(start_lite_serve(path or model_dir, *args))
        return procs[-1]
    yield start
    for proc, _ in procs:
        proc.kill()
        proc.wait()


class LiveServer:
    """An in-process server (uvicorn in a thread) on 127.0.0.1 and an ephemeral port."""

    def __init__(self, model_dir, model_name=MODEL_NAME, llm_options=None, engine_options=None,
                 **config):
        """``llm_options`` override LLM_OPTIONS; ``config``: ServerConfig fields."""
        from litevllm import LLM, AsyncLLMEngine
        from litevllm_openai.runner import make_server
        from litevllm_openai.server import ServerConfig
        self.llm = LLM(str(model_dir), **{**LLM_OPTIONS, **(llm_options or {})})
        self.engine = AsyncLLMEngine(self.llm, **(engine_options or {}))
        self.server, sock = make_server(self.engine, ServerConfig(model_name, **config),
                                        "127.0.0.1", 0, shutdown_timeout=2)
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]},
                                       daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        assert self.server.started, "the server did not start"

    def all_blocks_free(self) -> bool:
        s = self.engine.stats()
        return s["num_unfinished"] == 0 and s["num_free_blocks"] == s["num_blocks"]

    def close(self):
        self.server.should_exit = True
        self.thread.join(10)
        self.engine.shutdown(0)


@pytest.fixture(scope="session")
def server(model_dir):
    srv = LiveServer(model_dir)
    yield srv
    srv.close()


@pytest.fixture(scope="module")
def start_server(model_dir):
    """``start_server(**LiveServer options)``: more servers, closed after the module;
    ``path`` serves another checkpoint."""
    servers = []

    def start(*args, path=None, **kwargs):
        servers.append(LiveServer(path or model_dir, *args, **kwargs))
        return servers[-1]
    yield start
    for srv in servers:
        srv.close()


class Client:
    """http.client against 127.0.0.1 only, every call bounded by a timeout."""

    def __init__(self, port: int, timeout: float = 30.0):
        self.port, self.timeout = port, timeout

    def _send(self, method, path, body=None, raw=None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        headers = {"Content-Type": "application/json"} if data is not None else {}
        conn.request(method, path, body=data, headers=headers)
        return conn, conn.getresponse()

    def request(self, method, path, body=None, raw=None):
        """(status, parsed JSON body)."""
        conn, resp = self._send(method, path, body, raw)
        try:
            return resp.status, json.loads(resp.read())
        finally:
            conn.close()

    def post(self, path, body=None, raw=None):
        return self.request("POST", path, body, raw)

    def stream(self, path, body, max_events: int = 2000):
        """(status, events): each SSE ``data:`` payload, parsed, and "[DONE]" last."""
        conn, resp = self._send("POST", path, {**body, "stream": True})
        events = []
        try:
            assert resp.getheader("Content-Type").startswith("text/event-stream")
            for _ in range(max_events):
                line = resp.readline()
                if not line:
                    break
                if line.startswith(b"data: "):
                    payload = line[6:].strip().decode()
                    events.append(payload if payload == "[DONE]" else json.loads(payload))
            return resp.status, events
        finally:
            conn.close()


@pytest.fixture
def client(server):
    return Client(server.port)
