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
