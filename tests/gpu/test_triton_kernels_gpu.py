"""Triton kernels at real sizes on a CUDA GPU: bf16 and fp16 against the torch references,
float32 attention against the float32 torch reference (IEEE products, not TF32), and the norm and
activation kernels (and torch references) in bf16 against transformers' own modules."""
import pytest
import torch

from litevllm.attention.backend import AttentionSpec
from litevllm.attention.torch_backend import paged_attention_ref
from litevllm.ops import torch_ops as ref
from litevllm.testing import HF_ACTIVATIONS, assert_rms_norm_matches_hf, hf_act_and_mul

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

DTYPES = [torch.bfloat16, torch.float16]
REL_TOL = {torch.bfloat16: 1e-2, torch.float16: 2e-3}


def assert_rel_close(got, want, dtype):
    assert torch.isfinite(got).all(), "non-finite output (unwritten or overflowed elements)"
    err = ((got.float() - want.float()).norm() / want.float().norm()).item()
    assert err < REL_TOL[dtype], f"relative error {err:.2e} >= {REL_TOL[dtype]:.0e}"


def nan_like(x):
    return torch.full_like(x, float("nan"))


def paged_batch(query_lens, seq_lens, hkv, d, block_size, dtype, device="cuda"):
    """Random caches, shuffled block tables; returns caches, tables, query_start_loc, seq_lens."""
    need = [-(-s // block_size) for s in seq_lens]
    num_blocks = sum(need) + 8
    k_cache = torch.randn(num_blocks, block_size, hkv, d, dtype=dtype, device=device)
    v_cache = torch.randn_like(k_cache)
    ids = torch.randperm(num_blocks, device=device).to(torch.int32)
    bt = torch.zeros(len(seq_lens), max(need), dtype=torch.int32, device=device)
    pos = 0
    for b, n in enumerate(need):
        bt[b, :n] = ids[pos:pos + n]
        pos += n
    qsl = torch.zeros(len(query_lens) + 1, dtype=torch.int32, device=device)
    qsl[1:] = torch.tensor(query_lens, device=device).cumsum(0)
    sl = torch.tensor(seq_lens, dtype=torch.int32, device=device)
    return k_cache, v_cache, bt, qsl, sl


@pytest.mark.parametrize("dtype", DTYPES)
def test_decode_batch64_ctx4096(dtype):
    from litevllm_triton.kernels import decode_attention
    b, h, hkv, d, ctx = 64, 32, 8, 128, 4096
    seq_lens = [ctx - 37 * i for i in range(b)]  # ragged, mostly off the block grid
    k_cache, v_cache, bt, _, sl = paged_batch([1] * b, seq_lens, hkv, d, 16, dtype)
    q = torch.randn(b, h, d, dtype=dtype, device="cuda")
    spec = AttentionSpec(h, hkv, d, d ** -0.5)
    want = paged_attention_ref(q, k_cache, v_cache, bt, [1] * b, seq_lens, spec)
    got = decode_attention(q, k_cache, v_cache, bt, sl, spec.scale, out=nan_like(q))
    assert_rel_close(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_prefill_4096_causal_head128(dtype):
    from litevllm_triton.kernels import prefill_attention
    t, h, d = 4096, 32, 128
    k_cache, v_cache, bt, qsl, sl = paged_batch([t], [t], h, d, 16, dtype)
    q = torch.randn(t, h, d, dtype=dtype, device="cuda")
    spec = AttentionSpec(h, h, d, d ** -0.5)
    want = paged_attention_ref(q, k_cache, v_cache, bt, [t], [t], spec)
    got = prefill_attention(q, k_cache, v_cache, bt, qsl, sl, t, spec.scale, out=nan_like(q))
    assert_rel_close(got, want, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_head256_softcap_window_mixed_batch(dtype):
    """Gemma-2-like layer: chunked prefill after a prefix, a fresh prompt and decodes."""
    from litevllm_triton.kernels import decode_attention, prefill_attention
    h, hkv, d, window, cap = 16, 8, 256, 1024, 50.0
    query_lens, seq_lens = [512, 1, 1500, 1, 1], [3000, 2049, 1500, 700, 4096]
    k_cache, v_cache, bt, qsl, sl = paged_batch(query_lens, seq_lens, hkv, d, 16, dtype)
    spec = AttentionSpec(h, hkv, d, 224 ** -0.5, sliding_window=window, logit_softcap=cap)
    q = torch.randn(sum(query_lens), h, d, dtype=dtype, device="cuda")
    want = paged_attention_ref(q, k_cache, v_cache, bt, query_lens, seq_lens, spec)
    got = prefill_attention(q, k_cache, v_cache, bt, qsl, sl, max(query_lens), spec.scale,
                            window, cap, out=nan_like(q))
    assert_rel_close(got, want, dtype)
    # the same layer in a pure decode step
    dq = torch.randn(len(seq_lens), h, d, dtype=dtype, device="cuda")
    want = paged_attention_ref(dq, k_cache, v_cache, bt, [1] * len(seq_lens), seq_lens, spec)
    got = decode_attention(dq, k_cache, v_cache, bt, sl, spec.scale, window, cap,
                           out=nan_like(dq))
    assert_rel_close(got, want, dtype)


@pytest.mark.parametrize("b,ordered", [(8, False), (48, False), (48, True)])
def test_decode_cuda_graph_replay(b, ordered):
    """Capture once, then change seq_lens / block tables in place and replay; ``ordered``
    captures the backend's longest-first sort with the kernel, as the decode graphs do."""
    from litevllm_triton.kernels import decode_attention, decode_order
    dtype, h, hkv, d, max_ctx = torch.bfloat16, 16, 4, 128, 2048
    k_cache, v_cache, bt, _, sl = paged_batch([1] * b, [max_ctx] * b, hkv, d, 16, dtype)
    q = torch.randn(b, h, d, dtype=dtype, device="cuda")
    spec = AttentionSpec(h, hkv, d, d ** -0.5)

    def step():
        order = decode_order(sl) if ordered else None
        return decode_attention(q, k_cache, v_cache, bt, sl, spec.scale, order=order), order
    step()  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out, order = step()
    for step in range(3):
        seq_lens = torch.randint(1, max_ctx + 1, (b,)).tolist()
        sl.copy_(torch.tensor(seq_lens, dtype=torch.int32))
        bt.copy_(bt[torch.randperm(b, device="cuda")])
        q.copy_(torch.randn_like(q))
        graph.replay()
        want = paged_attention_ref(q, k_cache, v_cache, bt, [1] * b, seq_lens, spec)
        assert_rel_close(out, want, dtype)
        if ordered:  # the captured order kernel sorted this replay's lengths
            assert torch.equal(order, torch.sort(sl, descending=True, stable=True).indices.int())


@pytest.mark.parametrize("dtype", DTYPES)
def test_elementwise_ops(dtype):
    from litevllm_triton import ops
    t, hidden, inter = 4096, 4096, 14336
    x = torch.randn(t, hidden, dtype=dtype, device="cuda")
    res = torch.randn_like(x)
    w = torch.randn(hidden, dtype=dtype, device="cuda")
    for got, want in zip(ops.rms_norm(x, w, 1e-6, res, 1.0), ref.rms_norm(x, w, 1e-6, res, 1.0)):
        assert_rel_close(got, want, dtype)
    assert_rel_close(ops.rms_norm(x, w, 1e-6), ref.rms_norm(x, w, 1e-6), dtype)
    g = torch.randn(t, 2 * inter, dtype=dtype, device="cuda")
    assert_rel_close(ops.silu_and_mul(g), ref.silu_and_mul(g), dtype)
    assert_rel_close(ops.gelu_tanh_and_mul(g), ref.gelu_tanh_and_mul(g), dtype)

    hq, hk, d = 32, 8, 128
    qkv = torch.randn(t, (hq + 2 * hk) * d, dtype=dtype, device="cuda")
    q, k, _ = qkv.split([hq * d, hk * d, hk * d], dim=-1)
    positions = torch.randint(0, 8192, (t,), device="cuda")
    inv = 1.0 / (500000 ** (torch.arange(0, d, 2, device="cuda").float() / d))
    freqs = torch.outer(torch.arange(8192, device="cuda").float(), inv)
    cache = torch.cat((freqs.cos(), freqs.sin()), -1)
    for neox in (True, False):
        want_q, want_k = ref.rotary_embedding(positions, q, k, d, cache, neox)
        q2, k2, _ = qkv.clone().split([hq * d, hk * d, hk * d], dim=-1)  # strided views
        got_q, got_k = ops.rotary_embedding(positions, q2, k2, d, cache, neox)
        assert_rel_close(got_q, want_q, dtype)
        assert_rel_close(got_k, want_k, dtype)
    # with Qwen3's q/k RMSNorm per head fused in (reference: the two ops in a row)
    qw, kw = torch.rand(d, dtype=dtype, device="cuda") + 0.5, torch.rand(d, dtype=dtype, device="cuda")
    want_q, want_k = ref.rotary_embedding(positions, q, k, d, cache, True, qw, kw, 1e-6)
    q2, k2, _ = qkv.clone().split([hq * d, hk * d, hk * d], dim=-1)
    got_q, got_k = ops.rotary_embedding(positions, q2, k2, d, cache, True, qw, kw, 1e-6)
    assert_rel_close(got_q, want_q, dtype)
    assert_rel_close(got_k, want_k, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reshape_and_cache(dtype):
    from litevllm_triton import ops
    t, hkv, d, bs, nblocks = 4096, 8, 128, 16, 600
    key = torch.randn(t, hkv, d, dtype=dtype, device="cuda")
    value = torch.randn_like(key)
    slots = torch.randperm(nblocks * bs, device="cuda")[:t]
    slots[::7] = -1
    cache = torch.randn(2, nblocks, bs, hkv, d, dtype=dtype, device="cuda")
    want = cache.clone()
    ref.reshape_and_cache(key, value, want[0], want[1], slots)
    ops.reshape_and_cache(key, value, cache[0], cache[1], slots)
    assert torch.equal(cache, want)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("norms", [False, True])
def test_rotary_store_equals_rotary_then_reshape_and_cache(dtype, norms):
    """The rotary kernel that also stores k/v (a barrier between the in-place rotation and the
    read-back of k): the same q, k and cache bytes as the two kernels in a row, at 4,096 tokens
    of a fused qkv (Qwen3-like: 16 q heads, 8 kv heads, head dim 128, optional q/k norms)."""
    from litevllm_triton import ops
    t, hq, hkv, d, bs, nblocks = 4096, 16, 8, 128, 16, 600
    qkv = torch.randn(t, (hq + 2 * hkv) * d, dtype=dtype, device="cuda")
    positions = torch.randint(0, 4096, (t,), device="cuda")
    inv = 1.0 / (10000 ** (torch.arange(0, d, 2, device="cuda").float() / d))
    f = torch.outer(torch.arange(4096, device="cuda").float(), inv)
    cos_sin = torch.cat((f.cos(), f.sin()), -1)
    w = (torch.rand(d, dtype=dtype, device="cuda") + 0.5,
         torch.rand(d, dtype=dtype, device="cuda") - 0.5)
    extra = (*w, 1e-6, 0.0) if norms else ()
    slots = torch.randperm(nblocks * bs, device="cuda")[:t]
    slots[::7] = -1
    base = torch.randn(2, nblocks, bs, hkv, d, dtype=dtype, device="cuda")
    out = []
    for fused in (False, True):
        x, cache = qkv.clone(), base.clone()
        q, k, v = x.split([hq * d, hkv * d, hkv * d], dim=-1)
        if fused:
            ops.rotary_embedding(positions, q, k, d, cos_sin, True, *extra, v=v,
                                 k_cache=cache[0], v_cache=cache[1], slot_mapping=slots)
        else:
            ops.rotary_embedding(positions, q, k, d, cos_sin, True, *extra)
            ops.reshape_and_cache(k.view(t, hkv, d), v.view(t, hkv, d), cache[0], cache[1],
                                  slots)
        out.append((x, cache))
    assert torch.equal(out[1][0], out[0][0]) and torch.equal(out[1][1], out[0][1])


def test_positions_and_slots_match_the_reference(monkeypatch):
    """The rows of a 2,048-token step (a prompt, chunks and 255 decode rows, padded as a
    whole-step graph pads it) equal the torch reference's, and one compiled variant serves
    every step size."""
    from triton.runtime.jit import JITFunction

    from litevllm_triton import ops
    compiled, do_compile = [], JITFunction._do_compile

    def counting(fn, *args, **kwargs):
        compiled.append(fn.fn.__name__)
        return do_compile(fn, *args, **kwargs)
    g = torch.Generator().manual_seed(0)
    counts = [1500, 200, 93] + [1] * 255
    starts = [0, 700] + torch.randint(0, 3000, (256,), generator=g).tolist()
    qsl = torch.tensor([sum(counts[:i]) for i in range(len(counts) + 1)] + [2048] * 5,
                       dtype=torch.int32, device="cuda")
    lens = torch.tensor([s + c for s, c in zip(starts, counts)] + [9999] * 5, dtype=torch.int32,
                        device="cuda")
    tables = torch.randint(0, 100000, (len(counts) + 5, 256), dtype=torch.int32, device="cuda")
    for i, rows in enumerate((2048, 2100, 16)):
        if i == 1:  # the first size may compile (a fresh process); no other may
            monkeypatch.setattr(JITFunction, "_do_compile", counting)
        got, want = [], []
        for out, fn in ((want, ref.positions_and_slots), (got, ops.positions_and_slots)):
            pos, slots = (torch.empty(rows, dtype=torch.int64, device="cuda") for _ in range(2))
            fn(qsl[:len(counts) + 6] if rows > 16 else qsl[:2], lens if rows > 16 else lens[:1],
               tables if rows > 16 else tables[:1], 16, pos, slots)
            out += [pos, slots]
        assert all(torch.equal(a, b) for a, b in zip(want, got))
    assert compiled == []


def prefill_vs_ref(query_lens, seq_lens, h, hkv, d, dtype):
    """Prefill of a random paged batch through the kernel and the torch reference:
    ``(got, want, batch)``; ``batch`` goes on to :func:`decode_vs_ref`."""
    from litevllm_triton.kernels import prefill_attention
    k_cache, v_cache, bt, qsl, sl = paged_batch(query_lens, seq_lens, hkv, d, 16, dtype)
    spec = AttentionSpec(h, hkv, d, d ** -0.5)
    q = torch.randn(sum(query_lens), h, d, dtype=dtype, device="cuda")
    want = paged_attention_ref(q, k_cache, v_cache, bt, query_lens, seq_lens, spec)
    got = prefill_attention(q, k_cache, v_cache, bt, qsl, sl, max(query_lens), spec.scale,
                            out=nan_like(q))
    return got, want, (k_cache, v_cache, bt, sl, seq_lens, spec)


def decode_vs_ref(batch, dtype, splits=(None,)):
    """One decode step over ``batch`` with the same random queries for each ``num_splits``:
    ``(want, [got per split])``."""
    from litevllm_triton.kernels import decode_attention
    k_cache, v_cache, bt, sl, seq_lens, spec = batch
    dq = torch.randn(len(seq_lens), spec.num_heads, spec.head_dim, dtype=dtype, device="cuda")
    want = paged_attention_ref(dq, k_cache, v_cache, bt, [1] * len(seq_lens), seq_lens, spec)
    return want, [decode_attention(dq, k_cache, v_cache, bt, sl, spec.scale, out=nan_like(dq),
                                   num_splits=n) for n in splits]


@pytest.mark.parametrize("d", [48, 80, 96, 112, 64])
def test_head_dims_off_the_power_of_2_grid(d):
    """Head dims padded to the next power of 2 inside the kernels: a mixed batch (chunk after a
    prefix, a fresh prompt, decodes) through prefill, then a decode step with and without
    splits, bf16, against the torch reference."""
    dtype = torch.bfloat16
    got, want, batch = prefill_vs_ref([300, 1, 700, 1], [1000, 513, 700, 2048], 16, 4, d, dtype)
    assert_rel_close(got, want, dtype)
    want, gots = decode_vs_ref(batch, dtype, splits=(None, 1))
    for got in gots:
        assert_rel_close(got, want, dtype)


@pytest.mark.parametrize("head_dim", [64, 128, 256])
def test_float32_attention_is_ieee(head_dim):
    """float32 prefill and decode within 1e-5 of the torch reference (IEEE float32 matmuls):
    TF32 products (10-bit mantissa) would be ~1e-3 off."""
    assert torch.get_float32_matmul_precision() == "highest"
    got, want, batch = prefill_vs_ref([300, 1, 77], [300, 513, 200], 8, 2, head_dim,
                                      torch.float32)
    err = ((got - want).norm() / want.norm()).item()
    assert err < 1e-5, f"float32 prefill relative error {err:.2e}"
    want, (got,) = decode_vs_ref(batch, torch.float32)
    err = ((got - want).norm() / want.norm()).item()
    assert err < 1e-5, f"float32 decode relative error {err:.2e}"


# bf16 against transformers: it rounds the normalized value (Llama) or the activation before
# the multiply, the ops round once; three roundings of u = 2^-8 bound the difference
BF16_RTOL = 3 * 2.0 ** -8


@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize("eps", [1e-6, 1e-5])
@pytest.mark.parametrize("offset", [0.0, 1.0], ids=["llama", "gemma"])
@pytest.mark.parametrize("residual", [False, True])
def test_rms_norm_bf16_matches_transformers(impl, eps, offset, residual):
    from litevllm_triton import ops
    rms_norm = ops.rms_norm if impl == "triton" else ref.rms_norm
    assert_rms_norm_matches_hf(rms_norm, 4096, eps, offset, residual, torch.bfloat16, "cuda",
                               rtol=BF16_RTOL)


@pytest.mark.parametrize("impl", ["triton", "torch"])
@pytest.mark.parametrize("op", sorted(HF_ACTIVATIONS))
@pytest.mark.parametrize("scale", [1e-3, 1.0, 4.0])
def test_act_and_mul_bf16_matches_transformers(impl, op, scale):
    from litevllm_triton import ops
    fn = getattr(ops if impl == "triton" else ref, op)
    x = (torch.randn(64, 2 * 4096, device="cuda") * scale).to(torch.bfloat16)
    got, want = fn(x), hf_act_and_mul(op, x)
    # atol: far in the negative tail gelu_tanh is a cancellation, tiny next to the row maxima
    torch.testing.assert_close(got, want, rtol=BF16_RTOL, atol=1e-5 * want.abs().max().item())


def test_one_compiled_variant_serves_every_batch_shape(monkeypatch):
    """The sequence count and the block-table width change from step to step: the attention
    kernels do not specialise on them (Triton's == 1 and % 16 variants), so serving never
    stops to compile for a new batch shape. The results still match the reference."""
    from triton.runtime.jit import JITFunction
    compiled, do_compile = [], JITFunction._do_compile

    def counting(fn, *args, **kwargs):
        compiled.append(fn.fn.__name__)
        return do_compile(fn, *args, **kwargs)
    monkeypatch.setattr(JITFunction, "_do_compile", counting)
    dtype = torch.bfloat16
    # group 8 and >= 8 query rows keep the prefill tile (BLOCK_M 64) the same in every case
    shapes = [([16], [16]), ([64, 48], [64, 80]), ([32] * 16, [256] * 16),
              ([17, 40, 33], [17, 90, 300])]
    for i, (query_lens, seq_lens) in enumerate(shapes):
        got, want, batch = prefill_vs_ref(query_lens, seq_lens, 32, 4, 64, dtype)
        assert_rel_close(got, want, dtype)
        want, (got,) = decode_vs_ref(batch, dtype, splits=(2,))
        assert_rel_close(got, want, dtype)
        if i == 0:
            compiled.clear()  # the first shape may compile (a fresh process)
    assert compiled == []
