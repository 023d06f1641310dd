"""Rotary position embedding applied in place to q and k: one program per token. With a KV
cache (``STORE``) the program then stores its token's rotated k and its v there, as
reshape_and_cache does: one kernel instead of two."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litevllm.plugin_api import torch_ops
from litevllm_triton.kernels._common import INDEX_DTYPES, check_tensor, next_pow2
from litevllm_triton.kernels.reshape_and_cache import check_store, store_args, store_token_kv


@triton.jit
def _rotate_heads(x_ptr, stride_h, num_heads, cos, sin, offs_r, r_ok, w_ptr, eps, offset,
                  IS_NEOX: tl.constexpr, HALF: tl.constexpr, BLOCK_H: tl.constexpr,
                  NORM: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_P: tl.constexpr):
    """Rotate the first 2*HALF dims of every head of one token in place; with NORM, RMS-normalise
    each head over HEAD_DIM first (the dims past 2*HALF too), rounded as rms_norm's output."""
    if IS_NEOX:  # pairs (i, i + HALF)
        i1 = offs_r
        i2 = offs_r + HALF
    else:  # GPT-J: interleaved pairs (2i, 2i + 1)
        i1 = offs_r * 2
        i2 = offs_r * 2 + 1
    if NORM:
        offs_p = 2 * HALF + tl.arange(0, BLOCK_P)  # dims that are not rotated
        p_ok = offs_p < HEAD_DIM
        w1 = offset + tl.load(w_ptr + i1, mask=r_ok, other=0.0).to(tl.float32)[None, :]
        w2 = offset + tl.load(w_ptr + i2, mask=r_ok, other=0.0).to(tl.float32)[None, :]
        wp = offset + tl.load(w_ptr + offs_p, mask=p_ok, other=0.0).to(tl.float32)[None, :]
    for h0 in range(0, num_heads, BLOCK_H):
        heads = h0 + tl.arange(0, BLOCK_H)
        ok = (heads < num_heads)[:, None] & r_ok[None, :]
        base = x_ptr + heads[:, None] * stride_h
        x1 = tl.load(base + i1[None, :], mask=ok, other=0.0)
        x2 = tl.load(base + i2[None, :], mask=ok, other=0.0)
        x1f = x1.to(tl.float32)
        x2f = x2.to(tl.float32)
        if NORM:
            p_mask = (heads < num_heads)[:, None] & p_ok[None, :]
            xp = tl.load(base + offs_p[None, :], mask=p_mask, other=0.0).to(tl.float32)
            ss = tl.sum(x1f * x1f, axis=1) + tl.sum(x2f * x2f, axis=1) + tl.sum(xp * xp, axis=1)
            rstd = tl.rsqrt(ss / HEAD_DIM + eps)[:, None]
            x1f = (x1f * rstd * w1).to(x1.dtype).to(tl.float32)
            x2f = (x2f * rstd * w2).to(x1.dtype).to(tl.float32)
            tl.store(base + offs_p[None, :], (xp * rstd * wp).to(x1.dtype), mask=p_mask)
        tl.store(base + i1[None, :], (x1f * cos - x2f * sin).to(x1.dtype), mask=ok)
        tl.store(base + i2[None, :], (x2f * cos + x1f * sin).to(x1.dtype), mask=ok)


