"""The weight-only FP8 GEMV (M = 1..4) against the torch dequant reference, through the CPU
interpreter (float32/float16 activations; bf16 and real shapes run in benchmarks/bench_fp8.py).
The fp8 weights are made by torch, so the interpreter's fp8 rounding quirks (see
test_fp8_kernels.assert_same_codes) do not enter: the kernel only decodes them."""
import pytest
import torch

from litevllm_fp8 import reference as ref
from litevllm_fp8.kernels import tuning
from litevllm_fp8.kernels import w8a16_gemv as gemv_mod
from litevllm_fp8.kernels.w8a16_gemv import w8a16_gemv
from litevllm_fp8.ops import fp8_linear
from litevllm_fp8.path import WEIGHT_ONLY

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def make_weight(n, k, scheme, seed=0):
    """(fp8 bits [N, K], scales [N, KB], group_k): per channel, or block-wise [128, 128]
    scales expanded to one per row as the fp8 linear layer stores them."""
    w = torch.randn(n, k, generator=torch.Generator().manual_seed(seed)) / k ** 0.5
    if scheme == "channel":
        q, s = ref.quantize_rows(w)
        group_k = k
    else:
        q, s = ref.quantize_blocks(w, 128, 128)
        s = s.repeat_interleave(128, 0)[:n]
        group_k = 128
    return q.view(torch.uint8).to(DEV), s.float().contiguous().to(DEV), group_k


def check(m, n, k, scheme, dtype, config=None, native=None, bias=True):
    w, s, group_k = make_weight(n, k, scheme, seed=n + k)
    gen = torch.Generator().manual_seed(m)
    x = torch.randn(m, k, generator=gen).to(dtype).to(DEV)
    b = torch.randn(n, generator=gen).to(dtype).to(DEV) if bias else None
    want = x.float() @ ref.dequantize(w, s, group_k).t()
    if bias:
        want += b.float()
    got = w8a16_gemv(x, w, s, group_k, b, config, native)
    assert got.dtype == dtype and got.shape == (m, n)
    tol = 1e-4 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(got.float(), want, atol=tol, rtol=tol)


@pytest.mark.parametrize("m", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("scheme", ["channel", "block"])
def test_gemv_default_config(m, dtype, scheme):
    check(m, 72, 384, scheme, dtype)  # odd-sized N tile at the end, K split


@pytest.mark.parametrize("each", [False, True])
@pytest.mark.parametrize("split", [1, 3])
def test_gemv_explicit_configs(each, split):
    """Ragged K (200 is no multiple of 64), odd N, both accumulator kinds, split-K on and off."""
    cfg = dict(BLOCK_N=16, BLOCK_K=64, SPLIT_K=split, EACH=each, VEC=16, UNROLL=2,
               num_warps=2)
    check(3, 37, 200, "channel", torch.float32, cfg)
    check(1, 37, 256, "block", torch.float16, cfg, bias=False)


def test_gemv_decodes_e4m3_bits():
    """GPUs without fp8 read the uint8 bits and decode them with integer ops."""
    check(2, 40, 256, "channel", torch.float32, native=False)
    check(1, 40, 256, "block", torch.float16, native=False)


def test_fp8_linear_routes_small_m_to_gemv(monkeypatch):
    """M <= MAX_M goes through the GEMV unless the shape's tuned entry says otherwise."""
    w, s, gk = make_weight(48, 128, "channel")
    x = torch.randn(2, 128).to(DEV)
    calls = []
    real = gemv_mod.w8a16_gemv
    monkeypatch.setattr(gemv_mod, "w8a16_gemv", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    want = x @ ref.dequantize(w, s, gk).t()
    torch.testing.assert_close(fp8_linear(x, w, s, gk, None, None, WEIGHT_ONLY), want,
                               atol=1e-4, rtol=1e-4)
    assert calls
    calls.clear()
    monkeypatch.setattr(tuning, "_picks", {})
    tuning.set_pick(x.device, 4, 128, 48, None)  # the tl.dot kernel won this shape
    try:
        torch.testing.assert_close(fp8_linear(x, w, s, gk, None, None, WEIGHT_ONLY), want,
                                   atol=1e-4, rtol=1e-4)
    finally:
        tuning.lookup.cache_clear()
    assert not calls
    # called directly, the GEMV still runs (on its heuristic config)
    torch.testing.assert_close(real(x, w, s, gk), want, atol=1e-4, rtol=1e-4)


def test_gemv_rejects_bad_inputs():
    w, s, gk = make_weight(32, 64, "channel")
    with pytest.raises(ValueError, match="serves 1..4 rows"):
        w8a16_gemv(torch.randn(5, 64).to(DEV), w, s, gk)
    with pytest.raises(ValueError, match="weight must be"):
        w8a16_gemv(torch.randn(1, 48).to(DEV), w, s, gk)
    with pytest.raises(ValueError, match="bias must be"):
        w8a16_gemv(torch.randn(1, 64).to(DEV), w, s, gk, torch.zeros(8).to(DEV))
    with pytest.raises(ValueError, match="not a multiple of BLOCK_K"):
        w8a16_gemv(torch.randn(1, 64).to(DEV), w, s[:, :1].repeat(1, 2).contiguous(), 32,
                   config=dict(BLOCK_N=16, BLOCK_K=64, SPLIT_K=1, EACH=False, VEC=8, UNROLL=1,
                               num_warps=4))
