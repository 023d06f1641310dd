"""Reference implementations of the named ops in plain torch.

These define the semantics every kernel plugin must match. They run on any device.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float,
             residual: torch.Tensor | None = None, offset: float = 0.0):
    """RMSNorm over the last dim, scaled by ``offset + weight``.

    With ``residual``: ``x = x + residual`` first, and returns ``(normed, x)`` where the second
    item is the new residual stream. Without: returns ``normed``. Math runs in float32.
    """
    if residual is not None:
        x = x + residual
        residual = x
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    out = (xf * (offset + weight.float())).to(x.dtype)
    return out if residual is None else (out, residual)


def check_rotary_store(v, k_cache, v_cache, slot_mapping, k_scale: float, v_scale: float) -> None:
    """The cache arguments of ``rotary_embedding`` come together or not at all; scales only
    with them."""
    store = (v, k_cache, v_cache, slot_mapping)
    if any(x is None for x in store) and any(x is not None for x in store):
        raise ValueError("give v, k_cache, v_cache and slot_mapping together, or none")
    if v is None and (k_scale, v_scale) != (1.0, 1.0):
        raise ValueError("k_scale / v_scale need the cache arguments")


def rotary_embedding(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, head_dim: int,
                     cos_sin_cache: torch.Tensor, is_neox: bool = True,
                     q_norm: torch.Tensor | None = None, k_norm: torch.Tensor | None = None,
                     norm_eps: float = 1e-6, norm_offset: float = 0.0,
                     v: torch.Tensor | None = None, k_cache: torch.Tensor | None = None,
                     v_cache: torch.Tensor | None = None,
                     slot_mapping: torch.Tensor | None = None,
                     k_scale: float = 1.0, v_scale: float = 1.0):
    """Rotate q [T, Hq*D] and k [T, Hk*D] by position.

    ``cos_sin_cache`` is [max_pos, rot_dim] float32: cos in the first half, sin in the second.
    ``rot_dim <= head_dim``; the rest of each head passes through. Returns (q, k); kernel
    implementations may rotate in place, so callers must use the returned tensors.
    ``q_norm`` / ``k_norm`` ([head_dim] weights, both or neither): ``rms_norm`` of each head
    first (``norm_eps``, ``norm_offset``), rounded to q's dtype as that op's output is
    (Qwen3's q/k norm).
    With ``v`` [T, Hk*D], the caches and ``slot_mapping`` (API 1.5), the rotated k and v are
    then stored as :func:`reshape_and_cache` stores them (one kernel on the GPU).
    """
    if (q_norm is None) != (k_norm is None):
        raise ValueError("give both q_norm and k_norm, or neither")
    check_rotary_store(v, k_cache, v_cache, slot_mapping, k_scale, v_scale)
    rot = cos_sin_cache.shape[1]
    cs = cos_sin_cache.index_select(0, positions)
    cos, sin = cs.chunk(2, dim=-1)  # [T, rot/2]

    def apply(x, norm):
        t = x.shape[0]
        x = x.view(t, -1, head_dim)
        if norm is not None:
            x = rms_norm(x, norm, norm_eps, offset=norm_offset)
        xr = x[..., :rot].float()
        c, s = cos[:, None, :], sin[:, None, :]
        if is_neox:
            x1, x2 = xr.chunk(2, dim=-1)
            o = torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)
        else:
            x1, x2 = xr[..., 0::2], xr[..., 1::2]
            o = torch.stack((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1).flatten(-2)
        out = torch.cat((o.to(x.dtype), x[..., rot:]), dim=-1) if rot < head_dim else o.to(x.dtype)
        return out.reshape(t, -1)

    q, k = apply(q, q_norm), apply(k, k_norm)
    if v is not None:
        t = k.shape[0]
        reshape_and_cache(k.view(t, -1, head_dim), v.reshape(t, -1, head_dim), k_cache, v_cache,
                          slot_mapping, k_scale, v_scale)
    return q, k


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x [..., 2I] -> silu(x[..., :I]) * x[..., I:]."""
    a, b = x.chunk(2, dim=-1)
    return F.silu(a) * b


def gelu_tanh_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x [..., 2I] -> gelu_tanh(x[..., :I]) * x[..., I:]."""
    a, b = x.chunk(2, dim=-1)
    return F.gelu(a, approximate="tanh") * b


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None):
    """x [..., K] @ weight [N, K]^T + bias: the unquantized linear layers and ``lm_head``."""
    return F.linear(x, weight, bias)


def gated_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                 activation: str) -> torch.Tensor:
    """The gated MLP's first half: ``<activation>_and_mul(linear(x, weight, bias))``, with
    ``weight`` [2I, K] stacking gate rows over up rows; ``activation`` is a
    ``canonical_activation`` name ("silu" or "gelu_tanh"). Gate and up round to x's dtype
    before the activation, as the unfused ops do."""
    act = {"silu": silu_and_mul, "gelu_tanh": gelu_tanh_and_mul}[activation]
    return act(F.linear(x, weight, bias))


# KV-cache dtypes stored quantized: x / scale, saturated to the dtype's range (per-tensor scales)
FP8_KV_DTYPES = (torch.float8_e4m3fn,)


def check_kv_scales(cache_dtype: torch.dtype, k_scale: float, v_scale: float) -> None:
    """Scales other than 1.0 only go with a float8 cache; scales are positive."""
    if not (k_scale > 0 and v_scale > 0):
        raise ValueError(f"KV scales must be positive, got k_scale={k_scale}, v_scale={v_scale}")
    if cache_dtype not in FP8_KV_DTYPES and (k_scale != 1.0 or v_scale != 1.0):
        raise ValueError(f"KV scales other than 1.0 need a float8 cache, not {cache_dtype}")


def quantize_kv(x: torch.Tensor, cache_dtype: torch.dtype, scale: float) -> torch.Tensor:
    """``x`` as a cache of ``cache_dtype`` stores it: float8 holds ``x / scale`` (in float32)
    saturated to +-max (448 for e4m3), rounded to nearest; other dtypes a plain cast."""
    if cache_dtype not in FP8_KV_DTYPES:
        return x.to(cache_dtype)
    top = torch.finfo(cache_dtype).max
    return (x.float() / scale).clamp(-top, top).to(cache_dtype)


def _raw(t: torch.Tensor) -> torch.Tensor:
    """1-byte float caches as uint8 (torch indexes float8 on few devices); others as they are."""
    return t.view(torch.uint8) if t.dtype in FP8_KV_DTYPES else t


def gather_kv(cache: torch.Tensor, index: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    """``cache[index]`` in float32, dequantized (times ``scale``) for a float8 cache."""
    out = _raw(cache)[index].view(cache.dtype).float()
    return out * scale if cache.dtype in FP8_KV_DTYPES else out


def reshape_and_cache(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor,
                      v_cache: torch.Tensor, slot_mapping: torch.Tensor,
                      k_scale: float = 1.0, v_scale: float = 1.0) -> None:
    """Write key/value [T, Hkv, D] into caches [num_blocks, block_size, Hkv, D] at flat slots,
    quantized for float8 caches (:func:`quantize_kv`; ``k_scale``/``v_scale`` must be 1.0
    otherwise).

    Slots < 0 are skipped (padding).
    """
    check_kv_scales(k_cache.dtype, k_scale, v_scale)
    keep = slot_mapping >= 0
    if not bool(keep.all()):
        key, value, slot_mapping = key[keep], value[keep], slot_mapping[keep]
    for x, cache, scale in ((key, k_cache, k_scale), (value, v_cache, v_scale)):
        rows = _raw(cache.view(-1, *cache.shape[2:]))
        rows.index_copy_(0, slot_mapping, _raw(quantize_kv(x, cache.dtype, scale)))


def positions_and_slots(query_start_loc: torch.Tensor, seq_lens: torch.Tensor,
                        block_tables: torch.Tensor, block_size: int, positions: torch.Tensor,
                        slots: torch.Tensor) -> None:
    """Fill ``positions`` and ``slots`` ([T] int64) for a step's rows from its metadata (no
    host sync, so CUDA graphs can hold it): row t of sequence b (``query_start_loc[b] <= t <
    query_start_loc[b+1]``, int32 [B+1]) sits at position ``seq_lens[b] -
    query_start_loc[b+1] + t`` and writes cache slot ``block_tables[b, pos // block_size] *
    block_size + pos % block_size`` (int32 [B, W]). Rows past ``query_start_loc[B]`` (padding)
    get position 0 and slot -1."""
    t = torch.arange(positions.shape[0], dtype=query_start_loc.dtype,
                     device=query_start_loc.device)
    ends = query_start_loc[1:]
    if ends.numel() == 0:
        positions.zero_()
        slots.fill_(-1)
        return
    owner = torch.searchsorted(ends, t, right=True)
    valid = owner < ends.shape[0]
    owner = owner.clamp_(max=ends.shape[0] - 1)
    pos = torch.where(valid, seq_lens[owner] - ends[owner] + t, 0).long()
    slot = block_tables[owner, pos // block_size].long() * block_size + pos % block_size
    positions.copy_(pos)
    slots.copy_(torch.where(valid, slot, -1))


def moe_route(router_logits: torch.Tensor, top_k: int, renormalize: bool,
              scoring: str = "softmax"):
    """Softmax router: returns (weights [T, k] float32, expert ids [T, k] int64)."""
    probs = torch.softmax(router_logits.float(), dim=-1) if scoring == "softmax" \
        else torch.sigmoid(router_logits.float())
    w, ids = torch.topk(probs, top_k, dim=-1)
    if renormalize:
        w = w / w.sum(-1, keepdim=True)
    return w, ids


def add_shared_expert(out: torch.Tensor, shared: torch.Tensor | None,
                      shared_gate: torch.Tensor | None) -> torch.Tensor:
    """``out + sigmoid(shared_gate) * shared`` (a gated shared expert, as Qwen2-MoE's), rounded
    as transformers rounds it; ``shared_gate`` None adds ``shared`` ungated."""
    if shared is None:
        return out
    if shared_gate is not None:
        shared = torch.sigmoid(shared_gate) * shared
    return out + shared


def add_shared_slots(weights: torch.Tensor, ids: torch.Tensor, router_logits: torch.Tensor,
                     num_routed: int, shared_experts: int):
    """Top-k ``(weights, ids)`` with the shared experts ``num_routed ..`` appended, which every
    token takes: weighted by ``sigmoid(router_logits[:, num_routed])`` where that gate column
    exists, else by 1."""
    t, col = ids.shape[0], shared_gate_column(router_logits, num_routed)
    gate = torch.ones(t, 1, dtype=torch.float32, device=ids.device) if col is None \
        else torch.sigmoid(col.float())
    sid = torch.arange(num_routed, num_routed + shared_experts, device=ids.device)
    return (torch.cat([weights, gate.expand(t, shared_experts)], 1),
            torch.cat([ids, sid.to(ids.dtype).expand(t, shared_experts)], 1))


def shared_gate_column(router_logits: torch.Tensor, num_routed: int) -> torch.Tensor | None:
    """Folded shared experts' gate logit [T, 1]: the column after the routed experts' logits,
    where there is one (else the shared experts are ungated)."""
    if router_logits.shape[1] > num_routed:
        return router_logits[:, num_routed:num_routed + 1]
    return None


def check_moe_logits(router_logits: torch.Tensor, t: int, e: int, shared_experts: int,
                     top_k: int) -> int:
    """The routed expert count for ``e`` experts of which ``shared_experts`` are shared;
    ValueError unless ``router_logits`` is [T, E] (no shared experts), or [T, routed] or
    [T, routed + 1] (the shared experts' sigmoid gate), and ``top_k`` is in [1, routed]."""
    routed = e - shared_experts
    if not 0 <= shared_experts < e:
        raise ValueError(f"shared_experts must be in [0, {e}), got {shared_experts!r}")
    cols = (routed, routed + 1) if shared_experts else (e,)
    if router_logits.shape[0] != t or router_logits.shape[1] not in cols:
        raise ValueError(f"router_logits must be [T={t}, {' or '.join(map(str, cols))}], got "
                         f"{tuple(router_logits.shape)}")
    if not (isinstance(top_k, int) and 0 < top_k <= routed):
        raise ValueError(f"top_k must be in [1, {routed}], got {top_k!r}")
    return routed


def fused_moe(hidden: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
              router_logits: torch.Tensor, top_k: int, renormalize: bool,
              activation: str = "silu", shared: torch.Tensor | None = None,
              shared_gate: torch.Tensor | None = None, shared_experts: int = 0) -> torch.Tensor:
    """Sparse MoE: hidden [T, H], w13 [E, 2I, H], w2 [E, H, I], router_logits [T, E] -> [T, H].

    Tokens are grouped by expert with one sort; each expert runs one matmul on its rows.
    ``shared`` [T, H] (a shared expert's output), gated by ``sigmoid(shared_gate [T, 1])``
    when given, is added to the result (``add_shared_expert``). ``shared_experts`` S: the last
    S experts are a shared expert split by intermediate columns, which every token takes
    (``add_shared_slots``); softmax top-k routes over the other E - S, and router_logits is
    [T, E - S], or [T, E - S + 1] with the shared experts' gate logit last.
    """
    t, h = hidden.shape
    routed = check_moe_logits(router_logits, t, w13.shape[0], shared_experts, top_k)
    weights, ids = moe_route(router_logits[:, :routed], top_k, renormalize)
    if shared_experts:
        weights, ids = add_shared_slots(weights, ids, router_logits, routed, shared_experts)
        top_k += shared_experts
    flat_ids = ids.flatten()
    order = torch.argsort(flat_ids, stable=True)
    token_of = order // top_k
    counts = torch.bincount(flat_ids, minlength=w13.shape[0]).tolist()
    x = hidden.index_select(0, token_of)
    out = torch.empty(t * top_k, h, dtype=hidden.dtype, device=hidden.device)
    from litevllm.model.layers import canonical_activation
    act = {"silu": silu_and_mul, "gelu_tanh": gelu_tanh_and_mul}[canonical_activation(activation)]
    start = 0
    for e, n in enumerate(counts):
        if n == 0:
            continue
        xe = x[start:start + n]
        out[start:start + n] = act(xe @ w13[e].t()) @ w2[e].t()
        start += n
    scaled = out.float() * weights.flatten()[order, None]
    result = torch.zeros(t, h, dtype=torch.float32, device=hidden.device)
    result.index_add_(0, token_of, scaled)
    return add_shared_expert(result.to(hidden.dtype), shared, shared_gate)


# sampling ---------------------------------------------------------------------------------

_M32 = 0xFFFFFFFF


def _fmix32(x: torch.Tensor) -> torch.Tensor:
    """murmur3's finalizer on int64 tensors holding 32-bit values (products wrap mod 2**64)."""
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & _M32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & _M32
    return x ^ (x >> 16)


def _i32(c: int) -> int:
    """A 32-bit constant as the int32 with the same bits."""
    return c - (1 << 32) if c >= 1 << 31 else c


def _shr(x: torch.Tensor, r: int) -> torch.Tensor:
    """Logical right shift of int32 bit patterns."""
    return (x >> r) & ((1 << (32 - r)) - 1)


def _fmix32_i32(x: torch.Tensor) -> torch.Tensor:
    """``_fmix32`` on int32 bit patterns (products wrap mod 2**32): the same bits, half the
    memory traffic on [B, V] tensors."""
    x = x ^ _shr(x, 16)
    x = x * _i32(0x85EBCA6B)
    x = x ^ _shr(x, 13)
    x = x * _i32(0xC2B2AE35)
    return x ^ _shr(x, 16)


def uniform_noise(seeds: torch.Tensor, steps: torch.Tensor, vocab: int) -> torch.Tensor:
    """[B, V] uniforms in (0, 1) from per-row seeds and steps (the row hash in int64, the
    [B, V] part in int32 bit patterns)."""
    row = _fmix32((_fmix32(seeds & _M32) ^ (seeds >> 32) ^ (steps * 0x9E3779B1)) & _M32)
    row = torch.where(row >= 1 << 31, row - (1 << 32), row).to(torch.int32)[:, None]
    cols = torch.arange(vocab, device=seeds.device, dtype=torch.int32)
    x = _fmix32_i32(cols[None, :] * _i32(0x27D4EB2F) + row)
    x = _fmix32_i32(x ^ row)
    # 23 bits: every (n + 0.5) / 2**23 is exact, so u < 1 (24 bits rounded n = 2**24 - 1 to 1.0:
    # an infinite Gumbel score, NaN on a filtered token)
    return (_shr(x, 9).to(torch.float32) + 0.5) * (1.0 / (1 << 23))


def filter_logits(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor,
                  min_p: torch.Tensor) -> torch.Tensor:
    """Mask with -inf the tokens outside the kept set. Every test is on values, so tied tokens
    share a fate: top-k keeps the tokens at or above the k-th largest logit (``top_k`` in
    [1, V]); top-p then keeps a token when the probability mass, within the top k, of the tokens
    strictly above it is at most ``top_p``; min-p keeps a token when ``logit - max >=
    log(min_p)``. The most likely tokens always stay."""
    v = logits.shape[-1]
    desc = logits.sort(dim=-1, descending=True).values
    top = desc[:, :1]
    kth = desc.gather(1, (top_k.clamp(1, v) - 1)[:, None])
    e = (desc - top).exp().masked_fill(desc < kth, 0.0)
    above = e.cumsum(-1) - e                      # mass before each sorted position
    pos = torch.arange(v, device=logits.device).expand_as(desc)
    first = torch.ones_like(desc, dtype=torch.bool)
    first[:, 1:] = desc[:, 1:] != desc[:, :-1]
    start = torch.where(first, pos, 0).cummax(-1).values
    above = above.gather(1, start)                # ties take the mass above their first member
    kept = (above <= top_p[:, None] * e.sum(-1, keepdim=True)).sum(-1, keepdim=True).clamp(min=1)
    nucleus = desc.gather(1, kept - 1)            # the smallest logit top-p keeps
    keep = (logits >= torch.maximum(kth, nucleus)) & (logits - top >= min_p.log()[:, None])
    return logits.masked_fill(~keep, float("-inf"))


def gumbel_max(scaled: torch.Tensor, seeds: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """A draw from softmax(scaled) per row: argmax(x - log E), E = -log U ~ Exp(1)."""
    u = uniform_noise(seeds, steps, scaled.shape[-1])
    return (scaled - (-u.log()).log()).argmax(-1)


def sample(logits: torch.Tensor, temperature: torch.Tensor, top_k: torch.Tensor,
           top_p: torch.Tensor, min_p: torch.Tensor, greedy: torch.Tensor, seeds: torch.Tensor,
           steps: torch.Tensor) -> torch.Tensor:
    """Tokens [B] int64 from logits [B, V]: the argmax where ``greedy`` (bool [B]), else a
    Gumbel-max draw with ``uniform_noise(seeds, steps)`` from ``filter_logits`` of
    ``logits / temperature`` (float32 [B]; ``top_k`` int [B], 0 or >= V: off; ``top_p`` and
    ``min_p`` float32 [B]). Argmax ties go to the lowest token id."""
    v = logits.shape[-1]
    top_k = torch.where((top_k > 0) & (top_k < v), top_k, v)
    scaled = filter_logits(logits / temperature[:, None], top_k, top_p, min_p)
    return torch.where(greedy, logits.argmax(-1), gumbel_max(scaled, seeds, steps))
