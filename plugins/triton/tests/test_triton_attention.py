"""Prefill/decode attention kernels and the backend against the torch reference."""
import pytest
import torch
from triton_test_utils import TOL, make_paged_batch

from litevllm.plugin_api import AttentionMetadata, AttentionSpec
from litevllm.plugin_api import TorchAttentionBackend, paged_attention_ref
from litevllm_triton import kernels
from litevllm_triton.backend import TritonAttentionBackend

DTYPES = [torch.float32, torch.float16]

# (num_heads, num_kv_heads, head_dim, block_size, sliding_window, softcap)
ATTN_CASES = {
    "mha": (2, 2, 32, 16, None, None),
    "gqa": (4, 2, 32, 16, None, None),
    "mqa": (4, 1, 16, 8, None, None),
    "group3": (6, 2, 16, 16, None, None),
    "window": (4, 2, 32, 16, 24, None),
    "softcap": (4, 2, 64, 16, None, 20.0),
    "wide-window": (2, 1, 16, 16, 90, None),
    "window+softcap": (2, 1, 16, 4, 10, 5.0),
    # head dims that are not powers of 2 (padded to the next one inside the kernels)
    "d48": (4, 2, 48, 16, None, None),
    "d80-window": (4, 1, 80, 16, 24, None),
    "d96-mha": (2, 2, 96, 8, None, None),
    "d112-softcap": (6, 2, 112, 16, None, 20.0),
    "d40": (2, 1, 40, 16, None, None),
}

# mixed batch: a fresh prompt, decodes, prefix hits + chunks, lengths off the block grid
MIXED_QUERY_LENS = [37, 1, 20, 1, 5, 70]
MIXED_SEQ_LENS = [37, 50, 90, 9, 133, 70]


def _spec(h, hkv, d, window, cap):
    return AttentionSpec(h, hkv, d, scale=d ** -0.5 * 1.3, sliding_window=window,
                         logit_softcap=cap)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(ATTN_CASES))
def test_prefill_mixed_batch(case, dtype):
    h, hkv, d, bs, window, cap = ATTN_CASES[case]
    spec = _spec(h, hkv, d, window, cap)
    k_cache, v_cache, bt, qsl, sl = make_paged_batch(MIXED_QUERY_LENS, MIXED_SEQ_LENS, hkv, d,
                                                     bs, dtype)
    q = torch.randn(sum(MIXED_QUERY_LENS), h, d, dtype=dtype)
    want = paged_attention_ref(q, k_cache, v_cache, bt, MIXED_QUERY_LENS, MIXED_SEQ_LENS, spec)
    got = kernels.prefill_attention(q, k_cache, v_cache, bt, qsl, sl, max(MIXED_QUERY_LENS),
                                    spec.scale, window, cap)
    torch.testing.assert_close(got, want, **TOL[dtype])


def test_prefill_strided_q_and_single_decode_row():
    h, hkv, d = 4, 2, 32
    spec = _spec(h, hkv, d, None, None)
    qlens, slens = [1], [45]
    k_cache, v_cache, bt, qsl, sl = make_paged_batch(qlens, slens, hkv, d, 16, torch.float32)
    q = torch.randn(1, 3 * h * d)[:, :h * d].view(1, h, d)  # a slice of a fused qkv row
    want = paged_attention_ref(q, k_cache, v_cache, bt, qlens, slens, spec)
    got = kernels.prefill_attention(q, k_cache, v_cache, bt, qsl, sl, 1, spec.scale)
    torch.testing.assert_close(got, want, **TOL[torch.float32])


DECODE_SEQ_LENS = [1, 17, 64, 100, 250]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", list(ATTN_CASES))
@pytest.mark.parametrize("num_splits", [None, 1, 8])
def test_decode(case, dtype, num_splits):
    h, hkv, d, bs, window, cap = ATTN_CASES[case]
    spec = _spec(h, hkv, d, window, cap)
    qlens = [1] * len(DECODE_SEQ_LENS)
    k_cache, v_cache, bt, _, sl = make_paged_batch(qlens, DECODE_SEQ_LENS, hkv, d, bs, dtype)
    q = torch.randn(len(qlens), h, d, dtype=dtype)
    want = paged_attention_ref(q, k_cache, v_cache, bt, qlens, DECODE_SEQ_LENS, spec)
    got = kernels.decode_attention(q, k_cache, v_cache, bt, sl, spec.scale, window, cap,
                                   num_splits=num_splits)
    torch.testing.assert_close(got, want, **TOL[dtype])


