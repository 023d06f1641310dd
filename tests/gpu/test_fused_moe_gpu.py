"""The Triton fused-MoE kernel at real sizes on a CUDA GPU (bf16) against the torch reference."""
import pytest
import torch

from litevllm.ops import torch_ops as ref

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

# (E, top_k, H, I, renormalize): Qwen1.5-MoE-A2.7B and Qwen3-30B-A3B
SHAPES = {"qwen1.5-moe": (60, 4, 2048, 1408, False), "qwen3-30b-a3b": (128, 8, 2048, 768, True)}


def make(t, e, h, inter, dtype=torch.bfloat16):
    g = torch.Generator(device="cuda").manual_seed(t * 1000 + e)
    hidden = torch.randn(t, h, device="cuda", generator=g).to(dtype)
    w13 = (torch.randn(e, 2 * inter, h, device="cuda", generator=g) / h ** 0.5).to(dtype)
    w2 = (torch.randn(e, h, inter, device="cuda", generator=g) / inter ** 0.5).to(dtype)
    logits = torch.randn(t, e, device="cuda", generator=g).to(dtype)
    return hidden, w13, w2, logits


def rel_err(got, want):
    return ((got.float() - want.float()).norm() / want.float().norm()).item()


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("t", [1, 7, 64, 512, 4096])
def test_bf16_matches_reference(shape, t):
    from litevllm_triton.kernels.fused_moe import fused_moe
    e, k, h, inter, renorm = SHAPES[shape]
    hidden, w13, w2, logits = make(t, e, h, inter)
    got = fused_moe(hidden, w13, w2, logits, k, renorm)
    want = ref.fused_moe(hidden.float(), w13.float(), w2.float(), logits, k, renorm)
    assert torch.isfinite(got).all()
    assert rel_err(got, want) < 1e-2


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("t,block_m", [(1, 1), (7, 2), (16, 4)])
def test_bf16_register_tiles_match_reference(shape, t, block_m):
    """BLOCK_M below 16 (decode): the register-product path, long K tiles, bf16."""
    from litevllm_triton.kernels.fused_moe import fused_moe
    e, k, h, inter, renorm = SHAPES[shape]
    hidden, w13, w2, logits = make(t, e, h, inter)
    tile = dict(BLOCK_N=4, BLOCK_K=1024 // block_m, GROUP_M=1, num_warps=4, num_stages=3)
    got = fused_moe(hidden, w13, w2, logits, k, renorm,
                    config=dict(BLOCK_M=block_m, up=tile, down=tile))
    want = ref.fused_moe(hidden.float(), w13.float(), w2.float(), logits, k, renorm)
    assert torch.isfinite(got).all()
    assert rel_err(got, want) < 1e-2


@pytest.mark.parametrize("t", [1, 16, 300])
def test_bf16_shared_expert_in_the_final_sum(t):
    """Qwen1.5-MoE's gated shared expert added by the sum kernel, bf16, against the reference."""
    from litevllm_triton.kernels.fused_moe import fused_moe
    e, k, h, inter, renorm = SHAPES["qwen1.5-moe"]
    hidden, w13, w2, logits = make(t, e, h, inter)
    shared = torch.randn(t, h, device="cuda").to(torch.bfloat16)
    gate = torch.randn(t, 1, device="cuda").to(torch.bfloat16)
    got = fused_moe(hidden, w13, w2, logits, k, renorm, shared=shared, shared_gate=gate)
    want = ref.fused_moe(hidden.float(), w13.float(), w2.float(), logits, k, renorm,
                         shared=shared.float(), shared_gate=gate.float())
    assert torch.isfinite(got).all()
    assert rel_err(got, want) < 1e-2


@pytest.mark.parametrize("t", [1, 16, 200, 300])
@pytest.mark.parametrize("graph", [False, True])
def test_bf16_folded_shared_expert(t, graph):
    """Qwen1.5-MoE's shared expert (4 x 1408 wide) as experts 60-63, gated by logit column 60,
    bf16, eager and replayed from a CUDA graph; 300 tokens route through the torch ops."""
    from litevllm_triton.kernels.fused_moe import fused_moe
    e, k, h, inter, renorm = SHAPES["qwen1.5-moe"]
    hidden, w13, w2, logits = make(t, e + 4, h, inter)
    logits = logits[:, :e + 1]  # a strided view, as the packed router's output is
    fn = lambda: fused_moe(hidden, w13, w2, logits, k, renorm, shared_experts=4)  # noqa: E731
    got = fn()
    if graph:
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            out = fn()
        hidden.copy_(torch.randn_like(hidden))  # new tokens, new routing
        logits.copy_(torch.randn_like(logits))
        g.replay()
        got = out
    want = ref.fused_moe(hidden.float(), w13.float(), w2.float(), logits, k, renorm,
                         shared_experts=4)
    assert torch.isfinite(got).all()
    assert rel_err(got, want) < 1e-2


def tie_free_logits(t, e, seed):
    """bf16 router logits with distinct values per token (ranks / 8 are exact), so the top-k
    has no ties for torch.topk to break its own way; most rows go to the upper half."""
    g = torch.Generator(device="cuda").manual_seed(seed)
    bias = torch.zeros(e, device="cuda")
    bias[e // 2:] = 2.0
    ranks = (torch.randn(t, e, device="cuda", generator=g) + bias).argsort(1).argsort(1)
    return (ranks.float() / 8).to(torch.bfloat16)


@pytest.mark.parametrize("t,e,k,renorm,block_m", [
    (1, 60, 4, False, 16), (256, 60, 4, False, 16), (256, 60, 4, False, 64),
    (512, 60, 4, False, 64), (256, 128, 8, True, 64), (100, 256, 8, False, 16)])
@pytest.mark.parametrize("graph", [False, True])
def test_one_program_route_align_matches_torch_path(t, e, k, renorm, block_m, graph):
    """Up to 2,048 (token, slot) rows in one program: the torch path's exact layout, also
    when replayed from a CUDA graph with new logits."""
    from litevllm_triton.kernels import fused_moe as fm
    assert t * k <= fm.SMALL_ROWS
    logits = tie_free_logits(t, e, 0)
    out = fm.route_and_align(logits, k, renorm, block_m)
    if graph:
        torch.cuda.synchronize()
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            out = fm.route_and_align(logits, k, renorm, block_m)
        logits.copy_(tie_free_logits(t, e, 1))
        g.replay()
    torch.cuda.synchronize()
    w, rows, block_expert = out
    w_ref, ids = ref.moe_route(logits, k, renorm)
    rows_ref, block_expert_ref = fm.moe_align(ids, e, block_m)
    torch.testing.assert_close(w, w_ref)
    assert torch.equal(rows, rows_ref)
    assert torch.equal(block_expert.clamp(max=e), block_expert_ref)  # past the end: >= E


def test_cuda_graph_replay_follows_new_routing():
    """No host sync inside: the op captures into a CUDA graph and replays with new inputs."""
    from litevllm_triton.kernels.fused_moe import fused_moe
    e, k, h, inter, renorm = SHAPES["qwen1.5-moe"]
    hidden, w13, w2, logits = make(16, e, h, inter)
    for _ in range(2):  # compile outside the capture
        fused_moe(hidden, w13, w2, logits, k, renorm)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = fused_moe(hidden, w13, w2, logits, k, renorm)
    new_hidden, _, _, new_logits = make(16, e, h, inter)
    new_logits[:, :30] -= 20  # half the experts get no tokens now
    hidden.copy_(new_hidden)
    logits.copy_(new_logits)
    graph.replay()
    torch.cuda.synchronize()
    want = ref.fused_moe(hidden.float(), w13.float(), w2.float(), logits, k, renorm)
    assert rel_err(out, want) < 1e-2


def test_moe_layer_with_triton_kernels():
    """FusedMoE (core layer) through the op registry picks the Triton kernel on CUDA."""
    from litevllm.model.context import ModelContext
    from litevllm.model.moe import FusedMoE
    from litevllm.ops import Ops
    from litevllm.quant.unquantized import UnquantizedConfig
    ops = Ops("auto", "cuda")
    ctx = ModelContext(ops, None, UnquantizedConfig(), torch.bfloat16, torch.device("cuda"), 128)
    e, k, h, inter, renorm = SHAPES["qwen3-30b-a3b"]
    with torch.device("cuda"):
        layer = FusedMoE(e, k, h, inter, ctx, renormalize=renorm, prefix="mlp.experts")
    hidden, w13, w2, logits = make(33, e, h, inter)
    layer.w13.copy_(w13)
    layer.w2.copy_(w2)
    got = layer(hidden, logits)
    want = ref.fused_moe(hidden.float(), w13.float(), w2.float(), logits, k, renorm)
    assert ops.chosen.get("fused_moe") == "triton", ops.chosen  # no silent torch fallback
    assert rel_err(got, want) < 1e-2
