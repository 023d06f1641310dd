"""Async scheduling (step n+1 scheduled and launched before step n's tokens are read) gives
exactly the synchronous engine's outputs, reads a step's tokens only after launching the next
one, and leaves no block or sequence behind."""
import pytest

from litevllm import LLM, SamplingParams
from litevllm.engine.host_tensors import HostCopy
from litevllm.engine.scheduler import PLACEHOLDER

PROMPTS = [{"prompt_token_ids": list(range(5 + i, 5 + i + n))} for i, n in
           enumerate((3, 17, 40, 9, 26, 1, 33, 12))]
SHARED = [{"prompt_token_ids": list(range(40, 72)) + [7 + i] * (i + 1)} for i in range(5)]
# small token budget: prefill chunks share steps with decodes
COMMON = dict(block_size=8, max_num_seqs=6, max_num_batched_tokens=24, seed=0)


def no_sync_fallback(llm):
    """The async engine must never drop to a synchronous step (its error fallback)."""
    def fail(*args):
        raise AssertionError("async engine ran a synchronous step")
    llm.engine._step_sync = fail
    return llm


@pytest.fixture(scope="module")
def engines(llama_dir):
    return (LLM(str(llama_dir), async_scheduling=False, **COMMON),
            no_sync_fallback(LLM(str(llama_dir), async_scheduling=True, **COMMON)))


def summary(outs):
    return [[(c.token_ids, c.text, c.finish_reason, c.stop_reason,
              None if c.logprobs is None else [sorted(d) for d in c.logprobs])
             for c in o.outputs] for o in outs]


def clean(llm):
    engine = llm.engine
    assert not engine.requests and not engine.scheduler.running and not engine.scheduler.waiting
    assert engine.block_manager.num_free_blocks == engine.num_blocks
    assert all(c == 0 for c in engine.block_manager.ref_count)


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=0, max_tokens=13, ignore_eos=True),
    SamplingParams(temperature=0, max_tokens=30),                          # EOS may stop
    SamplingParams(temperature=0.9, top_p=0.9, seed=7, max_tokens=21, ignore_eos=True),
    SamplingParams(temperature=0, max_tokens=25, stop=["e"], ignore_eos=True),
    SamplingParams(temperature=0, max_tokens=25, stop_token_ids=[9, 33, 70], ignore_eos=True),
    SamplingParams(temperature=0, max_tokens=10, min_tokens=4, stop_token_ids=[9, 33, 70]),
    SamplingParams(temperature=0.8, seed=3, max_tokens=12, repetition_penalty=1.3,
                   presence_penalty=0.5, frequency_penalty=0.3, ignore_eos=True),
    SamplingParams(temperature=0.7, seed=1, max_tokens=9, logprobs=3, ignore_eos=True),
    SamplingParams(temperature=0, max_tokens=6, prompt_logprobs=2, ignore_eos=True),
    SamplingParams(n=3, temperature=0.9, seed=11, max_tokens=10, ignore_eos=True),
    SamplingParams(n=2, temperature=0, max_tokens=7, stop=["a"]),
    SamplingParams(temperature=0, max_tokens=1, ignore_eos=True),
], ids=["greedy", "eos", "seeded", "stop-string", "stop-token", "min-tokens", "penalties",
        "logprobs", "prompt-logprobs", "n3-seeded", "n2-stop", "one-token"])
def test_same_outputs_as_sync(engines, params):
    sync, asyn = engines
    ref = sync.generate(PROMPTS, params)
    out = asyn.generate(PROMPTS, params)
    assert summary(out) == summary(ref)
    assert [o.prompt_logprobs for o in out] == [o.prompt_logprobs for o in ref]
    clean(asyn)