@pytest.mark.parametrize("num_splits", [1, 4])
@pytest.mark.parametrize("case", ["gqa", "window+softcap", "d48"])
def test_decode_launch_order_keeps_outputs(case, num_splits):
    """``order`` (longest first) only changes which rows launch first: every row's output is
    the one of the natural order, bit for bit."""
    h, hkv, d, bs, window, cap = ATTN_CASES[case]
    lens = [40, 3, 97, 1, 64, 18]
    k_cache, v_cache, bt, _, sl = make_paged_batch([1] * len(lens), lens, hkv, d, bs,
                                                   torch.float32)
    q = torch.randn(len(lens), h, d)
    want = kernels.decode_attention(q, k_cache, v_cache, bt, sl, 0.3, window, cap,
                                    num_splits=num_splits)
    for order in (kernels.decode_order(sl), torch.arange(len(lens) - 1, -1, -1)):
        got = kernels.decode_attention(q, k_cache, v_cache, bt, sl, 0.3, window, cap,
                                       num_splits=num_splits, order=order)
        assert torch.equal(got, want)
    if num_splits == 1:  # the kernel reads its rows from ``order``: only row 2 is written
        got = kernels.decode_attention(q, k_cache, v_cache, bt, sl, 0.3, window, cap,
                                       out=torch.full_like(q, float("nan")), num_splits=1,
                                       order=torch.full((len(lens),), 2))
        assert torch.equal(got[2], want[2]) and got[[0, 1, 3, 4, 5]].isnan().all()
    with pytest.raises(ValueError, match="order has 5 entries for 6 sequences"):
        kernels.decode_attention(q, k_cache, v_cache, bt, sl, 0.3, order=order[:5])
    with pytest.raises(ValueError, match="order"):
        kernels.decode_attention(q, k_cache, v_cache, bt, sl, 0.3, order=order.float())


@pytest.mark.parametrize("n", [1, 5, 32, 300])
def test_decode_order_is_a_stable_longest_first_sort(n):
    lens = torch.randint(0, 40, (n,), dtype=torch.int32)  # many ties
    want = torch.sort(lens, descending=True, stable=True).indices.to(torch.int32)
    assert torch.equal(kernels.decode_order(lens), want)
    assert kernels.decode_order(lens[:0]).shape == (0,)
    with pytest.raises(ValueError, match="seq_lens"):
        kernels.decode_order(lens.long())


def test_backend_orders_large_decode_batches_longest_first():
    n = TritonAttentionBackend.ORDER_MIN_SEQS
    backend = TritonAttentionBackend(torch.device("cpu"), torch.float32, 16)
    lens = torch.randint(1, 500, (n,), dtype=torch.int32)
    meta = _meta([1] * n, lens.tolist(), torch.zeros(n, 32, dtype=torch.int32),
                 torch.arange(n + 1, dtype=torch.int32), lens, torch.zeros(n, dtype=torch.long))
    order = backend.prepare(meta).extra["decode_order"]
    assert sorted(order.tolist()) == list(range(n))
    assert torch.all(lens[order][:-1] >= lens[order][1:])
    small = _meta([1] * 4, [5] * 4, torch.zeros(4, 1, dtype=torch.int32),
                  torch.arange(5, dtype=torch.int32), torch.full((4,), 5, dtype=torch.int32),
                  torch.zeros(4, dtype=torch.long))
    assert "decode_order" not in backend.prepare(small).extra  # under one wave: no sort
    prefill = _meta([3] * n, [3] * n, meta.block_tables, meta.query_start_loc, lens,
                    meta.slot_mapping)
    assert "decode_order" not in backend.prepare(prefill).extra


@pytest.mark.parametrize("num_splits", [1, 4])  # 1: no merge kernel
def test_decode_empty_sequence_gives_zeros(num_splits):
    k_cache, v_cache, bt, _, sl = make_paged_batch([1, 1], [30, 1], 1, 16, 16, torch.float32)
    sl[1] = 0  # a padding row of a captured batch
    q = torch.randn(2, 2, 16)
    got = kernels.decode_attention(q, k_cache, v_cache, bt, sl, 0.25, num_splits=num_splits)
    assert torch.equal(got[1], torch.zeros_like(got[1]))
    assert torch.isfinite(got).all()


