"""rms_norm, rotary_embedding, silu/gelu_tanh_and_mul against the torch references."""
import pytest
import torch
from triton_test_utils import TOL

from litevllm.plugin_api import torch_ops as ref
from litevllm_triton import kernels, ops

DTYPES = [torch.float32, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(5, 96), (2, 3, 64), (1, 1000)])
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_rms_norm(dtype, shape, with_residual, offset):
    x = torch.randn(shape, dtype=dtype)
    w = torch.randn(shape[-1], dtype=dtype)
    res = torch.randn(shape, dtype=dtype) if with_residual else None
    x0, res0 = x.clone(), None if res is None else res.clone()
    got = ops.rms_norm(x, w, 1e-5, res, offset)
    want = ref.rms_norm(x, w, 1e-5, res, offset)
    if with_residual:
        torch.testing.assert_close(got[0], want[0], **TOL[dtype])
        torch.testing.assert_close(got[1], want[1], **TOL[dtype])
        torch.testing.assert_close(res, res0, rtol=0, atol=0)  # inputs untouched
    else:
        torch.testing.assert_close(got, want, **TOL[dtype])
    torch.testing.assert_close(x, x0, rtol=0, atol=0)


def test_rms_norm_strided_rows_and_fp32_weight():
    x = torch.randn(6, 160, dtype=torch.float16)[:, :80]  # row stride 160
    w = torch.randn(80)
    torch.testing.assert_close(kernels.rms_norm(x, w, 1e-6), ref.rms_norm(x, w, 1e-6),
                               **TOL[torch.float16])


def test_rms_norm_rejects_bad_inputs():
    x = torch.randn(4, 32)
    with pytest.raises(ValueError, match="weight"):
        kernels.rms_norm(x, torch.randn(31), 1e-6)
    with pytest.raises(ValueError, match="residual"):
        kernels.rms_norm(x, torch.randn(32), 1e-6, residual=torch.randn(4, 32).half())
    with pytest.raises(ValueError, match="contiguous"):
        kernels.rms_norm(torch.randn(32, 4).t(), torch.randn(32), 1e-6)


