"""GGUF blocks kept packed (``PackedWeight``): lossless repacking per type and per mixed fused
layer, and the engine with packed weights (forced on the CPU) against dequantize-at-load."""
import pytest
import torch
from gguf.constants import GGMLQuantizationType as T
from litevllm_gptq.layout import dequantize as layout_dequantize

from gguf_synth import random_blocks, write_quantized_llama
from litevllm import LLM, SamplingParams
from litevllm.plugin_api import CheckpointError, LiteLinear
from litevllm_gguf.dequant import GGUFBlocks
from litevllm_gguf.quant import PACKED_ENV
from litevllm_gguf.repack import pack, to_part

# type -> (bits, group, symmetric) of its packed form
LAYOUTS = {T.Q4_0: (4, 32, True), T.Q4_1: (4, 32, False), T.Q5_0: (8, 32, True),
           T.Q5_1: (8, 32, False), T.Q8_0: (8, 32, True), T.Q4_K: (4, 32, False),
           T.Q5_K: (8, 32, False), T.Q6_K: (8, 16, True)}
K = 512


def blocks(ggml_type, rows, seed=0, scale=0.1):
    raw = torch.from_numpy(random_blocks(ggml_type, rows, K, seed=seed, scale=scale).reshape(-1))
    return GGUFBlocks(raw, ggml_type, (rows, K), f"{ggml_type.name}.weight")


@pytest.mark.parametrize("ggml_type", list(LAYOUTS), ids=lambda t: t.name)
def test_repacked_weight_equals_dequant(ggml_type):
    b = blocks(ggml_type, 48)
    w = pack([to_part(b)])
    bits, group, symmetric = LAYOUTS[ggml_type]
    assert (w.bits, w.group_size, w.bias is None) == (bits, group, symmetric)
    assert w.shape == (K, 48) and w.qweight.dtype == torch.int32
    assert all(t.is_contiguous() for t in (w.qweight, w.scales, w.bias) if t is not None)  # kernels need it
    assert torch.equal(layout_dequantize(w), b.dequantize(torch.float32).t())  # exact, [K, N]


@pytest.mark.parametrize("types", [
    (T.Q4_K, T.Q4_K, T.Q6_K),  # Q4_K_M's qkv: V in Q6_K
    (T.Q4_0, T.Q8_0, T.Q6_K),  # symmetric of three widths
    (T.Q4_0, T.Q4_1),          # 4 bits, a symmetric shard gets an explicit bias
    (T.Q8_0, T.Q5_K, T.Q4_1),
], ids=lambda ts: "+".join(t.name for t in ts))
def test_mixed_shards_unify_losslessly(types):
    shards = [blocks(t, rows, seed=i, scale=1e-3) for i, (t, rows) in enumerate(zip(types, (64, 32, 32)))]
    w = pack([to_part(b) for b in shards])
    assert w.bits == max(LAYOUTS[t][0] for t in types)
    assert w.group_size == min(LAYOUTS[t][1] for t in types)
    expected = torch.cat([b.dequantize(torch.float32) for b in shards]).t()
    assert torch.equal(layout_dequantize(w), expected)


def test_scales_stay_fp16_only_when_exact():
    assert pack([to_part(blocks(T.Q8_0, 8))]).scales.dtype == torch.float16
    assert pack([to_part(blocks(T.Q4_1, 8))]).bias.dtype == torch.float16
    assert pack([to_part(blocks(T.Q4_K, 8))]).scales.dtype == torch.float32  # d * 6-bit scale


# ---- the engine ---------------------------------------------------------------------------