def test_mixed_params_and_prefix_caching(engines):
    sync, asyn = engines
    params = [SamplingParams(temperature=0, max_tokens=8 + 3 * i, ignore_eos=i % 2 == 0)
              if i % 3 else SamplingParams(temperature=1.0, seed=i, max_tokens=11, ignore_eos=True)
              for i in range(len(SHARED))]
    for _ in range(2):  # the second run reads the prefixes from the cache
        ref, out = sync.generate(SHARED, params), asyn.generate(SHARED, params)
        assert summary(out) == summary(ref)
    assert asyn.engine.block_manager.hits > 0
    clean(asyn)


def run_with_arrivals_and_aborts(llm):
    """Requests arrive while others run; one is aborted mid-run. Final outputs by id."""
    engine = llm.engine
    params = SamplingParams(temperature=0.8, seed=5, max_tokens=15, ignore_eos=True)
    finals, step = {}, 0
    for i, p in enumerate(PROMPTS[:3]):
        engine.add_request(f"a{i}", p, params)
    while engine.has_unfinished_requests() or step < 12:
        if step in (2, 5, 9):
            engine.add_request(f"b{step}", PROMPTS[3 + step % 5],
                               SamplingParams(temperature=0, max_tokens=5 + step))
        if step == 7:
            out = engine.abort_request("a1")
            finals[out.request_id] = out
        finals.update((o.request_id, o) for o in engine.step() if o.finished)
        step += 1
    return {rid: summary([o]) for rid, o in finals.items()}


def test_arrivals_mid_run_and_aborts(engines):
    sync, asyn = engines
    assert run_with_arrivals_and_aborts(asyn) == run_with_arrivals_and_aborts(sync)
    clean(asyn)


def test_preemption_with_a_small_cache(llama_dir):
    kw = dict(COMMON, num_gpu_blocks_override=12, max_num_batched_tokens=64)
    params = SamplingParams(temperature=0.5, seed=2, max_tokens=30, ignore_eos=True)
    outs = [LLM(str(llama_dir), async_scheduling=False, **kw).generate(PROMPTS[:6], params),
            no_sync_fallback(LLM(str(llama_dir), async_scheduling=True, **kw))
            .generate(PROMPTS[:6], params)]
    assert summary(outs[1]) == summary(outs[0])
    assert any(o.metrics.num_preemptions for o in outs[1])


def test_speculative_decoding(llama_dir):
    spec = {"method": "ngram", "num_speculative_tokens": 3, "min_acceptance_rate": 0.01}
    prompts = [{"prompt_token_ids": [5, 6, 7, 8] * 6}, {"prompt_token_ids": [9, 10] * 9}]
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    ref = LLM(str(llama_dir), async_scheduling=False, **COMMON).generate(prompts, params)
    llm = LLM(str(llama_dir), async_scheduling=True, speculative_config=spec, **COMMON)
    assert summary(llm.generate(prompts, params)) == summary(ref)
    assert llm.engine.stats()["spec_num_drafts"] > 0


@pytest.fixture(scope="module")
def multi_step(llama_dir):
    return no_sync_fallback(LLM(str(llama_dir), async_scheduling=True, num_scheduler_steps=4,
                                **COMMON))


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=0, max_tokens=20, ignore_eos=True),
    SamplingParams(temperature=0, max_tokens=30),                          # EOS mid-run
    SamplingParams(temperature=0.9, seed=4, max_tokens=23, ignore_eos=True),
    SamplingParams(temperature=0, max_tokens=25, stop_token_ids=[9, 33, 70], ignore_eos=True),
    SamplingParams(temperature=0, max_tokens=25, stop=["e"], ignore_eos=True),
    SamplingParams(n=2, temperature=0.9, seed=8, max_tokens=14, min_tokens=6),
], ids=["greedy", "eos", "seeded", "stop-token", "stop-string", "n2-min-tokens"])
def test_multi_step_runs_in_flight_too(engines, multi_step, monkeypatch, params):
    sync, _ = engines
    engine, log = multi_step.engine, []
    real_steps, real_get = engine.runner.decode_steps, HostCopy.get
    monkeypatch.setattr(engine.runner, "decode_steps",
                        lambda *a: log.append("M") or real_steps(*a))
    monkeypatch.setattr(HostCopy, "get", lambda self: log.append("R") or real_get(self))
    out = multi_step.generate(PROMPTS[:5], params)
    assert summary(out) == summary(sync.generate(PROMPTS[:5], params))
    assert "MRM" in "".join(log)  # a run launched before the previous one is read
    clean(multi_step)


