"""The GPU matmul of an fp8 linear layer: which kernel serves which batch size."""
from __future__ import annotations

import torch

from litevllm_fp8.path import WEIGHT_ONLY

SKINNY_M = 16  # up to here the step is weight-bandwidth bound: weight-only dequant, no act quant


def fp8_linear(x: torch.Tensor, weight: torch.Tensor, w_scale: torch.Tensor, group_k: int,
               in_scale: torch.Tensor | None, bias: torch.Tensor | None, path: str,
               w8a8_ok: bool = True) -> torch.Tensor:
    """x [M, K] -> [M, N]: W8A8 (fp8 activations, per-token or per-token-group scales, or the
    static ``in_scale``) for M > SKINNY_M on FP8 GPUs, else the weight-only kernel."""
    from litevllm_fp8.kernels.w8a16_gemm import w8a16_gemm
    if path == WEIGHT_ONLY or x.shape[0] <= SKINNY_M or not w8a8_ok:
        return w8a16_gemm(x, weight, w_scale, group_k, bias)
    from litevllm_fp8.kernels.act_quant import quant_act
    from litevllm_fp8.kernels.w8a8_gemm import w8a8_gemm
    blockwise = w_scale.shape[1] > 1
    xq, xs = quant_act(x, group_k if blockwise else None, None if blockwise else in_scale)
    return w8a8_gemm(xq, xs, weight, w_scale, group_k, bias, x.dtype)