CONFIG = dict(vocab_size=96, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              rms_norm_eps=1e-5, rope_theta=10000.0)
# layer 0 mixes types inside qkv and gate_up; layer 1's down_proj is F16 (stays dense)
TYPES = {
    "blk.0.attn_q.weight": T.Q4_K, "blk.0.attn_k.weight": T.Q4_K, "blk.0.attn_v.weight": T.Q6_K,
    "blk.0.attn_output.weight": T.Q8_0, "blk.0.ffn_gate.weight": T.Q4_0,
    "blk.0.ffn_up.weight": T.Q4_1, "blk.0.ffn_down.weight": T.Q5_K,
    "blk.1.attn_q.weight": T.Q8_0, "blk.1.attn_k.weight": T.Q8_0, "blk.1.attn_v.weight": T.Q8_0,
    "blk.1.attn_output.weight": T.Q4_0, "blk.1.ffn_gate.weight": T.Q5_0,
    "blk.1.ffn_up.weight": T.Q5_1, "blk.1.ffn_down.weight": None,
    "output.weight": T.Q6_K,
}
# (bits, group) each linear layer gets when packed
PACKED_LAYERS = {
    "model.layers.0.self_attn.qkv_proj": (8, 16), "model.layers.0.self_attn.o_proj": (8, 32),
    "model.layers.0.mlp.gate_up_proj": (4, 32), "model.layers.0.mlp.down_proj": (8, 32),
    "model.layers.1.self_attn.qkv_proj": (8, 32), "model.layers.1.self_attn.o_proj": (4, 32),
    "model.layers.1.mlp.gate_up_proj": (8, 32), "model.layers.1.mlp.down_proj": None,
}
PROMPTS = [[5, 17, 33, 9, 60, 2 + 1], [44, 8]]
MAX_TOKENS = 8


@pytest.fixture(scope="module")
def mixed_gguf(tmp_path_factory):
    return write_quantized_llama(tmp_path_factory.mktemp("packed") / "mixed.gguf", CONFIG, TYPES)


def run(path, **kwargs):
    llm = LLM(str(path), device="cpu", dtype="float32", block_size=8, **kwargs)
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True,
                            logprobs=CONFIG["vocab_size"], prompt_logprobs=CONFIG["vocab_size"])
    outs = llm.generate([{"prompt_token_ids": p} for p in PROMPTS], params)
    return llm.engine.model, outs


def layouts(model):
    return {name: None if m.packed_bits is None else (m.packed_bits, m.packed_group)
            for name, m in model.named_modules() if isinstance(m, LiteLinear)}


def logprob_rows(rows):
    return torch.tensor([[lp[t] for t in sorted(lp)] for lp in rows if lp is not None])


