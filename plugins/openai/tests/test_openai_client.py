"""The official `openai` client, sync and async, against every endpoint and field the server
implements; results compared with the offline LLM on the same checkpoint."""
from __future__ import annotations

import asyncio

import httpx
import openai
import pytest

from litevllm import SamplingParams

MODEL = "tiny-llama"
CHAT = [{"role": "user", "content": "How are you today?"}]


@pytest.fixture(scope="module")
def sync_client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def arun(server):
    """``arun(fn)``: ``await fn(AsyncOpenAI client)`` in a fresh event loop."""
    async def main(fn):
        async with openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="unused",
                                      max_retries=0, timeout=30) as client:
            return await fn(client)
    return lambda fn: asyncio.run(main(fn))


def ref(llm, prompt, **kw):
    return llm.generate(prompt, SamplingParams(temperature=0, **kw))[0]


def test_models(sync_client, arun):
    assert [m.id for m in sync_client.models.list()] == [MODEL]
    assert sync_client.models.retrieve(MODEL).id == MODEL
    with pytest.raises(openai.NotFoundError):
        sync_client.models.retrieve("gpt-4")
    assert arun(lambda c: c.models.retrieve(MODEL)).owned_by == "litevllm"


def test_completions_sync(sync_client, ref_llm):
    r = sync_client.completions.create(model=MODEL, prompt="Hello world", max_tokens=8,
                                       temperature=0)
    assert r.choices[0].text == ref(ref_llm, "Hello world", max_tokens=8).outputs[0].text
    assert r.usage.completion_tokens == 8 and r.choices[0].finish_reason == "length"
    # a batch of prompts, strings or token ids: choice i*n + j
    ids = ref_llm.tokenizer.encode("def main():")
    r = sync_client.completions.create(model=MODEL, prompt=[ids, ids[:3]], max_tokens=4,
                                       temperature=0, n=2)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    want = ref(ref_llm, {"prompt_token_ids": ids[:3]}, max_tokens=4).outputs[0].text
    assert r.choices[2].text == r.choices[3].text == want
    r = sync_client.completions.create(model=MODEL, prompt=["Hello world", "The quick"],
                                       max_tokens=5, temperature=0)
    assert r.choices[1].text == ref(ref_llm, "The quick", max_tokens=5).outputs[0].text


def test_completions_vllm_extras(sync_client, ref_llm):
    extra = dict(ignore_eos=True, min_tokens=6, top_k=5, min_p=0.01, repetition_penalty=1.1)
    r = sync_client.completions.create(model=MODEL, prompt="Hello", max_tokens=6, seed=3,
                                       extra_body=extra)
    out = ref_llm.generate("Hello", SamplingParams(max_tokens=6, seed=3, **extra))[0].outputs[0]
    assert r.choices[0].text == out.text and r.usage.completion_tokens == 6


def test_echo_prompt_logprobs(sync_client, ref_llm):
    """lm-eval's log-likelihood request: echo + logprobs + max_tokens 1 (and 0)."""
    ids = ref_llm.tokenizer.encode("The quick brown fox")
    r = sync_client.completions.create(model=MODEL, prompt=ids, max_tokens=1, logprobs=1,
                                       echo=True, temperature=0)
    lp = r.choices[0].logprobs
    assert len(lp.tokens) == len(lp.token_logprobs) == len(ids) + 1
    assert lp.token_logprobs[0] is None and lp.top_logprobs[0] is None
    assert all(x <= 0 for x in lp.token_logprobs[1:])
    want = ref_llm.generate({"prompt_token_ids": ids},
                            SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=1))[0]
    for i in range(1, len(ids)):
        assert lp.token_logprobs[i] == pytest.approx(want.prompt_logprobs[i][ids[i]], abs=1e-4)
    assert r.choices[0].text.startswith(ref_llm.tokenizer.decode(ids))
    r = sync_client.completions.create(model=MODEL, prompt="The quick brown fox", max_tokens=0,
                                       logprobs=0, echo=True)
    assert r.choices[0].text == "The quick brown fox" and r.usage.completion_tokens == 0
    assert len(r.choices[0].logprobs.tokens) == len(ids)


def test_streams_async(arun, ref_llm):
    async def run(client):
        stream = await client.completions.create(
            model=MODEL, prompt="Hello world", max_tokens=10, temperature=0, stream=True,
            stream_options={"include_usage": True})
        chunks = [c async for c in stream]
        chat = await client.chat.completions.create(
            model=MODEL, messages=CHAT, max_tokens=6, temperature=0, stream=True,
            logprobs=True, top_logprobs=2)
        return chunks, [c async for c in chat]
    chunks, chat = arun(run)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    assert text == ref(ref_llm, "Hello world", max_tokens=10).outputs[0].text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 10
    assert chat[0].choices[0].delta.role == "assistant"
    content = [c.choices[0].logprobs.content for c in chat if c.choices[0].logprobs]
    assert sum(len(x) for x in content) == 6
    assert all(len(t.top_logprobs) == 2 for x in content for t in x)


