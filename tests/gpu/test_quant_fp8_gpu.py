"""FP8 kernels on the GPU in bf16 against the torch reference at Llama-3-8B shapes, inside a
CUDA graph, and the engine on fp8 checkpoints / online fp8 (needs compute capability 8.9+)."""
import sys
from pathlib import Path

import pytest
import torch

if not torch.cuda.is_available() or torch.cuda.get_device_capability() < (8, 9):
    pytest.skip("needs a GPU with FP8 tensor cores", allow_module_level=True)
pytest.importorskip("litevllm_fp8", reason="the fp8 plugin is not installed")

from litevllm_fp8 import reference as ref  # noqa: E402
from litevllm_fp8.kernels.act_quant import quant_act  # noqa: E402
from litevllm_fp8.kernels.fused_moe_fp8 import fused_moe_fp8  # noqa: E402
from litevllm_fp8.kernels.w8a16_gemm import w8a16_gemm  # noqa: E402
from litevllm_fp8.kernels.w8a16_gemv import w8a16_gemv  # noqa: E402
from litevllm_fp8.kernels.w8a8_gemm import w8a8_gemm  # noqa: E402
from litevllm_fp8.ops import fp8_linear  # noqa: E402

SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096)]  # (K, N)
MS = [1, 4, 16, 64, 512]
_cache = {}


def weights(k, n, group_k):
    key = (k, n, group_k)
    if key not in _cache:
        g = torch.Generator(device="cuda").manual_seed(k * 7 + n)
        w = torch.randn(n, k, device="cuda", generator=g) / k ** 0.5
        if group_k >= k:
            q, s = ref.quantize_rows(w)
        else:
            q, s = ref.quantize_blocks(w, 128, group_k)
            s = s.repeat_interleave(128, 0)[:n].contiguous()
        _cache.clear()
        _cache[key] = (q.view(torch.uint8), s.float())
    return _cache[key]


def rel_err(got, want):
    return float((got.float() - want).abs().max() / want.abs().max())


@pytest.mark.parametrize("group_k", ["channel", 128])
@pytest.mark.parametrize("m", MS)
@pytest.mark.parametrize("k,n", SHAPES)
def test_kernels_match_reference(k, n, m, group_k):
    gk = k if group_k == "channel" else group_k
    w, s = weights(k, n, gk)
    x = torch.randn(m, k, device="cuda").to(torch.bfloat16)
    deq = ref.dequantize(w, s, gk)
    # weight-only: bf16 activations x dequantized weights
    want = x.float() @ deq.t()
    assert rel_err(w8a16_gemm(x, w, s, gk), want) < 1e-2
    if m <= 4:  # the barrier-free GEMV
        assert rel_err(w8a16_gemv(x, w, s, gk), want) < 1e-2
    # activation quant: the same codes and scales as torch
    group = None if group_k == "channel" else gk
    xq, xs = quant_act(x, group)
    rq, rs = ref.quantize_act(x, group)
    torch.testing.assert_close(xs, rs, rtol=0, atol=0)
    assert (xq.view(torch.uint8) != rq.view(torch.uint8)).float().mean() < 1e-3
    # W8A8 against the reference on the same quantized activations
    got = w8a8_gemm(xq, xs, w, s, gk, None, torch.bfloat16)
    # Hopper's fp8 MMA accumulates with fewer bits than float32: ~1% at K = 14336
    assert rel_err(got, ref.w8a8_matmul(xq, xs, w, s, gk, torch.float32)) < 1.5e-2
    assert rel_err(got, want) < 0.1  # and the fp8 activation error stays small


def test_static_input_scale_w8a8():
    w, s = weights(4096, 4096, 4096)
    x = torch.randn(64, 4096, device="cuda").to(torch.bfloat16)
    scale = (x.float().abs().max() / 448).reshape(1)
    got = fp8_linear(x, w, s, 4096, scale, None, "w8a8")
    xq, xs = quant_act(x, static_scale=scale)
    rq, rs = ref.quantize_act(x, static_scale=scale)
    assert (xq.view(torch.uint8) != rq.view(torch.uint8)).float().mean() < 1e-3
    want = ref.w8a8_matmul(xq, rs.contiguous(), w, s, 4096, torch.float32)
    assert rel_err(got, want) < 1e-2


@pytest.mark.parametrize("m", [1, 3, 64])
def test_fp8_linear_in_cuda_graph(m):
    """No host sync: the dispatch (GEMV with split-K at M <= 4, act quant + W8A8 at 64)
    replays."""
    w, s = weights(4096, 14336, 4096)
    bias = torch.randn(14336, device="cuda").to(torch.bfloat16)
    x = torch.randn(m, 4096, device="cuda").to(torch.bfloat16)
    for _ in range(2):
        fp8_linear(x, w, s, 4096, None, bias, "w8a8")
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fp8_linear(x, w, s, 4096, None, bias, "w8a8")
    x.copy_(torch.randn_like(x))
    graph.replay()
    torch.testing.assert_close(out, fp8_linear(x, w, s, 4096, None, bias, "w8a8"))


def test_fused_moe_fp8_bf16():
    g = torch.Generator(device="cuda").manual_seed(0)
    e, h, inter, t, k = 8, 1024, 512, 37, 2

    def experts(rows, cols):
        w = torch.randn(e * rows, cols, device="cuda", generator=g) / cols ** 0.5
        q, sc = ref.quantize_rows(w)
        return q.view(torch.uint8).view(e, rows, cols), sc.view(e, rows)
    w13, s13 = experts(2 * inter, h)
    w2, s2 = experts(h, inter)
    x = torch.randn(t, h, device="cuda", generator=g).bfloat16()
    logits = torch.randn(t, e, device="cuda", generator=g)
    from litevllm.plugin_api import torch_ops
    d13 = (ref.as_fp8(w13).float() * s13[..., None]).bfloat16()
    d2 = (ref.as_fp8(w2).float() * s2[..., None]).bfloat16()
    want = torch_ops.fused_moe(x.float(), d13.float(), d2.float(), logits, k, True)
    assert rel_err(fused_moe_fp8(x, w13, s13, w2, s2, logits, k, True), want) < 2e-2


# -- the engine ---------------------------------------------------------------------------------
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "plugins" / "fp8" / "tests"))


@pytest.mark.parametrize("block", [None, (128, 128)])
def test_engine_fp8_checkpoint_bf16(tmp_path, block):
    from fp8_packer import write_fp8_checkpoint

    from litevllm import LLM, SamplingParams
    hf = write_fp8_checkpoint(tmp_path, block=block)
    llm = LLM(str(tmp_path), dtype="bfloat16", max_model_len=128, max_num_seqs=8)
    prompts = [[5, 17, 99, 3, 150, 42, 7] * 3, [64], list(range(1, 40))]
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True, logprobs=1)
    for p, out in zip(prompts, llm.generate([{"prompt_token_ids": q} for q in prompts], params)):
        gen = out.outputs[0].token_ids
        with torch.no_grad():
            logits = hf(torch.tensor([p + gen])).logits[0, len(p) - 1:-1].float()
        for i, tok in enumerate(gen):  # HF's argmax, or a near-tie under bf16 + fp8 activations
            assert float(logits[i].max() - logits[i, tok]) < 0.3, (i, tok)
