"""The W4A16 / W8A16 kernels of litevllm-plugin-gptq at real Llama shapes in bf16, against the
torch dequant reference, plus a CUDA-graph replay."""
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
gptq = pytest.importorskip("litevllm_gptq.layout")

SHAPES = [(4096, 4096), (4096, 14336), (14336, 4096)]
MS = [1, 16, 64, 512]
FORMATS = {"w4-g128-zero": (4, 128, True, False), "w4-g128-sym-perm": (4, 128, False, True),
           "w8-channel": (8, -1, False, False)}


def packed(k, n, bits, group, zero, perm, seed=0):
    gen = torch.Generator(device="cuda").manual_seed(seed)
    g = k if group == -1 else group
    codes = torch.randint(0, 2**bits, (k, n), generator=gen, device="cuda")
    scales = (torch.rand(k // g, n, generator=gen, device="cuda") * 0.01 + 0.002).half()
    bias = (-scales.float() * torch.randint(0, 2**bits, (k // g, n), generator=gen,
                                            device="cuda")).half() if zero else None
    p = torch.randperm(k, generator=gen, device="cuda") if perm else None
    return gptq.PackedWeight(gptq.pack_rows(codes, bits), scales, bias, bits, g, p)


@pytest.fixture(scope="module")
def weights():
    return {}


@pytest.mark.parametrize("fmt", list(FORMATS))
@pytest.mark.parametrize("shape", SHAPES, ids=[f"{k}x{n}" for k, n in SHAPES])
@pytest.mark.parametrize("m", MS)
def test_kernels_match_dequant_reference(fmt, shape, m, weights):
    from litevllm_gptq.linear import kernel_linear
    key = (fmt, shape)
    if key not in weights:
        weights[key] = packed(*shape, *FORMATS[fmt])
    w = weights[key]
    x = torch.randn(m, shape[0], device="cuda", dtype=torch.bfloat16)
    bias = torch.randn(shape[1], device="cuda", dtype=torch.bfloat16)
    want = gptq.matmul_ref(x.float(), w) + bias.float()
    from litevllm_gptq.kernels.gemv import gemv
    paths = ["gemm", "cublas"] + (["gemv", "gemv-wide", "gemv-split"] if m <= 16 else [])
    for path in paths:
        if path.startswith("gemv-"):  # each GEMV kernel, whatever the table picks
            got = gemv(x, w, bias, config=dict(KERNEL=path[5:]))
        else:
            got = kernel_linear(x, w, bias, path=path)
        assert got.dtype == torch.bfloat16 and got.shape == want.shape
        assert torch.isfinite(got).all(), path
        err = ((got.float() - want).norm() / want.norm()).item()
        assert err < 1e-2, f"{path}: relative error {err:.2e}"


def test_packed_linear_in_cuda_graph():
    from litevllm_gptq.linear import packed_linear
    w = packed(4096, 4096, 4, 128, True, False)
    for m in (1, 8, 64):
        x = torch.randn(m, 4096, device="cuda", dtype=torch.bfloat16)
        eager = packed_linear(x, w)
        graph = torch.cuda.CUDAGraph()
        packed_linear(x, w)  # compile outside the capture
        with torch.cuda.graph(graph):
            out = packed_linear(x, w)
        x.copy_(torch.randn_like(x))
        graph.replay()
        torch.testing.assert_close(out, packed_linear(x, w))
        assert not torch.equal(out, eager)
