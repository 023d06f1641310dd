"""A float8 (e4m3) KV cache: the write kernel stores the same bytes as the torch reference
(the interpreter's own float8 cast is worked around in _common.to_fp8), and the attention
kernels read it as the reference does."""
import dataclasses
import importlib

import pytest
import torch
import triton
import triton.language as tl
from triton_test_utils import TOL, make_paged_batch

from litevllm.plugin_api import AttentionSpec, TorchAttentionBackend, paged_attention_ref
from litevllm.plugin_api import torch_ops as ref
from litevllm_triton import kernels
from litevllm_triton.backend import TritonAttentionBackend
from litevllm_triton.kernels._common import fp8_words_to_f16

FP8 = torch.float8_e4m3fn
DTYPES = [torch.float32, torch.float16]
SCALES = [(1.0, 1.0), (0.37, 2.5)]


def _fp8_batch(qlens, slens, hkv, d, bs, k_scale, v_scale):
    """make_paged_batch's layout with float8 caches holding random k / k_scale, v / v_scale."""
    k_cache, v_cache, bt, qsl, sl = make_paged_batch(qlens, slens, hkv, d, bs, torch.float32)
    return (ref.quantize_kv(k_cache * 3, FP8, k_scale), ref.quantize_kv(v_cache, FP8, v_scale),
            bt, qsl, sl)


def _spec(h, hkv, d, k_scale, v_scale, window=None, cap=None):
    return AttentionSpec(h, hkv, d, scale=d ** -0.5, sliding_window=window, logit_softcap=cap,
                         k_scale=k_scale, v_scale=v_scale)