def test_chat_sync_and_async(sync_client, arun, ref_llm):
    r = sync_client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=8,
                                            temperature=0, seed=1)
    want = ref_llm.chat(CHAT, SamplingParams(temperature=0, max_tokens=8))[0].outputs[0].text
    assert r.choices[0].message.content == want
    r2 = arun(lambda c: c.chat.completions.create(
        model=MODEL, messages=CHAT, max_completion_tokens=8, temperature=0))
    assert r2.choices[0].message.content == want
    stream = sync_client.chat.completions.create(model=MODEL, messages=CHAT, max_tokens=8,
                                                 temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream) == want


@pytest.mark.parametrize("field, value", [
    ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
    ("response_format", {"type": "json_object"}), ("logit_bias", {"5": 10}),
])
def test_unimplemented_chat_fields_are_named(sync_client, field, value):
    with pytest.raises(openai.BadRequestError) as e:
        sync_client.chat.completions.create(model=MODEL, messages=CHAT, **{field: value})
    assert field in e.value.message and e.value.body["param"] == field


@pytest.mark.parametrize("field, value", [("best_of", 3), ("suffix", "end"),
                                          ("logit_bias", {"5": 1})])
def test_unimplemented_completion_fields_are_named(sync_client, field, value):
    with pytest.raises(openai.BadRequestError) as e:
        sync_client.completions.create(model=MODEL, prompt="hi", **{field: value})
    assert field in e.value.message


@pytest.mark.parametrize("kw, param", [
    (dict(n=17), "n"), (dict(logprobs=21), "logprobs"), (dict(stop=["x"] * 65), "stop"),
    (dict(extra_body={"top_k": 2**63}), "top_k"), (dict(temperature=-1), "temperature"),
    (dict(max_tokens=True), "max_tokens"), (dict(max_tokens=10**6), "max_tokens"),
])
def test_caps_and_bounds(sync_client, kw, param):
    with pytest.raises(openai.BadRequestError) as e:
        sync_client.completions.create(model=MODEL, prompt="hi", **kw)
    assert e.value.body["param"] == param


def test_tiny_temperature_is_greedy(sync_client, ref_llm):
    r = sync_client.completions.create(model=MODEL, prompt="Hello", max_tokens=6,
                                       temperature=1e-45)
    assert r.choices[0].text == ref(ref_llm, "Hello", max_tokens=6).outputs[0].text


def test_tokenize_detokenize_health_metrics_request_id(server, sync_client, ref_llm):
    with httpx.Client(base_url=server.url, timeout=30) as http:
        r = http.post("/tokenize", json={"model": MODEL, "prompt": "Hello world"})
        ids = r.json()["tokens"]
        assert r.status_code == 200 and ids == ref_llm.tokenizer("Hello world")["input_ids"]
        r = http.post("/tokenize", json={"messages": CHAT})
        assert r.json()["tokens"] == ref_llm.apply_chat_template(CHAT)
        r = http.post("/detokenize", json={"tokens": ids})
        assert r.json()["prompt"] == ref_llm.tokenizer.decode(ids)
        assert http.post("/detokenize", json={"tokens": [10**9]}).status_code == 400
        assert http.get("/health").json() == {"status": "ok"}
        r = http.get("/v1/models", headers={"x-request-id": "abc-123"})
        assert r.headers["x-request-id"] == "abc-123" and "server" not in r.headers
        sync_client.completions.create(model=MODEL, prompt="Hi", max_tokens=3)
        text = http.get("/metrics").text
        for name in ("vllm:num_requests_running", "vllm:num_requests_waiting",
                     "vllm:kv_cache_usage_perc", "vllm:prompt_tokens_total",
                     "vllm:generation_tokens_total", "vllm:prefix_cache_queries_total",
                     "vllm:prefix_cache_hits_total", "vllm:time_to_first_token_seconds_bucket",
                     "vllm:inter_token_latency_seconds_bucket"):
            assert f"\n{name}{{" in text, name
        schema = http.get("/openapi.json").json()
        assert {"/v1/completions", "/v1/chat/completions", "/tokenize"} <= set(schema["paths"])


@pytest.fixture(scope="module")
def keyed_server(model_dir):
    from conftest import LiveServer
    srv = LiveServer(model_dir, "served-name", api_key="s3cret",
                     allowed_origins=["https://ok.example"])
    yield srv
    srv.close()


def test_api_key_cors_and_served_name(keyed_server):
    url = keyed_server.url
    good = openai.OpenAI(base_url=url + "/v1", api_key="s3cret", max_retries=0)
    assert [m.id for m in good.models.list()] == ["served-name"]
    r = good.completions.create(model="served-name", prompt="Hi", max_tokens=2)
    assert r.model == "served-name"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=url + "/v1", api_key="wrong", max_retries=0).models.list()
    with httpx.Client(base_url=url, timeout=30) as http:
        assert http.get("/health").status_code == 200  # open for probes
        assert http.get("/metrics").status_code == 401
        pre = http.options("/v1/completions", headers={
            "Origin": "https://ok.example", "Access-Control-Request-Method": "POST"})
        assert pre.headers.get("access-control-allow-origin") == "https://ok.example"
        pre = http.options("/v1/completions", headers={
            "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
        assert "access-control-allow-origin" not in pre.headers
