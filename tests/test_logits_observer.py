"""The public logits observer: ``LLMEngine.add_logits_observer`` and
``litevllm.testing.observe_logits`` see every forward pass, multi-step runs included."""
import pytest
import torch

from litevllm import LLM, SamplingParams
from litevllm.testing import observe_logits

PROMPT = {"prompt_token_ids": list(range(5, 20))}   # 15 tokens: positions 0..14
GREEDY = SamplingParams(temperature=0, max_tokens=9, ignore_eos=True)


@pytest.fixture(scope="module", params=[1, 4], ids=["single-step", "multi-step"])
def llm(llama_dir, request):
    return LLM(str(llama_dir), block_size=8, max_num_seqs=4, seed=0,
               num_scheduler_steps=request.param)


def test_records_every_pass_and_the_sampler_picks_from_it(llm):
    with observe_logits(llm) as seen:
        tokens = llm.generate(PROMPT, GREEDY)[0].outputs[0].token_ids
    # the prefill's last row, then one pass per decode step (multi-step: 4 per sync)
    assert len(seen.steps) == 9 and seen.rows().shape == (9, llm.hf_config.vocab_size)
    assert seen.rows().argmax(-1).tolist() == tokens
    assert [p for step in seen.positions for p in step] == list(range(14, 23))
    assert llm.engine.runner.logits_observers == ()   # removed on leaving the block
    llm.generate(PROMPT, GREEDY)
    assert len(seen.steps) == 9


def test_an_observer_can_replace_the_logits(llm):
    def force_three(inputs, logits):
        forced = torch.full_like(logits, -1e9)
        forced[:, 3] = 0
        return forced
    remove = llm.engine.add_logits_observer(force_three)
    with observe_logits(llm) as seen:  # registered later: sees the replaced logits
        tokens = llm.generate(PROMPT, GREEDY)[0].outputs[0].token_ids
    remove()
    assert tokens == [3] * 9 and bool((seen.rows().argmax(-1) == 3).all())
    assert llm.generate(PROMPT, GREEDY)[0].outputs[0].token_ids != [3] * 9


def test_verify_passes_are_observed(llama_dir):
    spec = LLM(str(llama_dir), block_size=8, max_num_seqs=4, seed=0, speculative_config={
        "method": "ngram", "num_speculative_tokens": 3, "min_acceptance_rate": 0.01})
    with observe_logits(spec) as seen:
        spec.generate({"prompt_token_ids": list(range(3, 200))}, GREEDY)  # every id < 200 drafts
    drafts = spec.engine.stats()["spec_num_drafts"]
    verify = [p for p in seen.positions if len(p) > 1]  # the sampled row + one per draft token
    assert drafts > 0 and len(verify) == drafts
    assert all(p == list(range(p[0], p[0] + len(p))) and len(p) <= 4 for p in verify)
