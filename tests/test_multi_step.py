"""Multi-step decoding (num_scheduler_steps > 1) gives exactly the single-step results."""
import pytest

from litevllm import LLM, SamplingParams

PROMPTS = [{"prompt_token_ids": list(range(5, 5 + n))} for n in (3, 17, 40, 9)]


@pytest.fixture(scope="module")
def engines(llama_dir):
    common = dict(block_size=8, max_num_seqs=8, seed=0)
    return LLM(str(llama_dir), **common), LLM(str(llama_dir), num_scheduler_steps=4, **common)


def run(llm, params):
    return [(o.outputs[0].token_ids, o.outputs[0].text, o.outputs[0].finish_reason)
            for o in llm.generate(PROMPTS, params)]


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=0, max_tokens=13, ignore_eos=True),
    SamplingParams(temperature=0, max_tokens=30),                      # EOS may stop mid-run
    SamplingParams(temperature=0.9, top_p=0.9, seed=7, max_tokens=21, ignore_eos=True),
    SamplingParams(temperature=0, max_tokens=25, stop=["e"], ignore_eos=True),
    SamplingParams(temperature=0, max_tokens=10, min_tokens=3, ignore_eos=True),
], ids=["greedy", "eos", "seeded", "stop-string", "min-tokens"])
def test_same_outputs_as_single_step(engines, params):
    single, multi = engines
    assert run(multi, params) == run(single, params)


def test_runs_several_steps_per_sync_and_frees_blocks(engines):
    _, multi = engines
    engine = multi.engine
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    for i, p in enumerate(PROMPTS):
        engine.add_request(f"m{i}", p, params)
    steps = 0
    while engine.has_unfinished_requests():
        engine.step()
        steps += 1
    assert steps <= 1 + 12 // 4 + 2  # prefill, then 4 tokens per step
    assert engine.block_manager.num_free_blocks == engine.num_blocks
    assert all(c == 0 for c in engine.block_manager.ref_count)


def test_streaming_deltas_cover_every_token(engines):
    _, multi = engines
    params = SamplingParams(temperature=0, max_tokens=11, ignore_eos=True)
    pieces, final = {}, {}
    for out in multi.generate(PROMPTS[:2], params, stream=True):
        pieces.setdefault(out.request_id, []).extend(out.outputs[0].delta_token_ids)
        if out.finished:
            final[out.request_id] = out.outputs[0].token_ids
    assert pieces == final and all(len(v) == 11 for v in final.values())


def test_lookahead_stops_at_the_longest_remaining_max_tokens(engines, monkeypatch):
    _, multi = engines
    engine = multi.engine
    ks = []
    real = engine.runner.decode_steps
    monkeypatch.setattr(engine.runner, "decode_steps",
                        lambda seqs, k, pick: ks.append(k) or real(seqs, k, pick))
    engine.add_request("a", PROMPTS[0], SamplingParams(temperature=0, max_tokens=3, ignore_eos=True))
    engine.add_request("b", PROMPTS[1], SamplingParams(temperature=0, max_tokens=2, ignore_eos=True))
    while engine.has_unfinished_requests():
        engine.step()
    assert ks == [2]  # prefill made token 1; a needs 2 more, b 1 more: no wasted 4-step run


def test_default_is_one_step_without_cuda_graphs(llama_dir):
    llm = LLM(str(llama_dir), block_size=8, max_num_seqs=4)
    assert llm.engine.num_scheduler_steps == 1


def test_default_steps_with_cuda_graphs_and_explicit_override(llama_dir, monkeypatch):
    from litevllm.config import DEFAULT_GRAPH_STEPS
    from litevllm.engine.model_runner import ModelRunner
    # stand-in for a capture: the engine only asks whether graphs exist (nothing is run here)
    monkeypatch.setattr(ModelRunner, "capture_cuda_graphs",
                        lambda self: self.graphs.update({1: None}))
    assert LLM(str(llama_dir), block_size=8).engine.num_scheduler_steps == DEFAULT_GRAPH_STEPS > 1
    assert LLM(str(llama_dir), block_size=8, num_scheduler_steps=1).engine.num_scheduler_steps == 1
