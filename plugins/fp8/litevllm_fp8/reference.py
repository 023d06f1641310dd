"""Torch reference for FP8 e4m3: weight (de)quantization and activation quantization.

Internal weight layout: ``weight`` [N, K] float8_e4m3fn (stored as uint8 bits) and
``w_scale`` [N, KB] float32, one scale per output row and per ``group_k`` columns
(``KB = ceil(K / group_k)``; per-channel and per-tensor scales have ``group_k = K``, KB = 1).
The CPU path and the kernel tests use these functions.
"""
from __future__ import annotations

import torch

FP8 = torch.float8_e4m3fn
FP8_MAX = torch.finfo(FP8).max  # 448
MIN_SCALE = 1e-12  # an all-zero row or group still gets a finite scale


def cdiv(a: int, b: int) -> int:
    return -(-a // b)


def as_fp8(weight: torch.Tensor) -> torch.Tensor:
    """The float8 view of a weight stored as uint8 bits."""
    return weight.view(FP8) if weight.dtype == torch.uint8 else weight


def expand_scale(w_scale: torch.Tensor, k: int, group_k: int) -> torch.Tensor:
    """[N, KB] group scales -> [N, K], one per weight."""
    return w_scale.repeat_interleave(group_k, dim=1)[:, :k]


def dequantize(weight: torch.Tensor, w_scale: torch.Tensor, group_k: int,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """fp8 [N, K] with [N, KB] scales -> ``dtype`` [N, K] (products in float32)."""
    w = as_fp8(weight).float()
    return (w * expand_scale(w_scale.float(), w.shape[1], group_k)).to(dtype)


def quantize_rows(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel: [N, K] -> (fp8 [N, K], float32 scale [N, 1])."""
    scale = (w.float().abs().amax(dim=1, keepdim=True) / FP8_MAX).clamp(min=MIN_SCALE)
    return (w.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def quantize_tensor(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-tensor: [N, K] -> (fp8 [N, K], float32 scalar scale)."""
    scale = (w.float().abs().amax() / FP8_MAX).clamp(min=MIN_SCALE)
    return (w.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale


def quantize_blocks(w: torch.Tensor, block_n: int, block_k: int):
    """Block-wise: [N, K] -> (fp8 [N, K], float32 ``scale_inv`` [ceil(N/bn), ceil(K/bk)]) as
    stored in block-quantized FP8 checkpoints (dequant: ``w = q * scale_inv``)."""
    n, k = w.shape
    nb, kb = cdiv(n, block_n), cdiv(k, block_k)
    padded = torch.zeros(nb * block_n, kb * block_k, dtype=torch.float32, device=w.device)
    padded[:n, :k] = w.float()
    blocks = padded.view(nb, block_n, kb, block_k)
    scale = (blocks.abs().amax(dim=(1, 3)) / FP8_MAX).clamp(min=MIN_SCALE)
    q = (blocks / scale[:, None, :, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q.view(nb * block_n, kb * block_k)[:n, :k].contiguous(), scale


def quantize_act(x: torch.Tensor, group: int | None = None,
                 static_scale: torch.Tensor | None = None):
    """Activations [M, K] -> (fp8 [M, K], float32 scales [M, G]): dynamic per token
    (``group`` None), per token and ``group`` columns, or one static scale for all."""
    m, k = x.shape
    if static_scale is not None:
        scale = static_scale.float().reshape(1, 1).expand(m, 1)
        return (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8), scale
    g = group or k
    xg = x.float().view(m, k // g, g)
    scale = (xg.abs().amax(dim=2) / FP8_MAX).clamp(min=MIN_SCALE)
    q = (xg / scale[:, :, None]).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return q.view(m, k), scale


def w8a8_matmul(xq, x_scale, weight, w_scale, group_k: int, out_dtype) -> torch.Tensor:
    """Reference W8A8: dequantize both sides in float32, one matmul."""
    k = xq.shape[1]
    x = xq.float() * expand_scale(x_scale, k, k // x_scale.shape[1] if x_scale.shape[1] > 1 else k)
    return (x @ dequantize(weight, w_scale, group_k).t()).to(out_dtype)
