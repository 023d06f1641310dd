"""The sampler on CUDA: the noise hash has the CPU bits, and a multi-step run of sampled picks
(temperature, top-k, top-p, seeds) makes no host synchronization."""
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from litevllm import SamplingParams  # noqa: E402
from litevllm.engine.sampler import Sampler, uniform_noise  # noqa: E402
from litevllm.engine.sequence import Sequence  # noqa: E402


def test_noise_bits_match_cpu():
    g = torch.Generator().manual_seed(0)
    seeds = torch.randint(0, 2**62, (64,), generator=g)
    steps = torch.randint(0, 100_000, (64,), generator=g)
    cpu = uniform_noise(seeds, steps, 32000)
    assert torch.equal(uniform_noise(seeds.cuda(), steps.cuda(), 32000).cpu(), cpu)


@pytest.mark.parametrize("params", [
    SamplingParams(temperature=0.6, seed=1),
    SamplingParams(temperature=0.8, top_p=0.9, top_k=50, min_p=0.01, seed=2),
], ids=["temperature", "filters"])
def test_multi_step_picks_never_sync(params):
    seqs = [Sequence(i, str(i), [1], params, seed=100 + i) for i in range(256)]
    seqs[0] = Sequence(0, "0", [1], SamplingParams(temperature=0), seed=1)  # a greedy row too
    logits = torch.randn(256, 32000, device="cuda")
    Sampler([]).picker(seqs)(logits, 0)  # warm up: kernels, pinned host blocks
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        pick = Sampler([]).picker(seqs)
        out = [pick(logits, j) for j in range(4)]
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert torch.stack(out).shape == (4, 256)
