"""RMSNorm with an optional fused residual add: one program normalises one row."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from litevllm_triton.kernels._common import (check_tensor, next_pow2, pdl_enabled, pdl_launch,
                                             pdl_trigger, pdl_wait)

MAX_HIDDEN = 65536


@triton.jit
def _rms_norm_kernel(x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr,
                     stride_x, stride_res, stride_out, stride_res_out,
                     n_cols, eps, offset,
                     BLOCK: tl.constexpr, HAS_RESIDUAL: tl.constexpr, PDL: tl.constexpr):
    pdl_wait(PDL)
    pdl_trigger(PDL)  # the next kernel (a GEMV) may start streaming its weights
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    ok = cols < n_cols
    x = tl.load(x_ptr + row * stride_x + cols, mask=ok, other=0.0)
    if HAS_RESIDUAL:
        # the add rounds to the activation dtype, exactly as `x + residual` does in torch
        r = tl.load(res_ptr + row * stride_res + cols, mask=ok, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(x.dtype)
        tl.store(res_out_ptr + row * stride_res_out + cols, x, mask=ok)
    xf = x.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(xf * xf, axis=0) / n_cols + eps)
    w = tl.load(w_ptr + cols, mask=ok, other=0.0).to(tl.float32)
    out = xf * rstd * (offset + w)
    tl.store(out_ptr + row * stride_out + cols, out.to(out_ptr.dtype.element_ty), mask=ok)


def _num_warps(block: int) -> int:
    # H100 sweep (4096 rows, bf16): 4 warps best from hidden 2048 to 8192
    return 8 if block >= 16384 else max(1, min(4, block // 512))


def _rows(name: str, t: torch.Tensor) -> torch.Tensor:
    """View [..., N] as [rows, N] without copying; the row stride may be anything."""
    if t.dim() == 2:
        return t
    try:
        return t.view(-1, t.shape[-1])
    except RuntimeError as e:
        raise ValueError(f"{name} with shape {tuple(t.shape)} and strides {t.stride()} "
                         f"cannot be viewed as 2-D rows") from e


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float,
             residual: torch.Tensor | None = None, offset: float = 0.0
             ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """RMSNorm of x [..., N] scaled by ``offset + weight`` [N].

    With ``residual`` (same shape and dtype as x) returns ``(normed, x + residual)``; the inputs
    are not modified. Without it returns ``normed``. Math in float32.
    """
    check_tensor("x", x)
    if not (x.dim() >= 1):
        raise ValueError("x must have at least one dim")
    n = x.shape[-1]
    check_tensor("weight", weight, 1, device=x.device)
    if weight.shape[0] != n:
        raise ValueError(f"weight has {weight.shape[0]} elements, x rows have {n}")
    if not (0 < n <= MAX_HIDDEN):
        raise ValueError(f"hidden size {n} not in (0, {MAX_HIDDEN}]")
    if residual is not None:
        check_tensor("residual", residual, device=x.device)
        if residual.shape != x.shape:
            raise ValueError(f"residual shape {tuple(residual.shape)} != "
                         f"x shape {tuple(x.shape)}")
        if residual.dtype != x.dtype:
            raise ValueError(f"residual dtype {residual.dtype} != x dtype {x.dtype}")
    x2 = _rows("x", x)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    out2 = out.view(-1, n)
    if residual is not None:
        res2 = _rows("residual", residual)
        res_out = torch.empty_like(out)
        res_out2 = res_out.view(-1, n)
    else:
        res2 = res_out2 = x2  # unused
    if x2.shape[0] == 0:
        return out if residual is None else (out, res_out)
    block = next_pow2(n)
    pdl = pdl_enabled(x.device)
    _rms_norm_kernel[(x2.shape[0],)](
        x2, res2, weight, out2, res_out2,
        x2.stride(0), res2.stride(0), out2.stride(0), res_out2.stride(0),
        n, float(eps), float(offset),
        BLOCK=block, HAS_RESIDUAL=residual is not None, PDL=pdl,
        num_warps=_num_warps(block), **pdl_launch(pdl))
    return out if residual is None else (out, res_out)
