"""Scatter new keys/values into the paged cache: one program per token. A float8 cache
stores ``x / scale`` saturated to the dtype's range (torch_ops.quantize_kv)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litevllm.plugin_api import torch_ops
from litevllm_triton.kernels._common import check_paged_cache, check_tensor, next_pow2, to_fp8


@triton.jit
def store_token_kv(key_ptr, value_ptr, k_cache_ptr, v_cache_ptr, slot,
                   stride_kh, stride_vh, stride_cb, stride_cs, stride_ch,
                   num_kv_heads, head_dim, k_scale, v_scale,
                   PAGE: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_D: tl.constexpr,
                   FP8_MAX: tl.constexpr):
    """Store one token's key/value heads (rows at key_ptr / value_ptr) at cache ``slot``."""
    heads = tl.arange(0, BLOCK_H)[:, None]
    dims = tl.arange(0, BLOCK_D)[None, :]
    ok = (heads < num_kv_heads) & (dims < head_dim)
    dst = (slot // PAGE) * stride_cb + (slot % PAGE) * stride_cs + heads * stride_ch + dims
    k = tl.load(key_ptr + heads * stride_kh + dims, mask=ok)
    v = tl.load(value_ptr + heads * stride_vh + dims, mask=ok)
    if FP8_MAX > 0:  # a float8 cache
        k = to_fp8(k, k_scale, FP8_MAX, k_cache_ptr.dtype.element_ty)
        v = to_fp8(v, v_scale, FP8_MAX, v_cache_ptr.dtype.element_ty)
    tl.store(k_cache_ptr + dst, k.to(k_cache_ptr.dtype.element_ty), mask=ok)
    tl.store(v_cache_ptr + dst, v.to(v_cache_ptr.dtype.element_ty), mask=ok)


@triton.jit
def _reshape_and_cache_kernel(key_ptr, value_ptr, k_cache_ptr, v_cache_ptr, slot_ptr,
                              stride_kt, stride_vt, stride_kh, stride_vh,
                              stride_cb, stride_cs, stride_ch,
                              num_kv_heads, head_dim, k_scale, v_scale,
                              PAGE: tl.constexpr, KV_BLOCK_H: tl.constexpr,
                              KV_BLOCK_D: tl.constexpr, FP8_MAX: tl.constexpr):
    t = tl.program_id(0).to(tl.int64)
    slot = tl.load(slot_ptr + t).to(tl.int64)
    if slot < 0:  # padding token
        return
    store_token_kv(key_ptr + t * stride_kt, value_ptr + t * stride_vt, k_cache_ptr, v_cache_ptr,
                   slot, stride_kh, stride_vh, stride_cb, stride_cs, stride_ch, num_kv_heads,
                   head_dim, k_scale, v_scale, PAGE, KV_BLOCK_H, KV_BLOCK_D, FP8_MAX)


def fp8_max(dtype: torch.dtype) -> float:
    """The saturation bound of a float8 cache dtype (448 for e4m3), 0 for other dtypes."""
    return float(torch.finfo(dtype).max) if dtype in torch_ops.FP8_KV_DTYPES else 0.0


def check_store(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor,
                v_cache: torch.Tensor, slot_mapping: torch.Tensor, k_scale: float,
                v_scale: float) -> None:
    """The checks of :func:`reshape_and_cache` (key/value [T, Hkv, D])."""
    check_paged_cache(k_cache, v_cache)
    torch_ops.check_kv_scales(k_cache.dtype, k_scale, v_scale)
    check_tensor("key", key, 3, device=k_cache.device)
    check_tensor("value", value, 3, device=k_cache.device)
    check_tensor("slot_mapping", slot_mapping, 1, dtypes=(torch.int32, torch.int64),
                 device=k_cache.device)
    t, hkv, d = key.shape
    if value.shape != key.shape:
        raise ValueError(f"value shape {tuple(value.shape)} != key shape "
                     f"{tuple(key.shape)}")
    if not (tuple(k_cache.shape[2:]) == (hkv, d)):
        raise ValueError(f"cache heads/dim {tuple(k_cache.shape[2:])} != key heads/dim {(hkv, d)}")
    if slot_mapping.shape[0] != t:
        raise ValueError(f"slot_mapping has {slot_mapping.shape[0]} entries, "
                     f"key has {t} tokens")


def store_args(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor,
               k_scale: float, v_scale: float) -> tuple[tuple, dict]:
    """(the run-time arguments from ``stride_kh`` on, the constexprs) of
    :func:`store_token_kv`."""
    hkv, d = key.shape[1], key.shape[2]
    return ((key.stride(1), value.stride(1), k_cache.stride(0), k_cache.stride(1),
             k_cache.stride(2), hkv, d, float(k_scale), float(v_scale)),
            dict(PAGE=k_cache.shape[1], KV_BLOCK_H=next_pow2(hkv), KV_BLOCK_D=next_pow2(d),
                 FP8_MAX=fp8_max(k_cache.dtype)))


def reshape_and_cache(key: torch.Tensor, value: torch.Tensor, k_cache: torch.Tensor,
                      v_cache: torch.Tensor, slot_mapping: torch.Tensor,
                      k_scale: float = 1.0, v_scale: float = 1.0) -> None:
    """Write key/value [T, Hkv, D] into caches [num_blocks, block_size, Hkv, D] at flat slots;
    float8 caches store ``key / k_scale`` and ``value / v_scale`` (scales 1.0 otherwise).

    ``slot_mapping`` [T] (int64 or int32): slot = block * block_size + offset; slots < 0 are
    skipped. key/value may be strided views; their last dim must be contiguous.
    """
    check_store(key, value, k_cache, v_cache, slot_mapping, k_scale, v_scale)
    t = key.shape[0]
    if t == 0:
        return
    args, consts = store_args(key, value, k_cache, k_scale, v_scale)
    _reshape_and_cache_kernel[(t,)](key, value, k_cache, v_cache, slot_mapping, key.stride(0),
                                    value.stride(0), *args, **consts, num_warps=4)
