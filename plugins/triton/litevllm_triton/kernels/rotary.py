"""Rotary position embedding applied in place to q and k: one program per token."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litevllm_triton.kernels._common import INDEX_DTYPES, check_tensor


@triton.jit
def _rotate_heads(x_ptr, stride_h, num_heads, cos, sin, offs_r, r_ok, IS_NEOX: tl.constexpr,
                  HALF: tl.constexpr, BLOCK_H: tl.constexpr):
    """Rotate the first 2*HALF dims of every head of one token in place."""
    if IS_NEOX:  # pairs (i, i + HALF)
        i1 = offs_r
        i2 = offs_r + HALF
    else:  # GPT-J: interleaved pairs (2i, 2i + 1)
        i1 = offs_r * 2
        i2 = offs_r * 2 + 1
    for h0 in range(0, num_heads, BLOCK_H):
        heads = h0 + tl.arange(0, BLOCK_H)
        ok = (heads < num_heads)[:, None] & r_ok[None, :]
        base = x_ptr + heads[:, None] * stride_h
        x1 = tl.load(base + i1[None, :], mask=ok, other=0.0)
        x2 = tl.load(base + i2[None, :], mask=ok, other=0.0)
        x1f = x1.to(tl.float32)
        x2f = x2.to(tl.float32)
        tl.store(base + i1[None, :], (x1f * cos - x2f * sin).to(x1.dtype), mask=ok)
        tl.store(base + i2[None, :], (x2f * cos + x1f * sin).to(x1.dtype), mask=ok)


@triton.jit
def _rotary_kernel(pos_ptr, q_ptr, k_ptr, cos_sin_ptr,
                   stride_qt, stride_qh, stride_kt, stride_kh, stride_cs,
                   num_q_heads, num_k_heads,
                   HALF: tl.constexpr, BLOCK_R: tl.constexpr, BLOCK_H: tl.constexpr,
                   IS_NEOX: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    pos = tl.load(pos_ptr + t).to(tl.int64)
    offs_r = tl.arange(0, BLOCK_R)
    r_ok = offs_r < HALF
    row = cos_sin_ptr + pos * stride_cs
    cos = tl.load(row + offs_r, mask=r_ok, other=0.0).to(tl.float32)[None, :]
    sin = tl.load(row + HALF + offs_r, mask=r_ok, other=0.0).to(tl.float32)[None, :]
    _rotate_heads(q_ptr + t * stride_qt, stride_qh, num_q_heads, cos, sin, offs_r, r_ok,
                  IS_NEOX, HALF, BLOCK_H)
    _rotate_heads(k_ptr + t * stride_kt, stride_kh, num_k_heads, cos, sin, offs_r, r_ok,
                  IS_NEOX, HALF, BLOCK_H)


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
                     cos_sin_cache: torch.Tensor, is_neox: bool = True
                     ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q [T, Hq*D] (or [T, Hq, D]) and k likewise IN PLACE; returns (q, k).

    ``cos_sin_cache`` is [max_pos, rot_dim]: cos in the first half, sin in the second;
    dims past rot_dim pass through. q and k may be strided views (e.g. slices of a fused qkv).
    """
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
    if t == 0:
        return q, k
    half = rot // 2
    block_r = triton.next_power_of_2(half)
    block_h = min(triton.next_power_of_2(max(hq, hk)), max(1, 4096 // block_r))
    _rotary_kernel[(t,)](positions, q, k, cos_sin_cache, sqt, sqh, skt, skh,
                         cos_sin_cache.stride(0), hq, hk,
                         HALF=half, BLOCK_R=block_r, BLOCK_H=block_h, IS_NEOX=bool(is_neox),
                         num_warps=4)
    return q, k
