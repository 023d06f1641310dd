"""n-gram speculative decoding on CUDA with the Triton kernels: the verify pass (k+1 decode rows
per sequence, replaying the decode CUDA graphs) gives the plain decode's greedy tokens. float32,
so the kernels agree to far below the logit gaps."""
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from transformers import LlamaConfig  # noqa: E402

from litevllm import LLM, SamplingParams  # noqa: E402

CONFIG = LlamaConfig(vocab_size=2048, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                     num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                     bos_token_id=1, eos_token_id=2)
SPEC = {"method": "ngram", "num_speculative_tokens": 5, "prompt_lookup_max": 3,
        "min_acceptance_rate": 0.01}


@pytest.mark.parametrize("block_size", [16, 32])
def test_greedy_spec_matches_plain(random_hf_checkpoint, block_size):
    path, _ = random_hf_checkpoint("llama_spec", CONFIG)
    g = torch.Generator().manual_seed(2)
    loop = torch.randint(3, 2048, (12,), generator=g).tolist()
    prompts = [loop * 8, torch.randint(3, 2048, (200,), generator=g).tolist(), loop * 3 + [5] * 40]
    prompts = [{"prompt_token_ids": p} for p in prompts]
    params = SamplingParams(temperature=0, max_tokens=64, ignore_eos=True)
    common = dict(kernels="auto", dtype="float32", block_size=block_size, max_num_seqs=32,
                  gpu_memory_utilization=0.3)
    plain = LLM(str(path), **common).generate(prompts, params)
    spec_llm = LLM(str(path), speculative_config=SPEC, **common)
    runner, rows = spec_llm.engine.runner, []
    replay = runner._replay
    runner._replay = lambda inputs: rows.append(inputs.meta.num_seqs) or replay(inputs)
    spec = spec_llm.generate(prompts, params)
    assert [o.outputs[0].token_ids for o in spec] == [o.outputs[0].token_ids for o in plain]
    assert spec_llm.engine.stats()["spec_num_draft_tokens"] > 0
    assert max(rows) > len(prompts)  # verify steps (more rows than sequences) replayed graphs
