"""The Triton kernels through Triton's CPU interpreter (float32/float16, small shapes) against
the torch reference ``layout.matmul_ref``."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

from litevllm_gptq.layout import PackedWeight, matmul_ref, pack_rows  # noqa: E402
from litevllm_gptq.linear import kernel_linear  # noqa: E402

if os.environ.get("TRITON_INTERPRET") != "1":
    pytest.skip("needs TRITON_INTERPRET=1 (set before triton is imported)", allow_module_level=True)


def random_packed(k, n, bits, group, zero_bias=True, perm=False, dtype=torch.float32, seed=0):
    gen = torch.Generator().manual_seed(seed)
    codes = torch.randint(0, 2**bits, (k, n), generator=gen)
    scales = (torch.rand(k // group, n, generator=gen) * 0.02 + 0.005).to(dtype)
    bias = (torch.randn(k // group, n, generator=gen) * 0.05).to(dtype) if zero_bias else None
    p = torch.randperm(k, generator=gen) if perm else None
    return PackedWeight(pack_rows(codes, bits), scales, bias, bits, group, p)


SHAPES = [  # (M, K, N, bits, group, zero_bias, perm)
    (1, 256, 96, 4, 32, True, False),
    (1, 512, 64, 4, 128, False, True),
    (3, 256, 128, 8, 64, True, False),
    (1, 384, 64, 8, 384, False, False),
    (5, 256, 96, 4, 64, True, True),
    (20, 128, 64, 4, 128, False, False),
    (33, 256, 64, 8, 32, True, False),
    (2, 64, 32, 4, 16, True, False),
]


@pytest.mark.parametrize("path", ["gemv", "gemm", "cublas"])
@pytest.mark.parametrize("shape", SHAPES, ids=[str(s) for s in SHAPES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_kernel_matches_reference(path, shape, dtype):
    m, k, n, bits, group, zb, perm = shape
    w = random_packed(k, n, bits, group, zb, perm, dtype)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(1)).to(dtype)
    bias = torch.randn(n).to(dtype)
    ref = matmul_ref(x.float(), w) + bias.float()
    got = kernel_linear(x, w, bias, path=path)
    assert got.dtype == dtype and got.shape == (m, n)
    tol = dict(atol=2e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=2e-2, rtol=1e-2)
    torch.testing.assert_close(got.float(), ref, **tol)


def test_split_k_and_no_bias():
    w = random_packed(1024, 64, 4, 128, True, False)
    x = torch.randn(1, 1024)
    from litevllm_gptq.kernels.gemv import gemv
    from litevllm_gptq.kernels.gemm import gemm
    ref = matmul_ref(x, w)
    for split in (1, 2, 4):
        torch.testing.assert_close(gemv(x, w, config=dict(SPLIT=split)), ref, atol=2e-4, rtol=1e-4)
        torch.testing.assert_close(gemm(x, w, config=dict(SPLIT=split)), ref, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(gemv(x, w, config=dict(PER_ELEMENT=True)), ref, atol=2e-4, rtol=1e-4)


def test_kernel_checks_inputs():
    w = random_packed(256, 64, 4, 32)
    with pytest.raises(ValueError, match="features"):
        kernel_linear(torch.randn(2, 128), w, path="gemv")
    with pytest.raises(ValueError, match="2-D"):
        kernel_linear(torch.randn(2, 256).int(), w, path="gemm")


def stacked(experts, k, n, bits, group, zero_bias, perm):
    ws = [random_packed(k, n, bits, group, zero_bias, perm, seed=e) for e in range(experts)]
    return PackedWeight(torch.stack([w.qweight for w in ws]), torch.stack([w.scales for w in ws]),
                        torch.stack([w.bias for w in ws]) if zero_bias else None, bits, group,
                        torch.stack([w.perm for w in ws]) if perm else None), ws


@pytest.mark.parametrize("zero_bias", [True, False])
def test_gemv_experts_rows_use_their_expert(zero_bias):
    from litevllm_gptq.kernels.gemv import gemv_experts
    w, ws = stacked(4, 256, 96, 4, 64, zero_bias, False)
    eids = torch.tensor([2, 0, 3, 2, 1], dtype=torch.int32)
    x = torch.randn(5, 256)
    want = torch.cat([matmul_ref(x[i:i + 1], ws[e]) for i, e in enumerate(eids.tolist())])
    torch.testing.assert_close(gemv_experts(x, w, eids), want, atol=2e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="expert_ids"):
        gemv_experts(x, w, eids[:3])


def test_moe_per_row_path_matches_per_expert_path():
    """The CUDA (graph-safe, per-row GEMV) MoE path against the sorted per-expert path."""
    from types import SimpleNamespace

    from litevllm.plugin_api import torch_ops
    from litevllm_gptq.moe import PackedMoEMethod
    w13, _ = stacked(4, 128, 2 * 64, 4, 32, True, True)
    w2, _ = stacked(4, 64, 128, 4, 32, False, True)
    layer = SimpleNamespace(w13_packed=w13, w2_packed=w2, num_experts=4)
    x = torch.randn(3, 128)
    weights, ids = torch_ops.moe_route(torch.randn(3, 4), 2, True)
    act = torch_ops.silu_and_mul
    torch.testing.assert_close(PackedMoEMethod._per_row(layer, x, weights, ids, act),
                               PackedMoEMethod._per_expert(layer, x, weights, ids, act),
                               atol=2e-4, rtol=1e-4)


WIDE_SHAPES = [  # (M, K, N, bits, group, zero_bias, perm): groups 32/128/per-channel, odd N
    (1, 256, 96, 4, 32, True, False),
    (2, 512, 64, 4, 128, False, True),
    (3, 256, 77, 8, 256, False, False),
    (4, 512, 130, 4, 512, True, False),
    (1, 256, 64, 8, 32, True, True),
    (4, 256, 33, 4, 128, True, True),
]
WIDE_CONFIGS = [dict(KERNEL="wide"), dict(KERNEL="wide", R=8, VEC=8, SPLIT=2),
                dict(KERNEL="wide", R=32, num_warps=2, SPLIT=4)]


@pytest.mark.parametrize("cfg", WIDE_CONFIGS, ids=["default", "r8v8s2", "r32w2s4"])
@pytest.mark.parametrize("shape", WIDE_SHAPES, ids=[str(s) for s in WIDE_SHAPES])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_wide_gemv_matches_reference(cfg, shape, dtype):
    from litevllm_gptq.kernels.gemv import gemv
    m, k, n, bits, group, zb, perm = shape
    w = random_packed(k, n, bits, group, zb, perm, dtype)
    x = torch.randn(m, k, generator=torch.Generator().manual_seed(1)).to(dtype)
    tol = dict(atol=2e-4, rtol=1e-4) if dtype == torch.float32 else dict(atol=2e-2, rtol=1e-2)
    for bias in (torch.randn(n).to(dtype), None):
        ref = matmul_ref(x.float(), w) + (0 if bias is None else bias.float())
        got = gemv(x, w, bias, config=cfg)
        assert got.dtype == dtype and got.shape == (m, n)
        torch.testing.assert_close(got.float(), ref, **tol)


def test_wide_gemv_experts():
    from litevllm_gptq.kernels.gemv import gemv_experts
    w, ws = stacked(4, 256, 96, 4, 64, True, False)
    eids = torch.tensor([2, 0, 3], dtype=torch.int32)
    x = torch.randn(3, 256)
    want = torch.cat([matmul_ref(x[i:i + 1], ws[e]) for i, e in enumerate(eids.tolist())])
    got = gemv_experts(x, w, eids, config=dict(KERNEL="wide", SPLIT=2))
    torch.testing.assert_close(got, want, atol=2e-4, rtol=1e-4)


def test_gemv_config_follows_table():
    """A tuned gemv entry keyed by M is used at the nearest M; a config for the other kernel
    ignores the tuned entry."""
    from litevllm_gptq.kernels import tuning
    from litevllm_gptq.kernels.gemv import config_for
    cpu = torch.device("cpu")
    tuning.set_table(cpu, {"gemv": {"1,b4,256,64": dict(KERNEL="wide", R=8, SPLIT=2),
                                    "8,b4,256,64": dict(KERNEL="split", BN=64, SPLIT=1)}})
    try:
        assert config_for(2, 256, 64, 4, cpu)["R"] == 8
        assert config_for(6, 256, 64, 4, cpu)["KERNEL"] == "split"
        cfg = config_for(2, 256, 64, 4, cpu, dict(KERNEL="split"))
        assert cfg["KERNEL"] == "split" and "R" not in cfg
    finally:
        tuning.set_table(cpu, {})


def test_dispatch_uses_gemv_up_to_tuned_rows(monkeypatch):
    """policy.gemv_max_m_by_shape overrides gemv_max_m for its shape."""
    from litevllm_gptq.kernels import gemm as gemm_mod
    from litevllm_gptq.kernels import gemv as gemv_mod
    from litevllm_gptq.kernels import tuning
    calls = []
    monkeypatch.setattr(gemv_mod, "gemv", lambda x, w, b=None: calls.append("gemv"))
    monkeypatch.setattr(gemm_mod, "gemm", lambda x, w, b=None: calls.append("gemm"))
    cpu = torch.device("cpu")
    w = random_packed(256, 64, 4, 128)
    tuning.set_table(cpu, {"policy": {"gemv_max_m": 1, "cublas_min_m": 512,
                                      "gemv_max_m_by_shape": {"b4,256,64": 4}}})
    try:
        for m in (1, 4, 5):
            kernel_linear(torch.randn(m, 256), w)
        kernel_linear(torch.randn(2, 256), random_packed(256, 32, 4, 128))
    finally:
        tuning.set_table(cpu, {})
    assert calls == ["gemv", "gemv", "gemm", "gemm"]