def _cos_sin(max_pos, rot):
    inv = 1.0 / (10000 ** (torch.arange(0, rot, 2).float() / rot))
    f = torch.outer(torch.arange(max_pos).float(), inv)
    return torch.cat((f.cos(), f.sin()), -1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("is_neox", [True, False])
@pytest.mark.parametrize("head_dim,rot", [(32, 32), (64, 32), (16, 8)])
def test_rotary(dtype, is_neox, head_dim, rot):
    t, hq, hk = 7, 4, 2
    qkv = torch.randn(t, (hq + 2 * hk) * head_dim, dtype=dtype)
    q, k, _ = qkv.split([hq * head_dim, hk * head_dim, hk * head_dim], dim=-1)  # strided views
    positions = torch.randint(0, 100, (t,))
    cache = _cos_sin(100, rot)
    want_q, want_k = ref.rotary_embedding(positions, q, k, head_dim, cache, is_neox)
    got_q, got_k = ops.rotary_embedding(positions, q, k, head_dim, cache, is_neox)
    assert got_q.data_ptr() == q.data_ptr()  # in place
    torch.testing.assert_close(got_q, want_q, **TOL[dtype])
    torch.testing.assert_close(got_k, want_k, **TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("is_neox", [True, False])
@pytest.mark.parametrize("head_dim,rot", [(64, 64), (48, 16), (24, 24)])
@pytest.mark.parametrize("offset", [0.0, 1.0])
def test_rotary_with_per_head_norms(dtype, is_neox, head_dim, rot, offset):
    """q/k RMSNorm per head fused into the rotary op (Qwen3): the reference is rms_norm then
    rotary_embedding, the two ops in a row; strided q/k views are normalised in place."""
    t, hq, hk, eps = 7, 6, 2, 1e-6
    qkv = torch.randn(t, (hq + 2 * hk) * head_dim, dtype=dtype) * 3
    q, k, _ = qkv.split([hq * head_dim, hk * head_dim, hk * head_dim], dim=-1)
    qw, kw = torch.rand(head_dim, dtype=dtype) + 0.5, torch.rand(head_dim, dtype=dtype) - 0.5
    positions = torch.randint(0, 100, (t,))
    cache = _cos_sin(100, rot)
    nq = ref.rms_norm(q.reshape(t, hq, head_dim), qw, eps, offset=offset).reshape(t, -1)
    nk = ref.rms_norm(k.reshape(t, hk, head_dim), kw, eps, offset=offset).reshape(t, -1)
    want_q, want_k = ref.rotary_embedding(positions, nq, nk, head_dim, cache, is_neox)
    fused = ref.rotary_embedding(positions, q, k, head_dim, cache, is_neox, qw, kw, eps, offset)
    assert torch.equal(fused[0], want_q) and torch.equal(fused[1], want_k)
    v0 = qkv[:, (hq + hk) * head_dim:].clone()
    got_q, got_k = ops.rotary_embedding(positions, q, k, head_dim, cache, is_neox, qw, kw, eps,
                                        offset)
    assert got_q.data_ptr() == q.data_ptr()  # in place
    assert torch.equal(qkv[:, (hq + hk) * head_dim:], v0)  # v, next to k, untouched
    torch.testing.assert_close(got_q, want_q, **TOL[dtype])
    torch.testing.assert_close(got_k, want_k, **TOL[dtype])
    if dtype == torch.float16:  # the normed value is rounded to float16 before the rotation:
        # only float32 summation order may flip an element (unrounded: 10-30% of them differ)
        for got, want in ((got_q, want_q), (got_k, want_k)):
            assert (got != want).float().mean() < 0.02


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("is_neox", [True, False])
@pytest.mark.parametrize("head_dim,rot,norms", [(32, 32, False), (48, 16, False),
                                                (64, 64, True), (48, 16, True)])
def test_rotary_stores_kv(dtype, is_neox, head_dim, rot, norms):
    """The rotary kernel with cache arguments: q/k as the rotary op alone leaves them, the
    caches as reshape_and_cache of the rotated k and v (bit for bit), padding slots skipped."""
    t, hq, hk = 6, 4, 2
    qkv = torch.randn(t, (hq + 2 * hk) * head_dim, dtype=dtype)
    positions = torch.randint(0, 50, (t,))
    cache = _cos_sin(50, rot)
    slots = torch.tensor([3, 17, -1, 8, 30, 0])
    w = (torch.rand(head_dim, dtype=dtype) + 0.5, torch.rand(head_dim, dtype=dtype) - 0.5)
    extra = (*w, 1e-6, 0.0) if norms else ()
    caches = []
    for store in (False, True):
        x = qkv.clone()
        q, k, v = x.split([hq * head_dim, hk * head_dim, hk * head_dim], dim=-1)
        kc = torch.zeros(4, 8, hk, head_dim, dtype=dtype)
        vc = torch.zeros_like(kc)
        if store:
            kernels.rotary_embedding(positions, q, k, head_dim, cache, is_neox, *extra, v=v,
                                     k_cache=kc, v_cache=vc, slot_mapping=slots)
        else:
            kernels.rotary_embedding(positions, q, k, head_dim, cache, is_neox, *extra)
            kernels.reshape_and_cache(k.view(t, hk, head_dim), v.view(t, hk, head_dim), kc, vc,
                                      slots)
        caches.append((x, kc, vc))
    for got, want in zip(caches[1], caches[0]):
        assert torch.equal(got, want)
    written = caches[1][1].flatten(0, 1).abs().sum((1, 2)) > 0
    assert written.nonzero().flatten().tolist() == [0, 3, 8, 17, 30]  # slot -1: nothing
    q, k, v = qkv.split([hq * head_dim, hk * head_dim, hk * head_dim], dim=-1)
    rq, rk = ref.rotary_embedding(positions, q, k, head_dim, cache, is_neox, *extra)
    rkc, rvc = torch.zeros(4, 8, hk, head_dim, dtype=dtype), torch.zeros(4, 8, hk, head_dim,
                                                                         dtype=dtype)
    ref.rotary_embedding(positions, q, k, head_dim, cache, is_neox, *extra, v=v, k_cache=rkc,
                         v_cache=rvc, slot_mapping=slots)
    torch.testing.assert_close(caches[1][1], rkc, **TOL[dtype])
    assert torch.equal(caches[1][2], rvc)  # v is only copied


def test_rotary_store_errors():
    t, h, d = 3, 2, 16
    q, k, v = torch.randn(t, h * d), torch.randn(t, d), torch.randn(t, d)
    positions, cache = torch.arange(t), _cos_sin(8, d)
    kc = torch.zeros(2, 4, 1, d)
    for fn in (ref.rotary_embedding, kernels.rotary_embedding):
        with pytest.raises(ValueError, match="together"):
            fn(positions, q, k, d, cache, v=v, k_cache=kc, v_cache=kc)
    with pytest.raises(ValueError, match="slot_mapping has 2 entries"):
        kernels.rotary_embedding(positions, q, k, d, cache, v=v, k_cache=kc, v_cache=kc.clone(),
                                 slot_mapping=torch.arange(2))


def test_rotary_norm_errors():
    t, h, d = 3, 2, 16
    q, k, positions, cache = torch.randn(t, h * d), torch.randn(t, d), torch.arange(t), _cos_sin(8, d)
    w = torch.ones(d)
    for fn in (ref.rotary_embedding, kernels.rotary_embedding):
        with pytest.raises(ValueError, match="both q_norm and k_norm"):
            fn(positions, q, k, d, cache, True, w, None)
    with pytest.raises(ValueError, match="k_norm has 8 elements"):
        kernels.rotary_embedding(positions, q, k, d, cache, True, w, torch.ones(8))


def test_rotary_3d_and_errors():
    t, h, d = 5, 3, 32
    q, k = torch.randn(t, h, d), torch.randn(t, 1, d)
    positions = torch.arange(t)
    cache = _cos_sin(16, d)
    want_q, want_k = ref.rotary_embedding(positions, q.flatten(1), k.flatten(1), d, cache)
    kernels.rotary_embedding(positions, q, k, d, cache)
    torch.testing.assert_close(q.flatten(1), want_q, **TOL[torch.float32])
    torch.testing.assert_close(k.flatten(1), want_k, **TOL[torch.float32])
    with pytest.raises(ValueError, match="positions"):
        kernels.rotary_embedding(positions.float(), q, k, d, cache)
    with pytest.raises(ValueError, match="rot_dim"):
        kernels.rotary_embedding(positions, q, k, d, _cos_sin(16, 2 * d))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["silu_and_mul", "gelu_tanh_and_mul"])
@pytest.mark.parametrize("shape", [(7, 200), (2, 3, 64), (3, 2 * 1500)])
def test_act_and_mul(dtype, name, shape):
    x = torch.randn(shape, dtype=dtype) * 3
    got = getattr(ops, name)(x)
    want = getattr(ref, name)(x)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, **TOL[dtype])


def test_act_and_mul_rejects_odd_width():
    with pytest.raises(ValueError, match="even"):
        kernels.silu_and_mul(torch.randn(3, 7))


def test_host_pow2_and_cdiv_agree_with_triton():
    """The wrappers' plain-Python next_pow2 / cdiv (Triton's are constexpr functions, ~2 us a
    host call) give Triton's values."""
    import triton

    from litevllm_triton.kernels._common import cdiv, next_pow2
    for n in range(1, 5000):
        assert next_pow2(n) == triton.next_power_of_2(n)
        assert cdiv(n, 7) == triton.cdiv(n, 7) and cdiv(n, 128) == triton.cdiv(n, 128)