def test_decode_splits_depend_on_shapes_only():
    assert kernels.decode_attention.__module__  # imported
    from litevllm_triton.kernels.decode_attention import num_decode_splits
    assert num_decode_splits(64, 8, 4096) == num_decode_splits(64, 8, 4096)
    assert num_decode_splits(1, 8, 32768) == 64 and num_decode_splits(1, 8, 256) == 1
    assert num_decode_splits(64, 8, 4096) == 1 and num_decode_splits(8, 8, 8192) == 8
    assert all(s & (s - 1) == 0 for s in (num_decode_splits(b, 4, 8192) for b in range(1, 300)))


@pytest.mark.parametrize("d", [48, 80])
def test_backend_odd_head_dim_chunked_prefill_then_decode(d):
    """A prompt in two chunks, then decode steps, through the backend: every output matches
    the torch backend on the same cache (head dims off the power-of-2 grid)."""
    h, hkv, bs, dtype = 4, 2, 8, torch.float32
    spec = _spec(h, hkv, d, None, None)
    steps = [(12, 12), (9, 21), (1, 22), (1, 23)]  # (query_len, seq_len)
    bt = torch.randperm(6).to(torch.int32)[None, :4]
    cache = torch.zeros(2, 6, bs, hkv, d, dtype=dtype)
    ref_cache = cache.clone()
    ours = TritonAttentionBackend(torch.device("cpu"), dtype, bs)
    ref = TorchAttentionBackend(torch.device("cpu"), dtype, bs)
    for ql, s in steps:
        pos = torch.arange(s - ql, s)
        slots = bt[0, pos // bs].long() * bs + pos % bs
        qsl = torch.tensor([0, ql], dtype=torch.int32)
        meta = _meta([ql], [s], bt, qsl, torch.tensor([s], dtype=torch.int32), slots)
        q, k, v = (torch.randn(ql, n, d, dtype=dtype) for n in (h, hkv, hkv))
        got = ours.forward(spec, q, k, v, cache, meta)
        want = ref.forward(spec, q, k, v, ref_cache, meta)
        torch.testing.assert_close(cache, ref_cache, rtol=0, atol=0)
        torch.testing.assert_close(got, want, **TOL[dtype])


def test_attention_input_errors():
    k_cache, v_cache, bt, qsl, sl = make_paged_batch([3], [3], 2, 32, 16, torch.float32)
    q = torch.randn(3, 4, 32)
    with pytest.raises(ValueError, match="int32"):
        kernels.prefill_attention(q, k_cache, v_cache, bt.long(), qsl, sl, 3, 1.0)
    with pytest.raises(ValueError, match="multiple of num_kv_heads"):
        kernels.prefill_attention(torch.randn(3, 3, 32), k_cache, v_cache, bt, qsl, sl, 3, 1.0)
    with pytest.raises(ValueError, match="one query row per sequence"):
        kernels.decode_attention(q, k_cache, v_cache, bt, sl, 1.0)
    with pytest.raises(ValueError, match="dtype"):
        kernels.decode_attention(q[:1].half(), k_cache, v_cache, bt, sl, 1.0)
    big = make_paged_batch([1], [3], 1, 320, 16, torch.float32)
    with pytest.raises(ValueError, match="head_dim must be in 1..256, got 320"):
        kernels.decode_attention(torch.randn(1, 1, 320), big[0], big[1], big[2], big[4], 1.0)


def _meta(qlens, slens, block_tables, qsl, sl, slots):
    return AttentionMetadata(slot_mapping=slots, query_start_loc=qsl, seq_lens=sl,
                             block_tables=block_tables, max_query_len=max(qlens),
                             max_seq_len=max(slens), num_seqs=len(qlens),
                             is_decode=all(n == 1 for n in qlens), query_lens_cpu=list(qlens),
                             seq_lens_cpu=list(slens))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("qlens,slens", [(MIXED_QUERY_LENS, MIXED_SEQ_LENS),
                                         ([1] * 4, [5, 16, 33, 80])])
def test_backend_matches_torch_backend(dtype, qlens, slens):
    h, hkv, d, bs = 4, 2, 32, 16
    spec = _spec(h, hkv, d, 40, 30.0)
    k_cache, v_cache, bt, qsl, sl = make_paged_batch(qlens, slens, hkv, d, bs, dtype)
    # slots of this step's tokens: the last query_len positions of each sequence
    slots = []
    for b, (ql, s) in enumerate(zip(qlens, slens)):
        pos = torch.arange(s - ql, s)
        slots.append(bt[b, pos // bs].long() * bs + pos % bs)
    slots = torch.cat(slots)
    slots[0] = -1  # one padding token: its k/v must not land anywhere
    meta = _meta(qlens, slens, bt, qsl, sl, slots)
    t = sum(qlens)
    q = torch.randn(t, h, d, dtype=dtype)
    k, v = torch.randn(t, hkv, d, dtype=dtype), torch.randn(t, hkv, d, dtype=dtype)
    cache = torch.stack((k_cache, v_cache))
    ref_cache = cache.clone()

    triton_backend = TritonAttentionBackend(torch.device("cpu"), dtype, bs)
    assert triton_backend.kv_cache_shape(10, hkv, d) == (2, 10, bs, hkv, d)
    got = triton_backend.forward(spec, q, k, v, cache, meta)
    want = TorchAttentionBackend(torch.device("cpu"), dtype, bs).forward(spec, q, k, v,
                                                                          ref_cache, meta)
    assert got.shape == (t, h * d)
    torch.testing.assert_close(cache, ref_cache, rtol=0, atol=0)
    torch.testing.assert_close(got, want, **TOL[dtype])
    # out= (piecewise graphs' static buffer): written in place and returned, same values
    for backend, exact in ((triton_backend, got), (TorchAttentionBackend(torch.device("cpu"),
                                                                           dtype, bs), want)):
        buf = torch.full((t + 3, h * d), float("nan"), dtype=dtype)
        res = backend.forward(spec, q, k, v, cache.clone(), meta, out=buf[:t])
        assert res.data_ptr() == buf.data_ptr() and buf[t:].isnan().all()
        torch.testing.assert_close(buf[:t], exact, rtol=0, atol=0)


@pytest.mark.parametrize("case", ["gqa", "window+softcap", "d80-window"])
def test_backend_padded_metadata_keeps_real_rows(case):
    """``varlen_in_graph``: a step fed as a whole-step graph feeds it, padded to a bucket (junk
    rows with slot -1, padding sequences that start at the step's token count, junk lengths and
    block-table rows, ``num_seqs`` and ``max_query_len`` as upper bounds), gives the plain
    step's outputs and cache; padding rows of ``out`` are left as they were."""
    h, hkv, d, bs, window, cap = ATTN_CASES[case]
    spec, dtype = _spec(h, hkv, d, window, cap), torch.float32
    qlens, slens = MIXED_QUERY_LENS, MIXED_SEQ_LENS
    k_cache, v_cache, bt, qsl, sl = make_paged_batch(qlens, slens, hkv, d, bs, dtype)
    slots = torch.cat([bt[b, torch.arange(s - q, s) // bs].long() * bs + torch.arange(s - q, s) % bs
                       for b, (q, s) in enumerate(zip(qlens, slens))])
    t, b, size, seqs = sum(qlens), len(qlens), 160, 10
    q = torch.randn(size, h, d, dtype=dtype)
    k, v = torch.randn(size, hkv, d, dtype=dtype), torch.randn(size, hkv, d, dtype=dtype)
    backend = TritonAttentionBackend(torch.device("cpu"), dtype, bs)
    assert backend.varlen_in_graph
    cache = torch.stack((k_cache, v_cache))
    want_cache = cache.clone()
    want = backend.forward(spec, q[:t], k[:t], v[:t], want_cache, _meta(qlens, slens, bt, qsl, sl,
                                                                          slots))
    pad_tables = torch.randint(0, bt.max().item() + 1, (seqs, bt.shape[1]), dtype=torch.int32)
    pad_tables[:b] = bt
    padded = AttentionMetadata(
        slot_mapping=torch.cat((slots, torch.full((size - t,), -1))),
        query_start_loc=torch.cat((qsl, torch.full((seqs - b,), t, dtype=torch.int32))),
        seq_lens=torch.cat((sl, torch.randint(0, 200, (seqs - b,), dtype=torch.int32))),
        block_tables=pad_tables, max_query_len=size, max_seq_len=bt.shape[1] * bs,
        num_seqs=seqs, is_decode=False)
    out = torch.full((size, h * d), 7.0, dtype=dtype)
    got = backend.forward(spec, q, k, v, cache, padded, out=out)
    assert got.data_ptr() == out.data_ptr()
    torch.testing.assert_close(got[:t], want, **TOL[dtype])
    assert (got[t:] == 7.0).all()
    torch.testing.assert_close(cache, want_cache, rtol=0, atol=0)