@triton.jit
def _rotary_kernel(pos_ptr, q_ptr, k_ptr, cos_sin_ptr, qw_ptr, kw_ptr,
                   stride_qt, stride_qh, stride_kt, stride_kh, stride_cs,
                   num_q_heads, num_k_heads, eps, offset,
                   v_ptr, k_cache_ptr, v_cache_ptr, slot_ptr, stride_vt,
                   s_stride_kh, s_stride_vh, stride_kvb, stride_kvs, stride_kvh, s_heads, s_dim,
                   k_scale, v_scale,
                   HALF: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr,
                   IS_NEOX: tl.constexpr, NORM: tl.constexpr, HEAD_DIM: tl.constexpr,
                   BLOCK_P: tl.constexpr, STORE: tl.constexpr, PAGE: tl.constexpr,
                   KV_BLOCK_H: tl.constexpr, KV_BLOCK_D: tl.constexpr, FP8_MAX: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    pos = tl.load(pos_ptr + t).to(tl.int64)
    offs_r = tl.arange(0, BLOCK_R)
    r_ok = offs_r < HALF
    row = cos_sin_ptr + pos * stride_cs
    cos = tl.load(row + offs_r, mask=r_ok, other=0.0).to(tl.float32)[None, :]
    sin = tl.load(row + HALF + offs_r, mask=r_ok, other=0.0).to(tl.float32)[None, :]
    _rotate_heads(q_ptr + t * stride_qt, stride_qh, num_q_heads, cos, sin, offs_r, r_ok, qw_ptr,
                  eps, offset, IS_NEOX, HALF, BLOCK_H, NORM, HEAD_DIM, BLOCK_P)
    _rotate_heads(k_ptr + t * stride_kt, stride_kh, num_k_heads, cos, sin, offs_r, r_ok, kw_ptr,
                  eps, offset, IS_NEOX, HALF, BLOCK_H, NORM, HEAD_DIM, BLOCK_P)
    if STORE:
        slot = tl.load(slot_ptr + t).to(tl.int64)
        if slot >= 0:  # not a padding token
            tl.debug_barrier()  # the rotated k rows are stored before they are read back
            store_token_kv(k_ptr + t * stride_kt, v_ptr + t * stride_vt, k_cache_ptr,
                           v_cache_ptr, slot, s_stride_kh, s_stride_vh, stride_kvb, stride_kvs,
                           stride_kvh, s_heads, s_dim, k_scale, v_scale, PAGE, KV_BLOCK_H,
                           KV_BLOCK_D, FP8_MAX)


def _head_strides(name: str, x: torch.Tensor, num_tokens: int, head_dim: int) -> tuple:
    """(num_heads, token stride, head stride) of x given as [T, H*D] or [T, H, D]."""
    check_tensor(name, x)
    if x.shape[0] != num_tokens:
        raise ValueError(f"{name} has {x.shape[0]} tokens, positions has "
                     f"{num_tokens}")
    if x.dim() == 3:
        if x.shape[2] != head_dim:
            raise ValueError(f"{name} head dim {x.shape[2]} != head_dim {head_dim}")
        return x.shape[1], x.stride(0), x.stride(1)
    if not (x.dim() == 2):
        raise ValueError(f"{name} must be [T, H*D] or [T, H, D], got {tuple(x.shape)}")
    if x.shape[1] % head_dim != 0:
        raise ValueError(f"{name} width {x.shape[1]} is not a multiple of "
                     f"head_dim {head_dim}")
    return x.shape[1] // head_dim, x.stride(0), head_dim


def rotary_embedding(positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor, head_dim: int,
                     cos_sin_cache: torch.Tensor, is_neox: bool = True,
                     q_norm: torch.Tensor | None = None, k_norm: torch.Tensor | None = None,
                     norm_eps: float = 1e-6, norm_offset: float = 0.0,
                     v: torch.Tensor | None = None, k_cache: torch.Tensor | None = None,
                     v_cache: torch.Tensor | None = None,
                     slot_mapping: torch.Tensor | None = None, k_scale: float = 1.0,
                     v_scale: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q [T, Hq*D] (or [T, Hq, D]) and k likewise IN PLACE; returns (q, k).

    ``cos_sin_cache`` is [max_pos, rot_dim]: cos in the first half, sin in the second;
    dims past rot_dim pass through. q and k may be strided views (e.g. slices of a fused qkv).
    ``q_norm``/``k_norm`` [head_dim]: RMSNorm each head first, in the same pass (Qwen3).
    ``v`` (shaped as k), ``k_cache``/``v_cache`` [num_blocks, block_size, Hk, D] and
    ``slot_mapping`` [T]: then store the rotated k and v as ``reshape_and_cache`` does.
    """
    if (q_norm is None) != (k_norm is None):
        raise ValueError("give both q_norm and k_norm, or neither")
    norm = q_norm is not None
    if norm:
        for name, w in (("q_norm", q_norm), ("k_norm", k_norm)):
            check_tensor(name, w, 1, device=q.device)
            if w.shape[0] != head_dim:
                raise ValueError(f"{name} has {w.shape[0]} elements, head_dim is {head_dim}")
    check_tensor("positions", positions, 1, dtypes=INDEX_DTYPES, device=q.device)
    check_tensor("cos_sin_cache", cos_sin_cache, 2, device=q.device)
    if not (k.device == q.device and k.dtype == q.dtype):
        raise ValueError("q and k must share device and dtype")
    rot = cos_sin_cache.shape[1]
    if not (rot % 2 == 0 and 0 < rot <= head_dim):
        raise ValueError(f"rot_dim {rot} must be even and in (0, head_dim={head_dim}]")
    t = positions.shape[0]
    hq, sqt, sqh = _head_strides("q", q, t, head_dim)
    hk, skt, skh = _head_strides("k", k, t, head_dim)
    torch_ops.check_rotary_store(v, k_cache, v_cache, slot_mapping, k_scale, v_scale)
    if v is not None:
        k3, v3 = k.view(t, hk, head_dim), v.view(t, -1, head_dim)  # [T, Hk, D] views
        check_store(k3, v3, k_cache, v_cache, slot_mapping, k_scale, v_scale)
        s_args, s_consts = store_args(k3, v3, k_cache, k_scale, v_scale)
        s_ptrs = (v, k_cache, v_cache, slot_mapping, v3.stride(0))
    else:
        s_args, s_consts = (0,) * 9, dict(PAGE=1, KV_BLOCK_H=1, KV_BLOCK_D=1, FP8_MAX=0.0)
        s_ptrs = (q, q, q, positions, 0)
    if t == 0:
        return q, k
    half = rot // 2
    block_r = next_pow2(half)
    block_h = min(next_pow2(max(hq, hk)), max(1, 4096 // block_r))
    if norm:  # the whole head in registers: fewer heads per chunk
        block_h = min(block_h, max(1, 4096 // next_pow2(head_dim)))
    _rotary_kernel[(t,)](positions, q, k, cos_sin_cache, q_norm if norm else cos_sin_cache,
                         k_norm if norm else cos_sin_cache, sqt, sqh, skt, skh,
                         cos_sin_cache.stride(0), hq, hk, float(norm_eps), float(norm_offset),
                         *s_ptrs, *s_args, HALF=half, BLOCK_R=block_r, BLOCK_H=block_h,
                         IS_NEOX=bool(is_neox), NORM=norm, HEAD_DIM=head_dim,
                         STORE=v is not None, **s_consts,
                         BLOCK_P=next_pow2(max(1, head_dim - rot)), num_warps=4)
    return q, k
