"""Speculative-decoding counters in /metrics under vLLM's names, from `lite serve
--speculative-config` on a model whose greedy output soon repeats itself."""
from __future__ import annotations

import http.client
import json
import re
import shutil

import pytest
from safetensors.torch import load_file, save_file

from litevllm import LLM, SamplingParams

SPEC = {"method": "ngram", "num_speculative_tokens": 3, "prompt_lookup_max": 3,
        "prompt_lookup_min": 1}
GREEDY = {"temperature": 0, "max_tokens": 40, "ignore_eos": True}


@pytest.fixture(scope="module")
def markov_dir(model_dir, tmp_path_factory):
    """The tiny Llama with its attention and MLP outputs zeroed: the next token is a function
    of the current one alone, so greedy output enters a cycle that n-gram drafts predict."""
    path = tmp_path_factory.mktemp("markov") / "llama"
    shutil.copytree(model_dir, path)
    weights = load_file(path / "model.safetensors")
    for name, tensor in weights.items():
        if name.endswith(("o_proj.weight", "down_proj.weight")):
            tensor.zero_()
    save_file(weights, path / "model.safetensors", metadata={"format": "pt"})
    return path


def _get(port: int, method: str, path: str, body=None) -> str:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request(method, path, json.dumps(body) if body else None,
                     {"Content-Type": "application/json"} if body else {})
        resp = conn.getresponse()
        assert resp.status == 200, resp.read()
        return resp.read().decode()
    finally:
        conn.close()


def _samples(text: str, name: str) -> dict[str, float]:
    """Label set -> value of every sample of ``name``."""
    return {m.group(1): float(m.group(2))
            for m in re.finditer(rf"^{re.escape(name)}\{{(.*)\}} (\S+)$", text, re.M)}


def test_spec_decode_counters_in_metrics(lite_serve, markov_dir, server):
    assert "spec_decode" not in _get(server.port, "GET", "/metrics")  # only when it is on
    _, port = lite_serve("--speculative-config", json.dumps(SPEC), path=markov_dir)
    prompt = [5, 6, 7]
    reply = json.loads(_get(port, "POST", "/v1/completions",
                            {"model": "m", "prompt": prompt, **GREEDY}))
    plain = LLM(str(markov_dir), block_size=8).generate({"prompt_token_ids": prompt},
                                                         SamplingParams(**GREEDY))
    assert reply["choices"][0]["text"] == plain[0].outputs[0].text  # drafts change nothing
    text = _get(port, "GET", "/metrics")
    model = 'model_name="m"'
    drafts = _samples(text, "vllm:spec_decode_num_drafts_total")[model]
    drafted = _samples(text, "vllm:spec_decode_num_draft_tokens_total")[model]
    accepted = _samples(text, "vllm:spec_decode_num_accepted_tokens_total")[model]
    per_pos = _samples(text, "vllm:spec_decode_num_accepted_tokens_per_pos_total")
    assert drafts > 0 and drafted >= accepted > 0
    assert sorted(per_pos) == [f'{model},position="{i}"' for i in range(3)]
    counts = [per_pos[f'{model},position="{i}"'] for i in range(3)]
    assert sum(counts) == accepted and drafts >= counts[0] >= counts[1] >= counts[2]
