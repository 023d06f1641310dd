"""Input checks and small device helpers shared by the kernel wrappers."""
from __future__ import annotations

import functools
import os

import torch
import triton
import triton.language as tl
from triton.language.extra import libdevice

from litevllm.plugin_api import torch_ops

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32)
INDEX_DTYPES = (torch.int32, torch.int64)
CACHE_DTYPES = FLOAT_DTYPES + torch_ops.FP8_KV_DTYPES  # float8 caches hold x / scale


def next_pow2(n: int) -> int:
    """``triton.next_power_of_2`` for host code: Triton's is a constexpr function, ~2 us a call
    on every launch."""
    return 1 << max(0, int(n) - 1).bit_length()


def cdiv(a: int, b: int) -> int:
    """``triton.cdiv`` for host code (the same cost as ``next_pow2``'s)."""
    return -(-a // b)


def check_tensor(name: str, t: torch.Tensor, ndim: int | None = None,
                 dtypes: tuple = FLOAT_DTYPES, device: torch.device | None = None,
                 contiguous_last: bool = True) -> None:
    """Type, rank, dtype and device check; ``contiguous_last`` wants stride 1 on the last dim.
    Messages are only formatted on failure: this runs on every kernel launch."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if ndim is not None and t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    if t.dtype not in dtypes:
        raise ValueError(f"{name} has dtype {t.dtype}, expected one of {dtypes}")
    if device is not None and t.device != device:
        raise ValueError(f"{name} is on {t.device}, expected {device}")
    if contiguous_last and t.dim() > 0 and t.shape[-1] > 1 and t.stride(-1) != 1:
        raise ValueError(f"{name} must be contiguous in its last dim, got strides {t.stride()}")


def check_paged_cache(k_cache: torch.Tensor, v_cache: torch.Tensor) -> None:
    """Caches are [num_blocks, block_size, num_kv_heads, head_dim] with identical layouts."""
    check_tensor("k_cache", k_cache, 4, dtypes=CACHE_DTYPES)
    check_tensor("v_cache", v_cache, 4, dtypes=CACHE_DTYPES)
    if k_cache.shape != v_cache.shape or k_cache.stride() != v_cache.stride():
        raise ValueError(f"k_cache {tuple(k_cache.shape)}/{k_cache.stride()} and v_cache "
                         f"{tuple(v_cache.shape)}/{v_cache.stride()} must have the same shape "
                         f"and strides")
    if k_cache.dtype != v_cache.dtype or k_cache.device != v_cache.device:
        raise ValueError("k_cache and v_cache must share a dtype and a device")
    bs = k_cache.shape[1]
    if not is_pow2(bs):
        raise ValueError(f"block_size must be a power of 2, got {bs}")
    if k_cache.dtype in torch_ops.FP8_KV_DTYPES and not fp8_supported(k_cache.device):
        raise ValueError(f"a float8 KV cache needs an NVIDIA GPU of compute capability >= 8.9 "
                         f"(or the interpreter), not {device_name(k_cache.device)}")


def kv_operands(k_cache: torch.Tensor, v_cache: torch.Tensor):
    """(k, v, fp8) as the attention kernels take them: float8 caches as int32 words of four
    bytes (fp8_words_to_f16 converts them; the strides are then in words)."""
    if k_cache.dtype not in torch_ops.FP8_KV_DTYPES:
        return k_cache, v_cache, False
    if k_cache.shape[-1] % 4:
        raise ValueError(f"a float8 KV cache needs a head_dim divisible by 4, "
                         f"got {k_cache.shape[-1]}")
    return k_cache.view(torch.int32), v_cache.view(torch.int32), True


def f16_dots(q_dtype: torch.dtype, cache_dtype: torch.dtype) -> bool:
    """Float8 caches with 16-bit queries take their dots in float16: Hopper converts e4m3 to
    float16 in one instruction per pair but to bfloat16 in several, which made float8 attention
    ALU-bound. The products are those of bfloat16: e4m3 values fit float16 exactly, and so do
    bfloat16 queries within float16's normal range (beyond +-65504 they become inf)."""
    return cache_dtype in torch_ops.FP8_KV_DTYPES and q_dtype != torch.float32


@functools.lru_cache(maxsize=None)
def fp8_supported(device: torch.device) -> bool:
    """The write kernel's float8 e4m3 cast and the readers' cvt.rn.f16x2.e4m3x2 need sm_89 or
    newer; the CPU interpreter converts in software."""
    if INTERPRET:
        return True
    return (device.type == "cuda" and torch.version.hip is None
            and torch.cuda.get_device_capability(device) >= (8, 9))


def check_attention_inputs(q, k_cache, v_cache, block_tables, seq_lens, num_seqs: int,
                           sliding_window, logit_softcap, out, k_scale=1.0, v_scale=1.0):
    """Checks shared by the paged attention wrappers; returns ``out`` (allocated if None)."""
    check_paged_cache(k_cache, v_cache)
    torch_ops.check_kv_scales(k_cache.dtype, k_scale, v_scale)
    dev = k_cache.device
    check_tensor("q", q, 3, device=dev)
    check_tensor("block_tables", block_tables, 2, dtypes=(torch.int32,), device=dev)
    check_tensor("seq_lens", seq_lens, 1, dtypes=(torch.int32,), device=dev)
    _, h, d = q.shape
    hkv, dc = k_cache.shape[2], k_cache.shape[3]
    if q.dtype != k_cache.dtype and k_cache.dtype not in torch_ops.FP8_KV_DTYPES:
        raise ValueError(f"q dtype {q.dtype} != cache dtype {k_cache.dtype}")
    if dc != d:
        raise ValueError(f"q head_dim {d} != cache head_dim {dc}")
    if not 0 < d <= MAX_HEAD_DIM:
        raise ValueError(f"head_dim must be in 1..{MAX_HEAD_DIM}, got {d}")
    if h % hkv:
        raise ValueError(f"num_heads {h} is not a multiple of num_kv_heads {hkv}")
    if block_tables.shape[0] < num_seqs:
        raise ValueError(f"block_tables has {block_tables.shape[0]} rows for {num_seqs} sequences")
    if sliding_window is not None and sliding_window <= 0:
        raise ValueError("sliding_window must be positive")
    if logit_softcap is not None and logit_softcap <= 0:
        raise ValueError("logit_softcap must be positive")
    if out is None:
        return torch.empty(q.shape, dtype=q.dtype, device=dev)
    check_tensor("out", out, 3, device=dev)
    if out.shape != q.shape:
        raise ValueError(f"out shape {tuple(out.shape)} != q shape {tuple(q.shape)}")
    return out


def is_pow2(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


MAX_HEAD_DIM = 256


def padded_head_dim(d: int) -> int:
    """Tile width of a head: the next power of 2, at least 16 (tl.dot's minimum K).
    The attention kernels mask the padding columns."""
    return max(16, next_pow2(d))


# libdevice's logf (within 1 ulp), the one torch's CUDA log calls: tl.log's lowering is free to
# approximate. The interpreter has no libdevice (numpy's log).
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
_INTERPRET = tl.constexpr(INTERPRET)


@triton.jit
def log_ieee(x):
    if _INTERPRET:
        return tl.log(x)
    else:
        return libdevice.log(x)


@triton.jit
def to_fp8(x, scale, top, dtype: tl.constexpr):
    """``x / scale`` (IEEE division, float32) saturated to +-``top`` and rounded to the nearest
    (ties to even) float8 ``dtype``, as torch_ops.quantize_kv. The interpreter's cast drops the
    carry when rounding up to the next power of 2: there the rounding to 3 mantissa bits (e4m3)
    happens in float32 first, so its cast is exact."""
    y = tl.math.div_rn(x.to(tl.float32), scale)
    y = tl.minimum(tl.maximum(y, -top), top)
    if _INTERPRET:
        bits = y.to(tl.int32, bitcast=True)
        bits = (bits + 0x7FFFF + ((bits >> 20) & 1)) & -1048576  # ties to even at bit 20
        sub = (y + 24576.0) - 24576.0  # subnormals (|y| < 2^-6): multiples of 2^-9
        sub = tl.where(sub == 0.0, y * 0.0, sub)  # keep the sign of zero
        y = tl.where(tl.abs(y) < 0.015625, sub, bits.to(tl.float32, bitcast=True))
    return y.to(dtype)


# four float8 e4m3 bytes of one int32 word -> four float16 values (hardware conversions)
_E4M3_WORD_TO_F16 = tl.constexpr("""{
.reg .b16 lo, hi;
.reg .b32 a, b;
mov.b32 {lo, hi}, $4;
cvt.rn.f16x2.e4m3x2 a, lo;
cvt.rn.f16x2.e4m3x2 b, hi;
mov.b32 {$0, $1}, a;
mov.b32 {$2, $3}, b;
}""")


@triton.jit
def _e4m3_byte_to_f16(x):
    """The low byte of int32 ``x`` (e4m3 bits) as float16, exactly: the bits moved into
    float16's fields, times 2^8 for the exponent bias (subnormals included); NaN stays NaN."""
    bits = ((x & 0x80) << 8) | ((x & 0x7F) << 7)
    f = bits.to(tl.int16).to(tl.float16, bitcast=True) * 256.0
    return tl.where((x & 0x7F) == 0x7F, float("nan"), f)


@triton.jit
def fp8_words_to_f16(w, N: tl.constexpr, D: tl.constexpr):
    """A [N, D // 4] tile of int32 words holding float8 e4m3 bytes -> [N, D] float16 (exact).
    Converting in registers keeps the tile moving through shared memory as float16: a cast of
    the float8 tile itself had Triton read it there one byte at a time."""
    if _INTERPRET:
        b0 = _e4m3_byte_to_f16(w)
        b1 = _e4m3_byte_to_f16(w >> 8)
        b2 = _e4m3_byte_to_f16(w >> 16)
        b3 = _e4m3_byte_to_f16(w >> 24)
    else:
        b0, b1, b2, b3 = tl.inline_asm_elementwise(
            _E4M3_WORD_TO_F16, "=h,=h,=h,=h,r", [w],
            dtype=(tl.float16, tl.float16, tl.float16, tl.float16), is_pure=True, pack=1)
    return tl.reshape(tl.join(tl.join(b0, b2), tl.join(b1, b3)), (N, D))


@triton.jit
def load_fp8_tile(base, row, n_ok, HEAD_DIM: tl.constexpr, BLOCK_N: tl.constexpr,
                  BLOCK_D: tl.constexpr):
    """The [BLOCK_N, BLOCK_D] float16 tile of a float8 cache seen as int32 words (kv_operands):
    rows at word offsets ``row``, rows outside ``n_ok`` and padded head dims read as zeros."""
    offs_w = tl.arange(0, BLOCK_D // 4)
    ok = n_ok[:, None] & (offs_w < HEAD_DIM // 4)[None, :]
    return fp8_words_to_f16(tl.load(base + row[:, None] + offs_w[None, :], mask=ok, other=0),
                            BLOCK_N, BLOCK_D)


@triton.jit
def tanh(x):
    """tanh through exp2 (portable, no libdevice); never overflows."""
    e = tl.exp2(-2.8853900817779268 * tl.abs(x))  # exp(-2|x|)
    t = (1.0 - e) / (1.0 + e)
    return tl.where(x < 0, -t, t)


def device_name(device: torch.device) -> str:
    """The key of per-GPU tuned tables: ``NVIDIA_H200``; the device type off CUDA."""
    if device.type != "cuda":
        return device.type
    return torch.cuda.get_device_name(device).replace(" ", "_")


@functools.lru_cache(maxsize=None)
def pdl_enabled(device: torch.device) -> bool:
    """Programmatic dependent launch (Hopper and newer NVIDIA GPUs; ``LITEVLLM_PDL=0`` turns it
    off): kernels that take a ``PDL`` flag wait for their predecessor in-kernel
    (``gdc_wait``) and are launched with ``launch_pdl=True``, so their launch and prologue
    overlap the previous kernel's tail; kernels that ``trigger`` let their dependents start."""
    return (device.type == "cuda" and torch.version.hip is None
            and not INTERPRET and os.environ.get("LITEVLLM_PDL", "1") != "0"
            and torch.cuda.get_device_capability(device)[0] >= 9)


def pdl_launch(enabled: bool) -> dict:
    """The launch keyword for a kernel with a ``PDL`` flag."""
    return {"launch_pdl": True} if enabled else {}


@triton.jit
def pdl_wait(PDL: tl.constexpr):
    """Wait for the previous kernel in the stream (no-op without PDL)."""
    if PDL:
        tl.extra.cuda.gdc_wait()


@triton.jit
def pdl_trigger(PDL: tl.constexpr):
    """Let the next kernel, if launched with PDL, start its prologue now."""
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def gated_act(a, ACT: tl.constexpr):
    """The gate activation of the gated MLPs: 0 silu, 1 gelu_tanh (float32 in and out)."""
    if ACT == 0:
        h = a / (1.0 + tl.exp(-a))
    else:
        h = 0.5 * a * (1.0 + tanh(0.7978845608028654 * (a + 0.044715 * a * a * a)))
    return h


@triton.jit
def dot(a, b, IEEE: tl.constexpr):
    """``a @ b`` accumulated in float32. IEEE (for float32 inputs): exact float32 products;
    without it tl.dot rounds float32 inputs to TF32 (10-bit mantissa) on NVIDIA GPUs."""
    if IEEE:
        out = tl.dot(a, b, input_precision="ieee")
    else:
        out = tl.dot(a, b)
    return out


@triton.jit
def mac(acc, acc_up, x, w, u, GATED: tl.constexpr, DOT: tl.constexpr, IEEE: tl.constexpr,
        SWAP: tl.constexpr = False):
    """acc += x @ w^T (and acc_up += x @ u^T) for x [BM, BK], w/u [BN, BK]: a [BM, BN] tl.dot,
    or (skinny GEMMs, few rows) [BM, BN, BK] float32 products, summed over K by the caller.
    ``SWAP`` (tl.dot only): acc is [BN, BM] += w @ x^T, so the weight rows fill the MMA's M
    side (Hopper's wgmma wants M >= 64) and the few token rows its N side."""
    if SWAP:
        acc += dot(w, tl.trans(x), IEEE)
        if GATED:
            acc_up += dot(u, tl.trans(x), IEEE)
    elif DOT:
        acc += dot(x, tl.trans(w), IEEE)
        if GATED:
            acc_up += dot(x, tl.trans(u), IEEE)
    else:
        xf = x.to(tl.float32)[:, None, :]
        acc += xf * w.to(tl.float32)[None, :, :]
        if GATED:
            acc_up += xf * u.to(tl.float32)[None, :, :]
    return acc, acc_up