def test_streaming_deltas_cover_every_token(engines):
    _, asyn = engines
    params = SamplingParams(temperature=0, max_tokens=11, ignore_eos=True)
    pieces, text, final = {}, {}, {}
    for out in asyn.generate(PROMPTS[:3], params, stream=True):
        c = out.outputs[0]
        assert PLACEHOLDER not in c.token_ids
        pieces.setdefault(out.request_id, []).extend(c.delta_token_ids)
        text[out.request_id] = text.get(out.request_id, "") + c.delta_text
        if out.finished:
            final[out.request_id] = c
    assert pieces == {r: c.token_ids for r, c in final.items()}
    assert text == {r: c.text for r, c in final.items()}


def test_reads_step_n_only_after_launching_step_n_plus_1(engines, monkeypatch):
    """The host reads a step's tokens (``HostCopy.get``, the only wait for the device) after
    the next step's forward is launched, and sampling a step never reads tokens back."""
    _, asyn = engines
    engine = asyn.engine
    log = []
    real_execute, real_get, real_launch = engine.runner.execute, HostCopy.get, engine.sampler.launch
    monkeypatch.setattr(engine.runner, "execute", lambda inputs: log.append("forward")
                        or real_execute(inputs))
    monkeypatch.setattr(HostCopy, "get", lambda self: log.append("read") or real_get(self))
    monkeypatch.setattr(engine.sampler, "launch", lambda logits, seqs: log.append("sample")
                        or real_launch(logits, seqs))
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True, logprobs=2)
    asyn.generate(PROMPTS[:4], params)
    steps = "".join({"forward": "F", "read": "R", "sample": "S"}[e] for e in log)
    assert steps.startswith("FS") and "FRS" in steps
    # every step after the first: next forward launched, then the previous step read
    assert steps[2:].replace("FRS", "") in ("", "R"), steps


@pytest.mark.parametrize("after", [0, 3], ids=["at-prefill", "mid-decode"])
def test_a_failing_request_fails_alone(llama_dir, monkeypatch, after):
    """A sampler error in an async step: the step reruns synchronously, request by request."""
    from test_engine_isolation import _run_with_bad_request
    llm = LLM(str(llama_dir), block_size=8, max_model_len=64, async_scheduling=True)
    _run_with_bad_request(llm, monkeypatch, after)


def test_failure_after_a_fork_step_frees_the_forked_samples(llama_dir, monkeypatch):
    """With async scheduling a step's forks join their request only when its outputs are
    processed, a step later; a request failing in between must still end its forked samples
    (else they keep running without a request and hold their blocks)."""
    llm = LLM(str(llama_dir), block_size=8, async_scheduling=True)
    engine, sched = llm.engine, llm.engine.scheduler
    advance = sched.advance

    def failing(batch, sampled, num_steps=1):
        failed = advance(batch, sampled, num_steps)
        return failed + [(s, RuntimeError("boom")) for s in batch.seqs if s.seq_id in batch.forks]
    monkeypatch.setattr(sched, "advance", failing)
    params = [SamplingParams(n=3, temperature=1.0, seed=1, max_tokens=6),
              SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)]
    outs = llm.generate([{"prompt_token_ids": [5, 6, 7, 8]}, {"prompt_token_ids": [9, 10, 11]}],
                        params, return_errors=True)
    assert outs[0].outputs[0].finish_reason == "error" and "boom" in outs[0].error
    assert len(outs[1].outputs[0].token_ids) == 6          # the other request is unharmed
    assert not sched.running and not sched.waiting
    assert engine.stats()["num_free_blocks"] == engine.num_blocks
