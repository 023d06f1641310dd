"""The Triton kernels against the torch reference, through the CPU interpreter (float32 and
float16 activations only; bf16 and real shapes are in tests/gpu/test_quant_fp8_gpu.py)."""
import os

import pytest
import torch

from litevllm_fp8 import reference as ref
from litevllm_fp8.kernels.act_quant import quant_act
from litevllm_fp8.kernels.w8a16_gemm import w8a16_gemm
from litevllm_fp8.kernels.w8a8_gemm import w8a8_gemm

DEV = "cuda" if torch.cuda.is_available() else "cpu"
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"


def make_weight(n, k, group_k, seed=0):
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=gen) / k ** 0.5
    if group_k >= k:
        q, s = ref.quantize_rows(w)
    else:
        q, s = ref.quantize_blocks(w, 1, group_k)  # one row per block: [N, KB] scales
    return q.view(torch.uint8).to(DEV), s.float().to(DEV)


@pytest.mark.parametrize("group", [None, 32])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_act_quant_matches_reference(group, dtype):
    x = (torch.randn(5, 96, generator=torch.Generator().manual_seed(3)) * 3).to(dtype).to(DEV)
    x[2] = 0  # an all-zero row keeps a finite scale
    q, s = quant_act(x, group)
    rq, rs = ref.quantize_act(x, group)
    torch.testing.assert_close(s, rs, rtol=1e-6, atol=0)
    assert_same_codes(q, rq)


def assert_same_codes(q, rq):
    """Equal fp8 codes. Triton's CPU interpreter rounds ties away from zero and drops the carry
    when a value rounds up to the next power of two (125.8 -> 64, not 128): there, rare
    mismatches of that kind are allowed."""
    a, b = q.float(), rq.float()
    bad = a != b
    if INTERPRET:
        assert bad.float().mean() < 0.05
        pow2 = torch.log2(b.abs()).frac() == 0
        bad &= ~(pow2 & (a == b / 2)) & ((a - b).abs() > b.abs() / 8)
    assert not bad.any(), f"{int(bad.sum())} codes differ, e.g. {a[bad][:4]} vs {b[bad][:4]}"


def test_act_quant_static_scale():
    x = torch.randn(4, 64, generator=torch.Generator().manual_seed(4)).to(DEV)
    scale = torch.tensor([0.01], device=DEV)
    q, s = quant_act(x, static_scale=scale)
    rq, _ = ref.quantize_act(x, static_scale=scale)
    assert_same_codes(q, rq)
    assert s.shape == (1, 1)


@pytest.mark.parametrize("m,n,k,group_k", [(1, 48, 64, 64), (16, 80, 96, 96), (37, 64, 128, 32),
                                           (5, 96, 256, 64)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_w8a16_matches_dequant_reference(m, n, k, group_k, dtype):
    w, s = make_weight(n, k, group_k)
    gen = torch.Generator().manual_seed(m + n)
    x = torch.randn(m, k, generator=gen).to(dtype).to(DEV)
    bias = torch.randn(n, generator=gen).to(dtype).to(DEV)
    want = x.float() @ ref.dequantize(w, s, group_k).t() + bias.float()
    cfg = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=32, SPLIT_K=2, num_warps=4, num_stages=1)
    # the default, an explicit split-K, and e4m3 decoded from its bits (GPUs without fp8)
    for config, native in ((None, None), (cfg, None), (None, False)):
        got = w8a16_gemm(x, w, s, group_k, bias, config, native)
        assert got.dtype == dtype
        tol = 1e-4 if dtype == torch.float32 else 2e-2
        torch.testing.assert_close(got.float(), want, atol=tol, rtol=tol)


@pytest.mark.parametrize("m,n,k,group_k", [(3, 48, 64, 64), (20, 80, 128, 128), (33, 64, 128, 32),
                                           (40, 48, 256, 128)])
def test_w8a8_matches_quantized_reference(m, n, k, group_k):
    """Activations quantized as the kernel path does (per token, or per token and group)."""
    w, s = make_weight(n, k, group_k)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(m)).to(DEV)
    blockwise = group_k < k
    xq, xs = quant_act(x, group_k if blockwise else None)
    want = ref.w8a8_matmul(xq, xs, w, s, group_k, torch.float32)
    cfg = dict(BLOCK_M=16, BLOCK_N=16, BLOCK_K=32, GROUP_M=2, num_warps=4, num_stages=1)
    for config in (cfg, None):  # explicit tiles, and the defaults for this M
        got = w8a8_gemm(xq, xs, w, s, group_k, None, torch.float32, config)
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    # and it is close to the unquantized product (fp8 error, not garbage; the interpreter's
    # float8 rounding slips add to it)
    exact = x @ ref.dequantize(w, s, group_k).t()
    assert (got - exact).abs().max() < 0.15 * exact.abs().max()


def test_kernel_wrappers_reject_bad_inputs():
    w, s = make_weight(32, 64, 64)
    x = torch.randn(2, 64).to(DEV)
    with pytest.raises(ValueError, match="w_scale must be"):
        w8a16_gemm(x, w, s[:16], 64)
    with pytest.raises(ValueError, match="weight must be"):
        w8a16_gemm(torch.randn(2, 48).to(DEV), w, s, 64)
    with pytest.raises(ValueError, match="xq has dtype"):
        w8a8_gemm(x, s, w, s, 64, None, torch.float32)
    with pytest.raises(ValueError, match="multiple of the activation group"):
        quant_act(torch.randn(2, 60).to(DEV), 32)
