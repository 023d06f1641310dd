"""AsyncLLMEngine, the public engine API for front ends: results equal LLM.generate, streams
add up, aborts free blocks, bad input raises, a stalled or stopped loop reports unhealthy."""
import asyncio
import time

import pytest

from litevllm import LLM, AsyncLLMEngine, SamplingParams
from litevllm.plugin_api import EngineDeadError, EngineOverloadedError

GREEDY = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)


@pytest.fixture(scope="module", params=[False, True], ids=["sync", "async-scheduling"])
def llm(llama_dir, request):
    # async scheduling (the CUDA default) returns a step's outputs one step later
    return LLM(str(llama_dir), block_size=8, max_model_len=64, async_scheduling=request.param)


@pytest.fixture
def engine(llm):
    eng = AsyncLLMEngine(llm)
    yield eng
    eng.shutdown(0)


async def collect(gen):
    return [out async for out in gen]


def test_generate_matches_llm(llm, engine):
    want = [o.outputs[0].token_ids for o in llm.generate(["Hello world", "How are you"], GREEDY)]

    async def main():
        return await asyncio.gather(
            collect(engine.generate("Hello world", GREEDY, "a")),
            collect(engine.generate(llm.tokenizer.encode("How are you"), GREEDY, "b")),
            collect(engine.generate("Hello world", GREEDY, "c", stream=False)))
    a, b, c = asyncio.run(main())
    assert a[-1].finished and a[-1].outputs[0].token_ids == want[0]
    assert sum(len(o.outputs[0].delta_token_ids) for o in a) == 8 and len(a) > 1
    assert b[-1].outputs[0].token_ids == want[1]
    assert len(c) == 1 and c[0].outputs[0].token_ids == want[0]
    s = engine.stats()
    assert s["generation_tokens"] == 24 and s["num_unfinished"] == 0
    assert s["num_free_blocks"] == s["num_blocks"] and s["kv_cache_usage"] == 0
    assert engine.decode(engine.encode("Hello world")) == "Hello world"


def test_bad_input_and_early_exit(engine):
    async def main():
        with pytest.raises(ValueError, match="top_k"):
            await collect(engine.generate("Hi", SamplingParams(top_k=2**63), "x"))
        with pytest.raises(ValueError, match="top_k"):
            engine.check_request([5, 6], SamplingParams(top_k=2**63))
        long = SamplingParams(max_tokens=50, ignore_eos=True)
        async for _ in engine.generate("Hi", long, "y"):
            break  # leaving early aborts the request
    asyncio.run(main())
    deadline = time.monotonic() + 5
    while engine.stats()["num_unfinished"] and time.monotonic() < deadline:
        time.sleep(0.01)
    s = engine.stats()
    assert s["num_unfinished"] == 0 and s["num_free_blocks"] == s["num_blocks"]


def test_stall_and_shutdown(llm, monkeypatch):
    engine = AsyncLLMEngine(llm, stall_timeout=0.2)
    step = llm.engine.step

    def slow_step(*a, **k):
        time.sleep(0.5)
        return step(*a, **k)
    monkeypatch.setattr(llm.engine, "step", slow_step)

    async def main():
        task = asyncio.ensure_future(collect(engine.generate("Hi", GREEDY)))
        await asyncio.sleep(0.4)
        stalled = not engine.healthy()
        monkeypatch.setattr(llm.engine, "step", step)
        return stalled, await task
    stalled, outs = asyncio.run(main())
    assert stalled and outs[-1].finished and engine.healthy()
    engine.shutdown(1)
    assert not engine.healthy()
    with pytest.raises(EngineDeadError):
        asyncio.run(collect(engine.generate("Hi", GREEDY)))


def test_bounded_waiting_queue(llm, monkeypatch):
    step = llm.engine.step

    def slow_step(*a, **k):
        time.sleep(0.3)  # keeps the first request counted as waiting for a while
        return step(*a, **k)
    monkeypatch.setattr(llm.engine, "step", slow_step)
    engine = AsyncLLMEngine(llm, max_waiting=1)
    try:
        async def main():
            gen = engine.generate([5, 6, 7], SamplingParams(max_tokens=2))
            first = asyncio.ensure_future(collect(gen))
            await asyncio.sleep(0.05)
            with pytest.raises(EngineOverloadedError):
                engine.check_request([5, 6], GREEDY)
            return await first
        assert asyncio.run(main())[-1].finished
    finally:
        engine.shutdown(0)