@pytest.mark.parametrize("k_scale,v_scale", SCALES)
def test_rotary_store_matches_the_write_kernel_bytes(k_scale, v_scale):
    """The rotary kernel's store into a float8 cache (q/k as [T, H, D] tensors, int32 slots):
    the bytes reshape_and_cache writes for the rotated k and the v."""
    t, h, hkv, d = 9, 4, 2, 32
    cos_sin = torch.cat((torch.rand(40, d // 2), torch.rand(40, d // 2)), -1)
    positions = torch.randint(0, 40, (t,))
    slots = torch.randperm(64)[:t].to(torch.int32)
    slots[4] = -1
    q, k, v = (torch.randn(t, n, d, dtype=torch.float16) * 20 for n in (h, hkv, hkv))
    caches = []
    for fused in (False, True):
        qq, kk = q.clone(), k.clone()
        cache = torch.zeros(2, 8, 8, hkv, d, dtype=FP8)
        if fused:
            kernels.rotary_embedding(positions, qq, kk, d, cos_sin, v=v, k_cache=cache[0],
                                     v_cache=cache[1], slot_mapping=slots, k_scale=k_scale,
                                     v_scale=v_scale)
        else:
            kernels.rotary_embedding(positions, qq, kk, d, cos_sin)
            kernels.reshape_and_cache(kk, v, cache[0], cache[1], slots, k_scale, v_scale)
        caches.append((qq, kk, cache.view(torch.uint8)))
    for got, want in zip(*caches):
        assert torch.equal(got, want)
    with pytest.raises(ValueError, match="need the cache arguments"):
        kernels.rotary_embedding(positions, q, k, d, cos_sin, k_scale=k_scale, v_scale=2.0)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k_scale,v_scale", SCALES)
def test_write_matches_reference_bytes(dtype, k_scale, v_scale):
    num_blocks, bs, hkv, d, t = 6, 8, 2, 32, 30
    key = torch.randn(t, hkv, d) * 40
    key[0, 0, :4] = torch.tensor([1e4, -1e4, 447.9 * k_scale, 3e-3 * k_scale])  # saturation
    key, value = key.to(dtype), (torch.randn(t, hkv, d) * 0.05).to(dtype)
    slots = torch.randperm(num_blocks * bs)[:t]
    slots[3] = -1  # padding
    cache = torch.zeros(2, num_blocks, bs, hkv, d, dtype=FP8)
    want = cache.clone()
    kernels.reshape_and_cache(key, value, cache[0], cache[1], slots, k_scale, v_scale)
    ref.reshape_and_cache(key, value, want[0], want[1], slots, k_scale, v_scale)
    assert torch.equal(cache.view(torch.uint8), want.view(torch.uint8))
    stored = cache[0].view(-1, hkv, d)[slots[0]].float() * k_scale
    assert stored[0, :4].tolist() == pytest.approx([448 * k_scale, -448 * k_scale,
                                                    448 * k_scale, 2 ** -8 * k_scale])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k_scale,v_scale", SCALES)
@pytest.mark.parametrize("case", [(4, 2, 32, 16, None, None), (6, 2, 48, 8, 24, 20.0)])
def test_prefill_reads_fp8_cache(dtype, k_scale, v_scale, case):
    h, hkv, d, bs, window, cap = case
    qlens, slens = [37, 1, 20, 5], [37, 50, 90, 133]
    k_cache, v_cache, bt, qsl, sl = _fp8_batch(qlens, slens, hkv, d, bs, k_scale, v_scale)
    spec = _spec(h, hkv, d, k_scale, v_scale, window, cap)
    q = torch.randn(sum(qlens), h, d, dtype=dtype)
    want = paged_attention_ref(q, k_cache, v_cache, bt, qlens, slens, spec)
    got = kernels.prefill_attention(q, k_cache, v_cache, bt, qsl, sl, max(qlens), spec.scale,
                                    window, cap, k_scale=k_scale, v_scale=v_scale)
    torch.testing.assert_close(got, want, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("k_scale,v_scale", SCALES)
@pytest.mark.parametrize("num_splits", [1, 4])
@pytest.mark.parametrize("hkv,d", [(1, 32), (2, 80)])  # 80: words past the head masked
def test_decode_reads_fp8_cache(dtype, k_scale, v_scale, num_splits, hkv, d):
    h, bs = 4, 16
    slens = [1, 17, 100, 250]
    k_cache, v_cache, bt, _, sl = _fp8_batch([1] * 4, slens, hkv, d, bs, k_scale, v_scale)
    spec = _spec(h, hkv, d, k_scale, v_scale)
    q = torch.randn(4, h, d, dtype=dtype)
    want = paged_attention_ref(q, k_cache, v_cache, bt, [1] * 4, slens, spec)
    got = kernels.decode_attention(q, k_cache, v_cache, bt, sl, spec.scale,
                                   num_splits=num_splits, k_scale=k_scale, v_scale=v_scale)
    torch.testing.assert_close(got, want, **TOL[dtype])


def test_decode_fp8_one_split_d64_tile_spans_several_tiles():
    """The one-split float8 tile at head dim 64 (BLOCK_N_SINGLE tokens): contexts over two of
    them, a ragged last tile."""
    da = importlib.import_module("litevllm_triton.kernels.decode_attention")  # the module
    assert da.BLOCK_N_SINGLE * 2 < 600
    h, hkv, d, bs, slens = 4, 2, 64, 16, [600, 257]
    k_cache, v_cache, bt, _, sl = _fp8_batch([1] * 2, slens, hkv, d, bs, 0.37, 2.5)
    spec = _spec(h, hkv, d, 0.37, 2.5)
    q = torch.randn(2, h, d, dtype=torch.float16)
    want = paged_attention_ref(q, k_cache, v_cache, bt, [1] * 2, slens, spec)
    got = kernels.decode_attention(q, k_cache, v_cache, bt, sl, spec.scale, num_splits=1,
                                   k_scale=0.37, v_scale=2.5)
    torch.testing.assert_close(got, want, **TOL[torch.float16])


def test_backend_matches_torch_backend_on_fp8_cache():
    """Chunked prefill then decodes through both backends with float8 caches: same bytes in
    the cache after every step, same outputs."""
    h, hkv, d, bs, dtype = 4, 2, 32, 8, torch.float16
    spec = dataclasses.replace(_spec(h, hkv, d, 0.5, 1.5), logit_softcap=30.0)
    ours = TritonAttentionBackend(torch.device("cpu"), dtype, bs, FP8)
    theirs = TorchAttentionBackend(torch.device("cpu"), dtype, bs, FP8)
    cache = ours.allocate_kv_cache(6, hkv, d)
    assert cache.dtype == FP8 and cache.shape == (2, 6, bs, hkv, d)
    ref_cache = theirs.allocate_kv_cache(6, hkv, d)
    bt = torch.randperm(6).to(torch.int32)[None, :4]
    for ql, s in [(12, 12), (9, 21), (1, 22), (1, 23)]:
        pos = torch.arange(s - ql, s)
        slots = bt[0, pos // bs].long() * bs + pos % bs
        meta = _meta(ql, s, bt, slots)
        q, k, v = (torch.randn(ql, n, d, dtype=dtype) * 4 for n in (h, hkv, hkv))
        got = ours.forward(spec, q, k, v, cache, meta)
        want = theirs.forward(spec, q, k, v, ref_cache, meta)
        assert torch.equal(cache.view(torch.uint8), ref_cache.view(torch.uint8))
        torch.testing.assert_close(got, want, **TOL[dtype])


def _meta(ql, s, bt, slots):
    from litevllm.plugin_api import AttentionMetadata
    return AttentionMetadata(slot_mapping=slots, query_start_loc=torch.tensor([0, ql], dtype=torch.int32),
                             seq_lens=torch.tensor([s], dtype=torch.int32), block_tables=bt,
                             max_query_len=ql, max_seq_len=s, num_seqs=1, is_decode=ql == 1,
                             query_lens_cpu=[ql], seq_lens_cpu=[s])


def test_fp8_input_errors():
    k_cache, v_cache, bt, _, sl = _fp8_batch([1], [5], 1, 16, 16, 1.0, 1.0)
    q = torch.randn(1, 2, 16)
    with pytest.raises(ValueError, match="positive"):
        kernels.decode_attention(q, k_cache, v_cache, bt, sl, 1.0, k_scale=0.0)
    bf_k, bf_v, *_ = make_paged_batch([1], [5], 1, 16, 16, torch.float32)
    with pytest.raises(ValueError, match="need a float8 cache"):
        kernels.decode_attention(q, bf_k, bf_v, bt, sl, 1.0, v_scale=2.0)
    with pytest.raises(ValueError, match="need a float8 cache"):
        kernels.reshape_and_cache(q[:, :1], q[:, :1], bf_k, bf_v, torch.zeros(1, dtype=torch.int64),
                                  2.0, 1.0)
    with pytest.raises(ValueError, match="share a dtype"):
        kernels.decode_attention(q, k_cache, bf_v, bt, sl, 1.0)


def test_engine_triton_fp8_matches_torch_fp8(tmp_path):
    """LLM(kernels="triton", kv_cache_dtype="fp8") in the interpreter against the torch
    reference engine with the same fp8 cache (float32, chunked prefill, prefix hits, decode):
    same greedy tokens and logprobs. Both write the same fp8 bytes for the same float32 K/V;
    float32 K/V differ between the two only in summation order (~1e-6)."""
    from litevllm import LLM, SamplingParams
    from litevllm.testing import build_checkpoint, logprob_rows, tiny_config
    config = tiny_config("LlamaForCausalLM")
    build_checkpoint("LlamaForCausalLM", config, tmp_path)
    vocab = config.vocab_size
    prompts = [list(range(3, 40)), list(range(3, 30)) + [7, 9], [5, 6]]
    outs = {}
    for kernels in ("triton", "torch"):
        llm = LLM(str(tmp_path), kernels=kernels, device="cpu", dtype="float32", block_size=8,
                  kv_cache_dtype="fp8", max_num_batched_tokens=16, max_model_len=128)
        assert llm.engine.kv_cache_dtype == FP8
        params = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True, logprobs=vocab)
        outs[kernels] = [o.outputs[0] for o in llm.generate(
            [{"prompt_token_ids": p} for p in prompts], params)]
        if kernels == "triton":
            assert llm.engine.kernels_in_use["attention"] == "triton"
    for got, want in zip(outs["triton"], outs["torch"]):
        assert got.token_ids == want.token_ids
        torch.testing.assert_close(logprob_rows(got.logprobs, vocab),
                                   logprob_rows(want.logprobs, vocab), atol=1e-4, rtol=1e-4)


@triton.jit
def _words_to_f16_kernel(w_ptr, out_ptr, N: tl.constexpr, D: tl.constexpr):
    rows, words = tl.arange(0, N), tl.arange(0, D // 4)
    w = tl.load(w_ptr + rows[:, None] * (D // 4) + words[None, :])
    cols = tl.arange(0, D)
    tl.store(out_ptr + rows[:, None] * D + cols[None, :], fp8_words_to_f16(w, N, D))


def test_fp8_words_to_f16_matches_torch_for_every_finite_byte():
    """The interpreter's bit conversion against torch's float8_e4m3fn -> float16 cast, bit for
    bit (signed zeros, subnormals, +-448), each finite byte at each of the four byte positions
    of an int32 word (rows are the 254 finite bytes rotated by 0..3; words with the sign bit
    of their top byte set are negative ints)."""
    finite = torch.tensor([b for b in range(256) if b & 0x7F != 0x7F], dtype=torch.uint8)
    assert finite.numel() == 254
    vals = torch.cat((finite, finite[:2]))  # 256 bytes: whole words
    raw = torch.stack([vals.roll(r) for r in range(4)])  # [4, 256]: every byte at every position
    want = raw.view(FP8).to(torch.float16)
    got = torch.empty(4, 256, dtype=torch.float16)
    _words_to_f16_kernel[(1,)](raw.view(torch.int32), got, N=4, D=256)
    assert torch.equal(got.view(torch.int16), want.view(torch.int16))


def test_fp8_cache_head_dim_must_be_a_multiple_of_4():
    k_cache, v_cache, bt, qsl, sl = _fp8_batch([1], [5], 1, 18, 16, 1.0, 1.0)
    q = torch.randn(1, 2, 18)
    with pytest.raises(ValueError, match="head_dim divisible by 4"):
        kernels.decode_attention(q, k_cache, v_cache, bt, sl, 1.0)
    with pytest.raises(ValueError, match="head_dim divisible by 4"):
        kernels.prefill_attention(q, k_cache, v_cache, bt, qsl, sl, 1, 1.0)


def test_fp8_words_to_f16_keeps_nan():
    """e4m3's NaN bytes (0x7F, 0xFF) give NaN, as the hardware conversion does, at every byte
    position: a NaN key must not read as a finite 480 in the interpreter."""
    raw = torch.tensor([0x7F, 0xFF, 0x38, 0xB8] * 4, dtype=torch.uint8).view(4, 4)
    raw = torch.stack([r.roll(i) for i, r in enumerate(raw)])
    got = torch.empty(4, 4, dtype=torch.float16)
    _words_to_f16_kernel[(1,)](raw.view(torch.int32), got, N=4, D=4)
    torch.testing.assert_close(got, raw.view(FP8).to(torch.float16), equal_nan=True)


def test_fp8_cache_without_hardware_support_names_the_ways_out(monkeypatch):
    """Outside the interpreter a CPU (or a GPU before sm_89) cannot run the float8 kernels: the
    backend refuses in one line and names both ways out."""
    from litevllm_triton.backend import TritonAttentionBackend
    from litevllm_triton.kernels import _common
    monkeypatch.setattr(_common, "INTERPRET", False)
    _common.fp8_supported.cache_clear()
    try:
        with pytest.raises(ValueError, match="kv_cache_dtype 'auto', or kernels 'torch'"):
            TritonAttentionBackend(torch.device("cpu"), torch.float32, 16, torch.float8_e4m3fn)
    finally:
        _common.fp8_supported.cache_clear()
