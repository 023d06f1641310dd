"""GGUF kept packed on CUDA (the default there) against dequantize-at-load (quantization="none"),
in bf16 with CUDA graphs: a synthetic Llama mixing every block type, and SmolLM2 when cached."""
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "gguf" / "tests"))

from gguf.constants import GGMLQuantizationType as T  # noqa: E402
from gguf_synth import write_quantized_llama  # noqa: E402

from litevllm import LLM, SamplingParams  # noqa: E402
from litevllm.plugin_api import LiteLinear  # noqa: E402

GAP_TOL = 0.25  # tokens may part only where the dequantized run's top two are this close
CONFIG = dict(vocab_size=2048, hidden_size=1024, intermediate_size=2816, num_hidden_layers=4,
              num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=1024,
              rms_norm_eps=1e-5, rope_theta=10000.0)
LAYER_TYPES = [  # (q, k, v, o, gate, up, down) per layer
    (T.Q4_K, T.Q4_K, T.Q6_K, T.Q4_K, T.Q4_K, T.Q4_K, T.Q6_K),  # Q4_K_M-like
    (T.Q8_0,) * 7,
    (T.Q4_0,) * 7,
    (T.Q5_0, T.Q5_1, T.Q5_K, T.Q4_1, T.Q5_K, T.Q5_K, T.Q5_0),
]
NAMES = ("attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down")


def run(path, prompts, max_tokens, chat=False, **kwargs):
    """Outputs, weight bytes and each linear layer's packed bits (None: dense); frees the GPU."""
    llm = LLM(str(path), dtype="bfloat16", kernels="auto", gpu_memory_utilization=0.3, **kwargs)
    assert llm.engine.runner.graphs, "CUDA graphs were not captured"
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=not chat, logprobs=2)
    outs = llm.chat(prompts, params) if chat else llm.generate(prompts, params)
    model = llm.engine.model
    nbytes = sum(p.numel() * p.element_size() for p in model.parameters())
    bits = [getattr(m, "packed_bits", None) for m in model.modules() if isinstance(m, LiteLinear)]
    del llm, model
    torch.cuda.empty_cache()
    return outs, nbytes, bits


def assert_same_greedy(packed, dense):
    matched = total = 0
    for got, want in zip(packed, dense):
        got, want = got.outputs[0], want.outputs[0]
        n = next((i for i, (a, b) in enumerate(zip(got.token_ids, want.token_ids)) if a != b),
                 len(want.token_ids))
        if n < len(want.token_ids):
            top = sorted(want.logprobs[n].values(), reverse=True)
            assert top[0] - top[1] < GAP_TOL, f"token {n}: packed {got.token_ids[n]}, dequantized " \
                                              f"{want.token_ids[n]} (gap {top[0] - top[1]:.3f})"
        matched, total = matched + n, total + len(want.token_ids)
    # every divergence is a near-tie (checked above); random weights have many, so the runs may
    # part early: packed keeps the exact GGUF values, dequantize-at-load rounds them to bf16
    assert matched >= 0.6 * total, f"only {matched}/{total} tokens before the runs part"


def test_mixed_types_packed_match_dequantized(tmp_path):
    types = {f"blk.{layer}.{name}.weight": t for layer, row in enumerate(LAYER_TYPES)
             for name, t in zip(NAMES, row)}
    path = write_quantized_llama(tmp_path / "mixed.gguf", CONFIG, types)
    g = torch.Generator().manual_seed(0)
    prompts = [{"prompt_token_ids": torch.randint(3, 2048, (n,), generator=g).tolist()} for n in (4, 37, 200)]
    packed, packed_bytes, packed_bits = run(path, prompts, 32)
    assert packed_bits == [8, 4, 4, 8] + [8, 8, 8, 8] + [4, 4, 4, 4] + [8, 4, 8, 8]  # qkv o gate_up down
    dense, dense_bytes, dense_bits = run(path, prompts, 32, quantization="none")
    assert set(dense_bits) == {None}
    assert_same_greedy(packed, dense)
    assert packed_bytes < 0.6 * dense_bytes


def test_smollm2_packed_matches_dequantized():
    from litevllm_gguf.demo import ModelFetchError, fetch_smollm2
    try:
        path = fetch_smollm2()
    except ModelFetchError as exc:
        pytest.skip(str(exc))
    question = [{"role": "user", "content": "What is the capital of France?"}]
    runs = {mode: run(path, question, 32, chat=True, quantization=mode) for mode in ("gguf", "none")}
    for mode, (outs, nbytes, _) in runs.items():
        print(f"SmolLM2 {mode}: weights {nbytes / 2**20:.1f} MiB: {outs[0].outputs[0].text!r}")
        assert "Paris" in outs[0].outputs[0].text, mode
    assert set(runs["gguf"][2]) == {4} and set(runs["none"][2]) == {None}  # Q4_1: 4 bits
    assert_same_greedy(runs["gguf"][0], runs["none"][0])
    assert runs["gguf"][1] < 0.5 * runs["none"][1]
