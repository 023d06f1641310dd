"""The Triton fused-MoE kernel against the torch reference (TRITON_INTERPRET=1 on the CPU)."""
import pytest
import torch

from litevllm.plugin_api import torch_ops as ref
from litevllm_triton.kernels import fused_moe as fm
from litevllm_triton.kernels.fused_moe import (default_config, fused_moe,
                                               get_config, moe_align, route_and_align)

TOL = {torch.float32: dict(rtol=1e-4, atol=1e-4), torch.float16: dict(rtol=3e-3, atol=3e-3)}
TILE = dict(BLOCK_N=16, BLOCK_K=16, GROUP_M=2)
SMALL = dict(BLOCK_M=16, up=TILE, down=TILE)  # several tiles, ragged edges


def make(t, h, inter, e, dtype, dead=()):
    """Random inputs; experts in ``dead`` get a very low router logit, so no token picks them."""
    hidden = torch.randn(t, h).to(dtype)
    w13 = (torch.randn(e, 2 * inter, h) / h ** 0.5).to(dtype)
    w2 = (torch.randn(e, h, inter) / inter ** 0.5).to(dtype)
    logits = torch.randn(t, e)
    logits[:, list(dead)] = -1e4
    return hidden, w13, w2, logits.to(dtype)


def check(got, hidden, w13, w2, logits, top_k, renormalize, activation="silu"):
    """Against the reference run in float32 on the same (rounded) inputs."""
    want = ref.fused_moe(hidden.float(), w13.float(), w2.float(), logits.float(), top_k,
                         renormalize, activation)
    assert got.dtype == hidden.dtype and got.shape == hidden.shape
    assert torch.isfinite(got).all(), "unwritten or overflowed output"
    torch.testing.assert_close(got.float(), want, **TOL[hidden.dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("t,e,top_k,dead,renormalize,small", [
    (1, 4, 1, (), False, True),          # decode, one token
    (5, 8, 2, (1, 6, 7), True, True),    # experts that receive no tokens
    (37, 6, 3, (2,), False, True),       # several BLOCK_M blocks per expert
    (37, 6, 3, (2,), True, False),       # the same through torch routing + alignment
])
def test_matches_reference(dtype, t, e, top_k, dead, renormalize, small, monkeypatch):
    if not small:
        monkeypatch.setattr(fm, "SMALL_ROWS", 0)
    hidden, w13, w2, logits = make(t, 40, 24, e, dtype, dead)  # H, I not multiples of the tiles
    got = fused_moe(hidden, w13, w2, logits, top_k, renormalize, config=SMALL)
    check(got, hidden, w13, w2, logits, top_k, renormalize)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("block_m,t,top_k", [(1, 1, 2), (1, 5, 2), (2, 5, 3), (4, 13, 2)])
def test_register_tiles_for_few_rows_per_expert(dtype, block_m, t, top_k):
    """BLOCK_M below 16 multiplies in registers (no tl.dot); blocks with padding rows, ragged
    K and N edges, K over several BLOCK_K steps."""
    reg = dict(BLOCK_N=8, BLOCK_K=16, GROUP_M=1)
    hidden, w13, w2, logits = make(t, 40, 24, 6, dtype, dead=(3,))
    got = fused_moe(hidden, w13, w2, logits, top_k, True, config=dict(BLOCK_M=block_m, up=reg,
                                                                      down=reg))
    check(got, hidden, w13, w2, logits, top_k, True)
    # the same rows as the tl.dot tiles give (float32: exact IEEE products both ways)
    dot = fused_moe(hidden, w13, w2, logits, top_k, True, config=SMALL)
    torch.testing.assert_close(got, dot, **TOL[dtype])


@pytest.mark.parametrize("cfg,match", [
    (dict(BLOCK_M=16, up=dict(BLOCK_N=8, BLOCK_K=16), down=TILE), "tl.dot"),
    (dict(BLOCK_M=3, up=TILE, down=TILE), "power-of-2"),
    (dict(BLOCK_M=4, up=TILE), "power-of-2"),
])
def test_bad_config_is_named(cfg, match):
    hidden, w13, w2, logits = make(2, 32, 16, 4, torch.float32)
    with pytest.raises(ValueError, match=match):
        fused_moe(hidden, w13, w2, logits, 2, True, config=cfg)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_default_config_and_gelu(dtype):
    hidden, w13, w2, logits = make(9, 64, 32, 4, dtype, dead=(0,))
    check(fused_moe(hidden, w13, w2, logits, 2, True), hidden, w13, w2, logits, 2, True)
    got = fused_moe(hidden, w13, w2, logits, 2, False, "gelu_pytorch_tanh")
    check(got, hidden, w13, w2, logits, 2, False, "gelu_pytorch_tanh")


def test_strided_weights_and_empty_batch():
    hidden, w13, w2, logits = make(6, 32, 16, 4, torch.float32)
    padded = torch.randn(4, 40, 32)
    padded[:, :32] = w13  # expert stride 40*32, not 32*32
    got = fused_moe(hidden, padded[:, :32], w2, logits, 2, True, config=SMALL)
    check(got, hidden, w13, w2, logits, 2, True)
    assert fused_moe(hidden[:0], w13, w2, logits[:0], 2, True).shape == (0, 32)


def test_align_groups_rows_by_expert():
    ids = torch.tensor([[0, 2], [2, 1], [2, 0], [2, 3], [0, 2]])
    rows, block_expert = moe_align(ids, num_experts=5, block_m=2)
    n = ids.numel()
    assert rows.shape == (min(n, 5 + 5) * 2,) and block_expert.shape == (10,)
    real = rows[rows < n]
    assert sorted(real.tolist()) == list(range(n))  # every (token, slot) row exactly once
    for b, e in enumerate(block_expert.tolist()):
        block = rows[2 * b:2 * b + 2]
        block = block[block < n]
        if e == 5:
            assert block.numel() == 0  # past the end
        else:
            assert block.numel() > 0 and (ids.flatten()[block.long()] == e).all()
    # experts 0 (3 rows), 1 (1), 2 (5), 3 (1) and 4 (0 rows) take 2 + 1 + 3 + 1 blocks
    assert block_expert.tolist() == [0, 0, 1, 2, 2, 2, 3, 5, 5, 5]


def tie_free_logits(t, e, dtype, skew):
    """Router logits with distinct values per token (exact in float16: ranks / 8), so top-k
    has no ties; ``skew`` sends most rows to the upper half of the experts."""
    bias = torch.zeros(e)
    if skew:
        bias[e // 2:] = 3.0
    ranks = (torch.randn(t, e) + bias).argsort(1).argsort(1)
    return (ranks.float() / 8).to(dtype)


@pytest.mark.parametrize("t,e,top_k,renormalize,block_m,skew", [
    (1, 4, 2, True, 16, False),
    (1, 60, 4, False, 16, True),       # decode: a 256-element tile on one warp
    (2, 60, 4, False, 1, True),        # register-tile blocks of one row
    (4, 128, 8, True, 4, False),
    (3, 8, 8, False, 16, True),        # every expert picked
    (13, 60, 4, False, 16, True),
    (64, 64, 8, True, 32, False),      # two token chunks (32 at E_P=64)
    (100, 60, 4, False, 64, True),     # ragged last chunk
    (37, 7, 3, True, 32, False),       # odd k and E
    (256, 60, 4, False, 16, False),    # Qwen1.5-MoE's largest decode batch: 1,024 rows
    (256, 128, 8, True, 64, True),     # 2,048 rows: the one-program limit
    (511, 8, 4, True, 32, True),       # 2,044 rows; two chunks of row slots to pad
    (100, 256, 8, False, 16, True),    # the widest expert count: 8-token chunks
])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_one_program_route_align_equals_torch_path(t, e, top_k, renormalize, block_m, skew,
                                                   dtype, monkeypatch):
    check_route_align(tie_free_logits(t, e, dtype, skew), top_k, renormalize, block_m,
                      monkeypatch)


@pytest.mark.parametrize("t,e,top_k,block_m", [(100, 60, 4, 16), (37, 256, 8, 32),
                                               (300, 8, 2, 64)])
def test_one_program_route_align_small_tiles(t, e, top_k, block_m, monkeypatch):
    """A 256-element tile: 1 to 32 tokens per chunk, several chunks in every loop."""
    monkeypatch.setattr(fm, "ROUTE_TILES", {fm.SMALL_EXPERTS: (256, 8)})
    check_route_align(tie_free_logits(t, e, torch.float32, True), top_k, True, block_m,
                      monkeypatch)


def test_one_program_route_align_reads_strided_logits(monkeypatch):
    """router_logits need not be contiguous (the op's check allows any strides)."""
    logits = tie_free_logits(40, 12, torch.float32, True)
    check_route_align(logits.t().contiguous().t(), 3, True, 16, monkeypatch)  # strides (1, 40)


def check_route_align(logits, top_k, renormalize, block_m, monkeypatch):
    e = logits.shape[1]
    w_ref, ids = ref.moe_route(logits, top_k, renormalize)
    rows_ref, block_expert_ref = moe_align(ids, e, block_m)
    monkeypatch.setattr(fm, "moe_align", None)  # the torch path would fail now
    w, rows, block_expert = route_and_align(logits, top_k, renormalize, block_m)
    torch.testing.assert_close(w, w_ref)
    assert rows.tolist() == rows_ref.tolist()
    assert (block_expert.clamp(max=e) == block_expert_ref).all()  # past the end: any id >= E


def test_route_align_takes_torch_ops_past_the_limit(monkeypatch):
    calls = []
    monkeypatch.setattr(fm, "moe_align", lambda *a: calls.append(a) or moe_align(*a))
    route_and_align(torch.randn(fm.SMALL_ROWS // 4 + 1, 8), 4, True, 16)
    assert len(calls) == 1


def test_configs():
    cpu = torch.device("cpu")
    assert get_config(4, 60, 1408, 2048, torch.float16, cpu) == default_config(4, torch.float16)
    assert default_config(512, torch.bfloat16)["BLOCK_M"] == 64


@pytest.mark.parametrize("bad,match", [
    (dict(w2=torch.zeros(4, 32, 8)), "w2 must be"),
    (dict(logits=torch.zeros(6, 5)), "router_logits must be"),
    (dict(top_k=5), "top_k must be"),
    (dict(activation="relu"), "activation .relu. is not supported"),
    (dict(hidden=torch.zeros(6, 32, dtype=torch.float16)), "dtype"),
])
def test_bad_input(bad, match):
    hidden, w13, w2, logits = make(6, 32, 16, 4, torch.float32)
    args = dict(hidden=hidden, w13=w13, w2=w2, logits=logits, top_k=2, activation="silu")
    args.update(bad)
    with pytest.raises(ValueError, match=match):
        fused_moe(args["hidden"], args["w13"], args["w2"], args["logits"], args["top_k"], True,
                  args["activation"])


def test_a_bad_tuned_table_entry_is_named(monkeypatch):
    bad = dict(BLOCK_M=16, up=dict(BLOCK_N=4, BLOCK_K=16), down=TILE)
    monkeypatch.setattr(fm, "_load_configs", lambda path: {1: bad})
    fm.get_config.cache_clear()
    try:
        with pytest.raises(ValueError, match="tl.dot"):
            fm.get_config(1, 9, 16, 32, torch.float32, torch.device("cpu"))
    finally:
        fm.get_config.cache_clear()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("gated", [True, False])
def test_shared_expert_added_in_the_final_sum(dtype, gated):
    """fused_moe(shared=, shared_gate=) == the reference's output + sigmoid(gate) * shared."""
    hidden, w13, w2, logits = make(7, 64, 32, 4, dtype)
    shared = torch.randn(7, 64).to(dtype)
    gate = torch.randn(7, 1).to(dtype) if gated else None
    got = fused_moe(hidden, w13, w2, logits, 2, True, shared=shared, shared_gate=gate,
                    config=SMALL)
    want = ref.fused_moe(hidden.float(), w13.float(), w2.float(), logits.float(), 2, True,
                         shared=shared.float(), shared_gate=None if gate is None else gate.float())
    torch.testing.assert_close(got.float(), want, **TOL[dtype])


def test_moe_sum_strided_inputs_and_errors():
    y = torch.randn(5, 3, 40)
    big = torch.randn(5, 50)
    shared, gate = big[:, :40], big[:, 45:46]  # row strides of 50
    want = y.sum(1) + torch.sigmoid(gate) * shared
    torch.testing.assert_close(fm.moe_sum(y, shared, gate), want)
    torch.testing.assert_close(fm.moe_sum(y), y.sum(1))
    assert fm.moe_sum(y[:0]).shape == (0, 40)
    with pytest.raises(ValueError, match="shared must be"):
        fm.moe_sum(y, torch.randn(5, 41))
    with pytest.raises(ValueError, match="shared_gate must be"):
        fm.moe_sum(y, shared, torch.randn(5, 2))
    with pytest.raises(ValueError, match="needs shared"):
        fm.moe_sum(y, None, gate)


def test_route_launch_shrinks_the_tile_for_decode_only():
    """A few tokens get a tile no larger than they fill, on fewer warps; prefill keeps the
    measured tile (64 padded experts: 4,096 elements on 16 warps)."""
    slots = lambda t, k, e, bm: fm.max_blocks(t * k, e, bm) * bm  # noqa: E731
    assert fm.route_launch(1, 4, 64, slots(1, 4, 60, 16)) == (1, 64, 1)
    assert fm.route_launch(16, 64, 64, slots(16, 4, 60, 16)) == (16, 1024, 4)
    assert fm.route_launch(1, 8, 128, slots(1, 8, 128, 16)) == (1, 128, 1)  # top-8 too
    assert fm.route_launch(128, 512, 64, slots(128, 4, 60, 16)) == (64, 4096, 16)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("t,e,shared,gated,small,grouped", [
    (1, 6, 4, True, True, True),      # decode: a folded Qwen2-MoE shared expert (E_P 16)
    (5, 60, 4, True, True, True),     # 64 experts in all, the gate column after the routed 60
    (9, 5, 3, False, True, True),     # ungated shared experts (weight 1)
    (9, 5, 3, True, False, True),     # the torch routing + alignment past the one-program limit
    (9, 5, 3, True, True, False),     # past GROUPED_SHARED_MAX_TOKENS: dense slices
    (7, 6, 2, False, True, False),
])
@pytest.mark.parametrize("activation", ["silu", "gelu_pytorch_tanh"])
def test_folded_shared_experts_match_reference(dtype, t, e, shared, gated, small, grouped,
                                               activation, monkeypatch):
    """shared_experts=S: the last S experts are taken by every token, weighted by the sigmoid
    of router_logits' last column (or 1): in the grouped GEMMs, or as dense GEMMs."""
    if not small:
        monkeypatch.setattr(fm, "SMALL_ROWS", 0)
    monkeypatch.setattr(fm, "GROUPED_SHARED_MAX_TOKENS", 16 if grouped else 0)
    hidden, w13, w2, logits = make(t, 40, 24, e + shared, dtype)
    logits = logits[:, :e + 1] if gated else logits[:, :e]  # strided: a view of wider logits
    got = fused_moe(hidden, w13, w2, logits, 2, True, activation, shared_experts=shared,
                    config=SMALL)
    want = ref.fused_moe(hidden.float(), w13.float(), w2.float(), logits.float(), 2, True,
                         activation, shared_experts=shared)
    torch.testing.assert_close(got.float(), want, **TOL[dtype])


def test_folded_and_passed_shared_expert_is_an_error():
    hidden, w13, w2, logits = make(3, 40, 24, 6, torch.float32)
    with pytest.raises(ValueError, match="either shared_experts"):
        fused_moe(hidden, w13, w2, logits[:, :5], 2, True, shared=hidden, shared_experts=1)
    with pytest.raises(ValueError, match="needs num_experts"):
        route_and_align(logits[:, :5], 2, True, 16, shared_experts=1)


@pytest.mark.parametrize("t,e,top_k,shared,gated,block_m", [
    (1, 60, 4, 4, True, 16), (3, 60, 4, 4, True, 1), (64, 60, 4, 4, True, 16),
    (37, 7, 3, 2, False, 32), (100, 124, 4, 4, True, 16)])
def test_one_program_route_align_with_shared_slots(t, e, top_k, shared, gated, block_m,
                                                   monkeypatch):
    logits = tie_free_logits(t, e + 1, torch.float32, True)[:, :e + gated]
    w_ref, ids = ref.add_shared_slots(*ref.moe_route(logits[:, :e], top_k, True), logits, e,
                                      shared)
    rows_ref, block_expert_ref = moe_align(ids, e + shared, block_m)
    monkeypatch.setattr(fm, "moe_align", None)  # the torch path would fail now
    w, rows, block_expert = route_and_align(logits, top_k, True, block_m, e + shared, shared)
    torch.testing.assert_close(w, w_ref)
    assert rows.tolist() == rows_ref.tolist()
    assert (block_expert.clamp(max=e + shared) == block_expert_ref).all()
