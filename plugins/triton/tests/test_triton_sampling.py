"""The fused sample op against torch_ops.sample: noise bits, and the same token for every
draw over parameter combinations, ties, -inf logits and rows longer than a chunk."""
import pytest
import torch

from litevllm.plugin_api import torch_ops as ref
from litevllm_triton.kernels import sampling

V, CHUNK = 1000, 256          # 3.9 chunks: the last one partial
DRAWS = 6                     # noise positions per row, batched as rows


def _rows(logits, temp, top_k, top_p, min_p, greedy=None):
    """Every row DRAWS times, each copy at its own noise position, with per-row seeds."""
    b = logits.shape[0]
    rep = lambda t: t.repeat_interleave(DRAWS, 0)
    seeds = rep(torch.randint(-2**62, 2**62, (b,)))
    steps = torch.arange(DRAWS).repeat(b) * 7919 + 3
    greedy = torch.zeros(b, dtype=torch.bool) if greedy is None else greedy
    return (rep(logits), rep(temp), rep(top_k), rep(top_p), rep(min_p), rep(greedy),
            seeds, steps)


def _check(args, chunk=CHUNK):
    got = sampling.sample(*args, chunk=chunk)
    want = ref.sample(*args)
    assert torch.equal(got, want), (got != want).nonzero().flatten().tolist()
    return got


def test_noise_bits_match_reference():
    seeds = torch.cat([torch.randint(-2**63, 2**63 - 1, (30,)), torch.tensor([0, -1, 2**40])])
    steps = torch.cat([torch.randint(0, 2**40, (30,)), torch.tensor([0, 2**32 + 5, 1])])
    assert torch.equal(sampling.uniform_noise(seeds, steps, 3001),
                       ref.uniform_noise(seeds, steps, 3001))


FILTERS = {   # (top_k, top_p, min_p) per row of a 4-row batch
    "temperature": ([0] * 4, [1.0] * 4, [0.0] * 4),
    "top_k": ([1, 5, 60, 999], [1.0] * 4, [0.0] * 4),
    "top_p": ([0] * 4, [0.05, 0.5, 0.9, 0.999], [0.0] * 4),
    "min_p": ([0] * 4, [1.0] * 4, [0.001, 0.05, 0.3, 1.0]),
    "all": ([40, 0, 7, 500], [0.8, 0.6, 0.95, 0.3], [0.02, 0.1, 0.0, 0.01]),
    "mixed": ([0, 3, 0, 0], [1.0, 1.0, 0.7, 1.0], [0.0, 0.0, 0.0, 0.2]),
}


@pytest.mark.parametrize("logit_kind", ["distinct", "ties"])
@pytest.mark.parametrize("name", list(FILTERS))
def test_same_tokens_as_reference(name, logit_kind):
    if logit_kind == "distinct":
        logits = torch.randn(4, V) * torch.tensor([[0.5], [2.0], [4.0], [8.0]])
    else:   # few distinct values: tie groups straddle every threshold
        logits = torch.randint(-6, 3, (4, V)).float() * 0.75
    top_k, top_p, min_p = FILTERS[name]
    temp = torch.tensor([0.6, 1.0, 1.3, 0.25])
    _check(_rows(logits, temp, torch.tensor(top_k), torch.tensor(top_p), torch.tensor(min_p)))


def test_greedy_rows_mixed_in_and_ties_go_to_the_lowest_id():
    logits = torch.randn(4, V)
    logits[1, [17, 400, 999]] = 50.0    # greedy row with a three-way tie
    logits[3, [5, 900]] = 50.0          # a sampled row's top-k=1 tie: both kept
    greedy = torch.tensor([False, True, True, False])
    got = _check(_rows(logits, torch.tensor([0.7, 1.0, 1.0, 1.0]), torch.tensor([0, 0, 0, 1]),
                       torch.tensor([0.9, 1.0, 1.0, 1.0]), torch.zeros(4), greedy))
    assert set(got[DRAWS:3 * DRAWS].tolist()) == {17, int(logits[2].argmax())}
    assert set(got[3 * DRAWS:].tolist()) == {5, 900}


def test_minus_infinity_logits():
    """Banned tokens (-inf) are never drawn, and top-k counts only the finite ones."""
    logits = torch.randn(3, V)
    logits[0, 10:] = float("-inf")      # 10 finite tokens, top_k 50: all kept
    logits[1, ::2] = float("-inf")
    logits[2, :-3] = float("-inf")
    got = _check(_rows(logits, torch.ones(3), torch.tensor([50, 20, 2]),
                       torch.tensor([0.9, 0.8, 1.0]), torch.tensor([0.0, 0.05, 0.0])))
    assert torch.isfinite(logits.repeat_interleave(DRAWS, 0).gather(1, got[:, None])).all()


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the interpreter's -inf - -inf
def test_rows_without_a_finite_logit_draw_token_zero():
    """Every token banned (a grammar allowing only EOS while min_tokens bans it): token 0 at
    once, filtered or not, where the filters' rejection loop would run V passes."""
    logits = torch.full((3, V), float("-inf"))
    got = _check(_rows(logits, torch.ones(3), torch.tensor([0, 5, 0]),
                       torch.tensor([1.0, 1.0, 0.9]), torch.tensor([0.0, 0.0, 0.1])))
    assert not got.any()


@pytest.mark.parametrize("v,chunk", [(5, 16), (64, 64), (3001, 256)])
def test_vocab_sizes_and_chunks(v, chunk):
    logits = torch.randn(2, v) * 3
    _check(_rows(logits, torch.tensor([0.8, 1.1]), torch.tensor([3, 0]),
                 torch.tensor([0.9, 0.7]), torch.tensor([0.0, 0.05])), chunk)


def test_kept_set_is_covered():
    """Draws land on every kept token and on nothing else (top-k 4 of a flat row)."""
    logits = torch.zeros(1, V)
    logits[0, [3, 70, 500, 998]] = 1.0
    got = _check(_rows(logits.expand(8, V).contiguous(), torch.ones(8),
                       torch.full((8,), 4), torch.ones(8), torch.zeros(8)))
    assert set(got.tolist()) == {3, 70, 500, 998}


def test_strided_rows():
    """Logit rows may be a view with a row stride (bf16 logits: tests/gpu)."""
    args = list(_rows(torch.randn(2, V), torch.tensor([0.7, 1.0]), torch.tensor([0, 9]),
                      torch.tensor([0.9, 1.0]), torch.zeros(2)))
    args[0] = torch.randn(args[0].shape[0], 2 * V)[:, :V]
    _check(args)


def test_rejects_bad_inputs():
    logits = torch.randn(2, 10)
    f, i = torch.ones(2), torch.zeros(2, dtype=torch.int64)
    b = torch.zeros(2, dtype=torch.bool)
    with pytest.raises(ValueError, match="temperature has dtype"):
        sampling.sample(logits, f.double(), i, f, f, b, i, i)
    with pytest.raises(ValueError, match="top_p has 3 rows, logits 2"):
        sampling.sample(logits, f, i, torch.ones(3), f, b, i, i)
    with pytest.raises(ValueError, match="logits must be 2-D"):
        sampling.sample(logits[0], f, i, f, f, b, i, i)
    with pytest.raises(ValueError, match="chunk must be a power of 2"):
        sampling.sample(logits, f, i, f, f, b, i, i, chunk=100)

