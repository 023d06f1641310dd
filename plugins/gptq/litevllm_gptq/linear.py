"""``packed_linear``: the one entry point that runs ``x @ W (+ bias)`` for a ``PackedWeight``.

Other plugins (GGUF kept packed) call this; on CUDA it picks a Triton kernel for the shape
(GEMV for a few rows, the tensor-core kernel for more, dequantize + cuBLAS for many), and the
torch reference elsewhere. The choice depends on shapes only: no host sync, CUDA-graph safe.
"""
from __future__ import annotations

import torch

from litevllm_gptq.layout import PackedWeight, matmul_ref

# rows handled by the GEMV kernel (a tuned table may set it per shape in
# "gemv_max_m_by_shape"), and the row count from which dequantize + cuBLAS is used
# (measured on an H200: benchmarks/bench_quant.py)
POLICY = {"gemv_max_m": 1, "cublas_min_m": 1024}


def packed_linear(x: torch.Tensor, w: PackedWeight, bias: torch.Tensor | None = None) -> torch.Tensor:
    """``x [..., K] @ W [K, N] (+ bias [N])`` -> ``[..., N]`` in ``x.dtype``."""
    if not x.is_cuda:
        y = matmul_ref(x, w)
        return y if bias is None else y + bias
    lead = x.shape[:-1]
    x2 = x.reshape(-1, x.shape[-1])
    if x2.stride(-1) != 1:
        x2 = x2.contiguous()
    y = kernel_linear(x2, w, bias)
    return y.reshape(*lead, y.shape[-1])


def kernel_linear(x: torch.Tensor, w: PackedWeight, bias: torch.Tensor | None = None,
                  path: str | None = None) -> torch.Tensor:
    """``x [M, K]`` through the Triton path for its row count (or the ``path`` named)."""
    m = x.shape[0]
    if path is None:
        from litevllm_gptq.kernels.tuning import policy
        pol = {**POLICY, **policy(x.device)}
        k, n = w.shape
        gemv_max = pol.get("gemv_max_m_by_shape", {}).get(f"b{w.bits},{k},{n}", pol["gemv_max_m"])
        path = "gemv" if m <= gemv_max else "cublas" if m >= pol["cublas_min_m"] else "gemm"
    if path == "gemv":
        from litevllm_gptq.kernels.gemv import gemv
        return gemv(x, w, bias)
    if path == "gemm":
        from litevllm_gptq.kernels.gemm import gemm
        return gemm(x, w, bias)
    from litevllm_gptq.kernels.dequant import dequantize
    if w.perm is not None:
        x = x[:, w.perm]
    y = x @ dequantize(w, x.dtype)
    return y if bias is None else y + bias
