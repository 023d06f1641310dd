"""The layered step (schedule -> execute -> update -> process): a failure inside a step fails
only the request that caused it, and the engine leaves the KV blocks to the scheduler."""
import ast
import inspect

import pytest

from litevllm import LLM, SamplingParams
from litevllm.engine import engine as engine_module

PROMPTS = {f"r{i}": {"prompt_token_ids": list(range(5 + i, 30 + 3 * i))} for i in range(4)}
PARAMS = SamplingParams(temperature=0, max_tokens=9, ignore_eos=True)


def run(engine, prompts):
    for rid, prompt in prompts.items():
        engine.add_request(rid, prompt, PARAMS)
    finals = {}
    while engine.has_unfinished_requests():
        for out in engine.step():
            if out.finished:
                finals[out.request_id] = out
    return finals


@pytest.fixture
def engine(llama_dir):
    return LLM(str(llama_dir), block_size=8, max_num_seqs=8, num_scheduler_steps=3).engine


def reference(llama_dir):
    return run(LLM(str(llama_dir), block_size=8, max_num_seqs=8).engine, PROMPTS)


@pytest.mark.parametrize("stage", ["execute", "process"])
def test_a_failing_request_fails_alone(llama_dir, engine, monkeypatch, stage):
    ref = reference(llama_dir)
    if stage == "execute":  # the model breaks on any batch that holds r2
        prepare = engine.runner.prepare

        def broken(batch):
            if any(s.request_id == "r2" for s in batch.seqs):
                raise RuntimeError("kernel fault")
            return prepare(batch)
        monkeypatch.setattr(engine.runner, "prepare", broken)
    else:  # detokenizing r2's tokens breaks after its second token
        process = engine.output.process

        def broken(seq, logprobs=None):
            if seq.request_id == "r2" and seq.num_output_tokens >= 2:
                raise UnicodeError("bad bytes")
            return process(seq, logprobs)
        monkeypatch.setattr(engine.output, "process", broken)
    outs = run(engine, PROMPTS)
    assert set(outs) == set(PROMPTS)
    bad = outs.pop("r2")
    assert bad.outputs[0].finish_reason == "error" and bad.finished
    assert ("kernel fault" if stage == "execute" else "bad bytes") in bad.error
    for rid, out in outs.items():
        assert out.outputs[0].token_ids == ref[rid].outputs[0].token_ids
        assert out.outputs[0].finish_reason == "length" and out.error is None
    assert engine.stats()["num_free_blocks"] == engine.num_blocks
    assert not engine.output.states and not engine.runner.table_rows.state


def test_engine_calls_no_block_manager_method():
    tree = ast.parse(inspect.getsource(engine_module))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and node.attr in ("block_manager", "bm"):
            parent_calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call)
                            and isinstance(n.func, ast.Attribute) and n.func.value is node]
            assert not parent_calls, f"engine.py calls {node.attr}.{parent_calls[0].func.attr}"
