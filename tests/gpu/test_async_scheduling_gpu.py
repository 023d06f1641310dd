"""Async scheduling on CUDA: the same outputs as the synchronous engine (float32, CUDA graphs,
multi-step runs included), and no host sync on the step path other than the read of a step's
tokens (``HostCopy.get``): CUDA's sync debug mode warns on any other."""
import warnings

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from transformers import LlamaConfig  # noqa: E402

from litevllm import LLM, SamplingParams  # noqa: E402
from litevllm.engine.host_tensors import HostCopy  # noqa: E402

CONFIG = LlamaConfig(vocab_size=2048, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                     bos_token_id=1, eos_token_id=2)
COMMON = dict(dtype="float32", block_size=16, max_num_seqs=16, max_num_batched_tokens=256,
              gpu_memory_utilization=0.3, seed=0)


@pytest.fixture(scope="module")
def checkpoint(random_hf_checkpoint):
    return random_hf_checkpoint("llama-async", CONFIG, logit_scale=8.0)[0]


def prompts(n=10):
    g = torch.Generator().manual_seed(3)
    return [{"prompt_token_ids": torch.randint(3, 2048, (int(k),), generator=g).tolist()}
            for k in torch.randint(5, 300, (n,), generator=g)]


PARAMS = [SamplingParams(temperature=0, max_tokens=40, ignore_eos=True),
          SamplingParams(temperature=0.8, top_p=0.9, seed=5, max_tokens=33, ignore_eos=True)]


PIECEWISE = pytest.mark.parametrize("pieces", [0, 256], ids=["eager-prefill", "piecewise"])


@PIECEWISE
@pytest.mark.parametrize("steps", [1, 8])
def test_same_outputs_as_sync(checkpoint, steps, pieces):
    def run(async_scheduling):
        llm = LLM(str(checkpoint), async_scheduling=async_scheduling,
                  num_scheduler_steps=steps, max_piecewise_graph_tokens=pieces, **COMMON)
        return [[c.token_ids for c in o.outputs] for o in llm.generate(prompts(), PARAMS * 5)]
    assert run(True) == run(False)


@PIECEWISE
def test_no_host_sync_but_reading_the_tokens(checkpoint, monkeypatch, pieces):
    llm = LLM(str(checkpoint), async_scheduling=True, max_piecewise_graph_tokens=pieces, **COMMON)
    engine = llm.engine
    llm.generate(prompts(4), PARAMS * 2)  # warm-up: kernels compiled, pinned pool filled
    real_get = HostCopy.get

    def get(self):
        torch.cuda.set_sync_debug_mode(0)
        try:
            return real_get(self)
        finally:
            torch.cuda.set_sync_debug_mode("warn")
    monkeypatch.setattr(HostCopy, "get", get)
    batch = prompts(12)
    for i, p in enumerate(batch[:6]):
        engine.add_request(f"r{i}", p, PARAMS[i % 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            step = 0
            while engine.has_unfinished_requests():
                if step < 6:  # arrivals mid-run: mixed prefill + decode steps
                    engine.add_request(f"r{6 + step}", batch[6 + step], PARAMS[step % 2])
                for out in engine.step():
                    assert out.error is None, out.error
                step += 1
        finally:
            torch.cuda.set_sync_debug_mode(0)
    syncs = [str(w.message) for w in caught if "synchroniz" in str(w.message)
             and "prototype feature" not in str(w.message)]  # the mode's own notice
    assert not syncs, syncs[:3]
