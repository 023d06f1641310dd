"""The Triton plugin's fused sample op on CUDA against torch_ops.sample on CUDA: the noise bits,
and the same tokens for float32 and bf16 logits at real vocab sizes, every filter combination,
greedy rows mixed in; the picker's filtered path makes no host synchronization."""
import pytest
import torch

from litevllm.ops import torch_ops as ref

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_noise_bits_match_cpu():
    from litevllm_triton.kernels.sampling import uniform_noise
    g = torch.Generator().manual_seed(0)
    seeds = torch.randint(-2**63, 2**63 - 1, (64,), generator=g)
    steps = torch.randint(0, 2**40, (64,), generator=g)
    assert torch.equal(uniform_noise(seeds.cuda(), steps.cuda(), 151936).cpu(),
                       ref.uniform_noise(seeds, steps, 151936))


def _params(b, filters, g):
    top_k = torch.randint(1, 200, (b,), generator=g) if "k" in filters else torch.zeros(b, dtype=torch.int64)
    top_p = torch.rand(b, generator=g) * 0.95 + 0.05 if "p" in filters else torch.ones(b)
    min_p = torch.rand(b, generator=g) * 0.2 if "m" in filters else torch.zeros(b)
    temp = torch.rand(b, generator=g) + 0.3
    greedy = torch.rand(b, generator=g) < 0.1
    seeds = torch.randint(0, 2**62, (b,), generator=g)
    steps = torch.randint(0, 4096, (b,), generator=g)
    return [t.cuda() for t in (temp, top_k, top_p, min_p, greedy, seeds, steps)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("v", [32000, 151936])
@pytest.mark.parametrize("filters", ["p", "k", "m", "kpm"])
def test_fused_tokens_match_reference(dtype, v, filters):
    from litevllm_triton.kernels.sampling import sample
    g = torch.Generator().manual_seed(v + len(filters))
    b = 128
    scale = torch.linspace(0.5, 8.0, b)[:, None]   # flat to peaky rows
    logits = (torch.randn(b, v, generator=g) * scale).to(dtype).cuda()
    args = [logits, *_params(b, filters, g)]
    got, want = sample(*args), ref.sample(*args)
    assert torch.equal(got, want), f"{int((got != want).sum())} of {b} rows differ"


def test_fused_picker_never_syncs():
    from litevllm import SamplingParams
    from litevllm.engine.sampler import Sampler
    from litevllm.engine.sequence import Sequence
    from litevllm.ops import Ops
    params = SamplingParams(temperature=0.6, top_p=0.9, top_k=50, min_p=0.01)
    seqs = [Sequence(i, str(i), [1], params, seed=100 + i) for i in range(256)]
    sampler = Sampler([], Ops("auto", "cuda"))
    assert sampler.sample is not ref.sample
    logits = torch.randn(256, 32000, device="cuda")
    sampler.picker(seqs)(logits, 0)  # warm up: compile, pinned host blocks
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        pick = sampler.picker(seqs)
        out = [pick(logits, j) for j in range(4)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    want = Sampler([]).picker(seqs)
    assert all(torch.equal(o, want(logits, j)) for j, o in enumerate(out))
