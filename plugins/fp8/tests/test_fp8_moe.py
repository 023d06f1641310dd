"""FP8 experts: the fp8-weight fused-MoE kernel (interpreter) against dequantize + the torch
op, and online fp8 on a tiny Qwen2-MoE against the unquantized transformers model."""
import pytest
import torch

from litevllm.plugin_api import torch_ops

from litevllm_fp8 import reference as ref
from litevllm_fp8.kernels.fused_moe_fp8 import fused_moe_fp8

from fp8_packer import write_fp8_checkpoint
from test_fp8_parity import assert_close_to_hf, assert_matches_hf, run


def quantized_experts(e, rows, cols, gen, block_k=None):
    """fp8 experts with scales per row ([E, rows]) or per row and block_k columns."""
    w = torch.randn(e, rows, cols, generator=gen) / cols ** 0.5
    if block_k is None:
        q, s = ref.quantize_rows(w.reshape(-1, cols))
        return q.view(torch.uint8).view(e, rows, cols), s.view(e, rows)
    q, s = ref.quantize_blocks(w.reshape(-1, cols), 1, block_k)
    return q.view(torch.uint8).view(e, rows, cols), s.view(e, rows, -1)


def dequant_experts(w, s, block_k=None):
    e, rows, cols = w.shape
    s = s.reshape(e * rows, -1)
    return ref.dequantize(w.reshape(e * rows, cols), s, block_k or cols).view(e, rows, cols)


@pytest.mark.parametrize("block_k", [None, 32])
def test_fused_moe_fp8_kernel_matches_dequant_reference(block_k):
    gen = torch.Generator().manual_seed(0)
    e, h, inter, t, k = 4, 64, 48, 7, 2
    w13, s13 = quantized_experts(e, 2 * inter, h, gen, block_k)
    w2, s2 = quantized_experts(e, h, inter, gen, block_k)
    x = torch.randn(t, h, generator=gen)
    logits = torch.randn(t, e, generator=gen)
    d13, d2 = dequant_experts(w13, s13, block_k), dequant_experts(w2, s2, block_k)
    want = torch_ops.fused_moe(x, d13, d2, logits, k, True)
    tile = dict(BLOCK_N=16, BLOCK_K=64, GROUP_M=1, num_warps=4, num_stages=1)
    for native in (None, False):  # float8 loads, and e4m3 decoded from its bits
        got = fused_moe_fp8(x, w13, s13, w2, s2, logits, k, True,
                            config=dict(BLOCK_M=16, up=tile, down=tile), native=native,
                            block_k=block_k)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_online_fp8_qwen_moe_close_to_unquantized(tmp_path):
    from litevllm.testing import build_checkpoint, tiny_config
    cfg = tiny_config("Qwen2MoeForCausalLM", hidden_size=128, moe_intermediate_size=64,
                      shared_expert_intermediate_size=96, intermediate_size=128, vocab_size=160,
                      max_position_embeddings=256, decoder_sparse_step=1)
    hf = build_checkpoint("Qwen2MoeForCausalLM", cfg, tmp_path)
    llm, outs = run(tmp_path, quantization="fp8")
    moe = llm.engine.model.model.layers[0].mlp.experts
    assert moe.w13.dtype == torch.uint8 and moe.w13_scale.shape == (*moe.w13.shape[:2], 1)
    router = llm.engine.model.model.layers[0].mlp.gate
    assert router.weight.dtype == torch.float32  # routers are not quantized
    assert_close_to_hf(outs, hf)


MOE = dict(hidden_size=128, moe_intermediate_size=64, shared_expert_intermediate_size=96,
           intermediate_size=128, decoder_sparse_step=1, head_dim=32)


@pytest.mark.parametrize("block", [None, (64, 64)])
def test_fp8_moe_checkpoint_matches_hf_on_dequantized_weights(tmp_path, block):
    hf = write_fp8_checkpoint(tmp_path, block=block, arch="Qwen2MoeForCausalLM", **MOE)
    llm, outs = run(tmp_path)
    assert llm.engine.model.model.layers[0].mlp.experts.w13.dtype == torch.uint8
    assert_matches_hf(outs, hf)
