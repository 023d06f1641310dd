"""Engine isolation: every number of a request is bounded before it reaches a step, and a
request that still makes a step throw fails alone (finish_reason "error") while the rest of
its batch finishes unchanged, in LLM.generate as in the engine."""
import math

import pytest

from litevllm import LLM, SamplingParams

BAD_SEED = 666


@pytest.fixture(scope="module")
def llm(llama_dir):
    return LLM(str(llama_dir), block_size=8, max_model_len=64)


@pytest.fixture(scope="module")
def multi_step_llm(llama_dir):
    return LLM(str(llama_dir), block_size=8, max_model_len=64, num_scheduler_steps=4)


@pytest.mark.parametrize("kwargs, field", [
    (dict(temperature=math.inf), "temperature"), (dict(top_p=math.inf), "top_p"),
    (dict(repetition_penalty=math.inf), "repetition_penalty"), (dict(max_tokens=True), "max_tokens"),
    (dict(max_tokens=2.0), "max_tokens"), (dict(top_k=True), "top_k"), (dict(logprobs=True), "logprobs"),
    (dict(seed=2**70), "seed"), (dict(stop_token_ids=[True]), "stop_token_ids"),
    (dict(ignore_eos="yes"), "ignore_eos"),
])
def test_sampling_params_bound_every_number(kwargs, field):
    with pytest.raises(ValueError, match=rf"SamplingParams\.{field}\b"):
        SamplingParams(**kwargs)


def test_tiny_temperature_is_greedy():
    assert SamplingParams(temperature=1e-45).temperature == 0 and SamplingParams(temperature=1e-45).greedy
    assert SamplingParams(temperature=0.5).temperature == 0.5


@pytest.mark.parametrize("params, field", [
    (SamplingParams(top_k=2**63), "top_k"), (SamplingParams(max_tokens=10**9), "max_tokens"),
    (SamplingParams(min_tokens=10**6, max_tokens=None), "min_tokens"),
])
def test_engine_bounds_by_model(llm, params, field):
    with pytest.raises(ValueError, match=rf"SamplingParams\.{field}\b"):
        llm.engine.add_request("x", "hello", params)
    assert not llm.engine.has_unfinished_requests()


class FaultySampler:
    """The real sampler, except that it throws for any batch holding the bad request after
    ``after`` of its tokens (in the batched call, the multi-step picker and the per-row retry)."""

    def __init__(self, inner, after: int = 0):
        self.inner, self.after, self.eos_token_ids = inner, after, inner.eos_token_ids

    def _check(self, seqs):
        if any(s.params.seed == BAD_SEED and s.num_output_tokens >= self.after for s in seqs):
            raise RuntimeError("injected failure")

    def launch(self, logits, seqs):
        self._check(seqs)
        return self.inner.launch(logits, seqs)

    def picker(self, seqs):
        self._check(seqs)
        return self.inner.picker(seqs)


PROMPTS = ["Hello world", "The quick brown fox", "def main():", "How are you"]


def _run_with_bad_request(llm, monkeypatch, after):
    good = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    bad = SamplingParams(temperature=1.0, seed=BAD_SEED, max_tokens=12, n=2, ignore_eos=True)
    expected = [o.outputs[0].token_ids for o in llm.generate(PROMPTS, good)]
    monkeypatch.setattr(llm.engine, "sampler", FaultySampler(llm.engine.sampler, after))
    outs = llm.generate(PROMPTS[:2] + ["bad request"] + PROMPTS[2:],
                        [good, good, bad, good, good])
    failed = outs.pop(2)
    assert [o.finish_reason for o in failed.outputs] == ["error", "error"]
    assert "injected failure" in failed.error and failed.finished
    assert [o.outputs[0].token_ids for o in outs] == expected
    assert all(o.error is None and o.outputs[0].finish_reason == "length" for o in outs)
    eng = llm.engine
    assert not eng.has_unfinished_requests() and eng.block_manager.num_free_blocks == eng.num_blocks


def test_sampler_failure_fails_one_request(llm, monkeypatch):
    _run_with_bad_request(llm, monkeypatch, after=0)   # at its first sample (prefill)
    monkeypatch.undo()
    _run_with_bad_request(llm, monkeypatch, after=3)   # mid-decode


def test_multi_step_failure_fails_one_request(multi_step_llm, monkeypatch):
    _run_with_bad_request(multi_step_llm, monkeypatch, after=3)


def test_forward_failure_fails_one_request(llm):
    good = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True)
    expected = [o.outputs[0].token_ids for o in llm.generate(PROMPTS, good)]
    poison = 7

    def faulty(inputs, logits):
        if bool((inputs.input_ids == poison).any()):
            raise RuntimeError("injected forward failure")
    remove = llm.engine.add_logits_observer(faulty)
    try:
        outs = llm.generate(PROMPTS + [{"prompt_token_ids": [5, poison, 9]}], good)
    finally:
        remove()
    assert outs[-1].outputs[0].finish_reason == "error" and "forward" in outs[-1].error
    assert [o.outputs[0].token_ids for o in outs[:-1]] == expected
    eng = llm.engine
    assert eng.block_manager.num_free_blocks == eng.num_blocks