def test_packed_engine_matches_dequantized(mixed_gguf, monkeypatch):
    dense_model, dense = run(mixed_gguf, quantization="none")
    assert not any(isinstance(m, LiteLinear) and hasattr(m, "packed_bits") for m in dense_model.modules())
    monkeypatch.setenv(PACKED_ENV, "1")
    packed_model, packed = run(mixed_gguf)
    assert layouts(packed_model) == PACKED_LAYERS
    for want, got in zip(dense, packed):
        assert got.outputs[0].token_ids == want.outputs[0].token_ids
        torch.testing.assert_close(logprob_rows(got.outputs[0].logprobs),
                                   logprob_rows(want.outputs[0].logprobs), atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(logprob_rows(got.prompt_logprobs),
                                   logprob_rows(want.prompt_logprobs), atol=1e-4, rtol=1e-4)


def test_cpu_dequantizes_by_default(mixed_gguf):
    """Without the override the CPU still dequantizes at load, through the gguf scheme."""
    model, outs = run(mixed_gguf)
    assert model.model.layers[0].self_attn.qkv_proj.method.__class__.__name__ == "GGUFLinearMethod"
    assert set(layouts(model).values()) == {None}
    _, dense = run(mixed_gguf, quantization="none")
    for want, got in zip(dense, outs):
        assert got.outputs[0].token_ids == want.outputs[0].token_ids
        assert logprob_rows(got.outputs[0].logprobs).equal(logprob_rows(want.outputs[0].logprobs))


@pytest.mark.parametrize("packed", ["1", ""])
def test_wrong_shape_names_the_tensor(tmp_path, monkeypatch, packed):
    path = write_quantized_llama(tmp_path / "bad.gguf", CONFIG, TYPES,
                                 metadata={"llama.feed_forward_length": 256})
    monkeypatch.setenv(PACKED_ENV, packed)
    with pytest.raises(CheckpointError, match=r"model.layers.0.mlp.gate_proj.weight.*shard 0 has "
                                              r"shape \(512, 256\), expected \(256, 256\)"):
        LLM(str(path), device="cpu", dtype="float32")


def write_qwen2moe(path):
    """A Qwen2-MoE GGUF: quantized attention, shared expert and (dequantized) experts."""
    import numpy as np
    from gguf_synth import WEIGHT_SCALES, write_gguf

    rng = np.random.default_rng(1)
    h, e, ff, vocab = 256, 4, 256, 96
    meta = {f"qwen2moe.{k}": v for k, v in {
        "block_count": 1, "embedding_length": h, "feed_forward_length": ff, "context_length": 256,
        "attention.head_count": 4, "attention.head_count_kv": 2, "attention.layer_norm_rms_epsilon": 1e-6,
        "rope.freq_base": 1e6, "expert_count": e, "expert_used_count": 2,
        "expert_feed_forward_length": ff, "expert_shared_feed_forward_length": ff}.items()}

    def quant(t, rows, cols, seed):
        return random_blocks(t, rows, cols, seed=seed, scale=WEIGHT_SCALES[t]), t

    def floats(*shape):
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32), None

    tensors = {"token_embd.weight": floats(vocab, h), "output.weight": floats(vocab, h),
               "output_norm.weight": (np.ones(h, np.float32), None),
               "blk.0.attn_norm.weight": (np.ones(h, np.float32), None),
               "blk.0.ffn_norm.weight": (np.ones(h, np.float32), None),
               "blk.0.attn_q.weight": quant(T.Q4_K, h, h, 1), "blk.0.attn_k.weight": quant(T.Q4_K, 128, h, 2),
               "blk.0.attn_v.weight": quant(T.Q6_K, 128, h, 3), "blk.0.attn_output.weight": quant(T.Q8_0, h, h, 4),
               "blk.0.attn_q.bias": floats(h), "blk.0.attn_k.bias": floats(128), "blk.0.attn_v.bias": floats(128),
               "blk.0.ffn_gate_inp.weight": floats(e, h), "blk.0.ffn_gate_inp_shexp.weight": floats(h),
               "blk.0.ffn_gate_shexp.weight": quant(T.Q4_0, ff, h, 5),
               "blk.0.ffn_up_shexp.weight": quant(T.Q4_0, ff, h, 6),
               "blk.0.ffn_down_shexp.weight": quant(T.Q5_K, h, ff, 7)}
    for i, name in enumerate(("ffn_gate_exps", "ffn_up_exps", "ffn_down_exps")):
        blocks, t = quant(T.Q8_0, e * ff, h, 10 + i)
        tensors[f"blk.0.{name}.weight"] = (blocks.reshape(e, ff, -1), t)
    return write_gguf(path, "qwen2moe", tensors, meta)


def test_moe_model_keeps_attention_and_shared_expert_packed(tmp_path, monkeypatch):
    path = write_qwen2moe(tmp_path / "moe.gguf")
    _, dense = run(path, quantization="none")
    monkeypatch.setenv(PACKED_ENV, "1")
    model, packed = run(path)
    assert layouts(model) == {"model.layers.0.self_attn.qkv_proj": (8, 16), "model.layers.0.self_attn.o_proj": (8, 32),
                              "model.layers.0.mlp.gate": None,  # (+ the shared expert's gate row)
                              "model.layers.0.mlp.shared_expert.gate_up_proj": (4, 32),
                              "model.layers.0.mlp.shared_expert.down_proj": (8, 32)}
    for want, got in zip(dense, packed):
        assert got.outputs[0].token_ids == want.outputs[0].token_ids
        torch.testing.assert_close(logprob_rows(got.outputs[0].logprobs),
                                   logprob_rows(want.outputs[0].logprobs), atol=1e-4, rtol=1e-4)
