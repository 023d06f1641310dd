"""Fused MoE: top-k routing, rows sorted by expert into BLOCK_M-aligned blocks, then two grouped
GEMMs: gate_up with the gated activation fused, and down with the routing weights applied; the
top-k partial outputs are summed in torch.

No host synchronisation (no .item() / .tolist(), no data-dependent shapes): the block list is
padded to a static worst case and padding blocks exit at once, so the op can be captured in a
CUDA graph. Block sizes come from JSON files per (E, N=intermediate, K=hidden, device) in
``litevllm_triton/fused_moe_configs`` (written by ``benchmarks/tune_fused_moe.py``), keyed by the
token count; untuned shapes get a default.
"""
from __future__ import annotations

import functools
import json
from pathlib import Path

import torch
import triton
import triton.language as tl

from litevllm_triton.kernels._common import check_tensor, require, tanh

ACTIVATIONS = {"silu": 0, "gelu_tanh": 1, "gelu_pytorch_tanh": 1}
CONFIG_DIR = Path(__file__).resolve().parent.parent / "fused_moe_configs"


@triton.jit
def _moe_gemm_kernel(a_ptr, b_ptr, c_ptr, rows_ptr, block_expert_ptr, weights_ptr,
                     num_rows, num_blocks, num_experts, N, K, a_div,
                     stride_am, stride_be, stride_bn, stride_cm,
                     GATED: tl.constexpr, ACT: tl.constexpr, WEIGHTED: tl.constexpr,
                     IEEE: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr):
    """For each block of BLOCK_M sorted rows (all of one expert e) and each BLOCK_N columns:
    ``C[row] = A[row // a_div] @ B[e]^T``. GATED: B[e] is gate rows [0, N) then up rows [N, 2N)
    and ``C = act(gate) * up``. WEIGHTED: C is scaled by ``weights[row]``."""
    # grouped launch order: GROUP_M row blocks share each weight tile while it is in L2
    pid = tl.program_id(0)
    num_n = tl.cdiv(N, BLOCK_N)
    group = GROUP_M * num_n
    first_m = (pid // group) * GROUP_M
    size_m = tl.minimum(num_blocks - first_m, GROUP_M)
    pid_m = first_m + (pid % group) % size_m
    pid_n = (pid % group) // size_m

    expert = tl.load(block_expert_ptr + pid_m)
    if expert >= num_experts:  # padding block past the last expert's rows
        return
    rows = tl.load(rows_ptr + pid_m * BLOCK_M + tl.arange(0, BLOCK_M))
    valid = rows < num_rows  # padding rows hold num_rows
    rows = rows.to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + (rows // a_div)[:, None] * stride_am + offs_k[None, :]
    b_ptrs = (b_ptr + expert.to(tl.int64) * stride_be + offs_n.to(tl.int64)[None, :] * stride_bn
              + offs_k[:, None])  # [BLOCK_K, BLOCK_N] tile of B^T
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    acc_up = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_ok = offs_k < K - k0
        a = tl.load(a_ptrs, mask=valid[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        if IEEE:  # float32 inputs: exact products, not TF32
            acc = tl.dot(a, b, acc, input_precision="ieee")
        else:
            acc = tl.dot(a, b, acc)
        if GATED:
            u = tl.load(b_ptrs + N * stride_bn, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
            if IEEE:
                acc_up = tl.dot(a, u, acc_up, input_precision="ieee")
            else:
                acc_up = tl.dot(a, u, acc_up)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K
    if GATED:
        if ACT == 0:
            acc = acc / (1.0 + tl.exp(-acc)) * acc_up
        else:
            acc = 0.5 * acc * (1.0 + tanh(0.7978845608028654 * (acc + 0.044715 * acc * acc * acc)))
            acc = acc * acc_up
    if WEIGHTED:
        acc = acc * tl.load(weights_ptr + rows, mask=valid, other=0.0)[:, None]
    c_ptrs = c_ptr + rows[:, None] * stride_cm + offs_n[None, :]
    tl.store(c_ptrs, acc.to(c_ptr.dtype.element_ty), mask=valid[:, None] & n_ok[None, :])


def moe_align(ids: torch.Tensor, num_experts: int, block_m: int):
    """Group the T*k (token, slot) rows of ``ids [T, k]`` by expert, each expert's rows padded to
    a multiple of ``block_m``; torch ops only, no host sync.

    Returns ``rows [B*block_m]`` int32 (flat row ``t*k + slot``; ``T*k`` marks padding) and
    ``block_expert [B]`` int32 (``num_experts`` for blocks past the end), where B is the static
    worst case ``min(T*k, cdiv(T*k, block_m) + num_experts)``.
    """
    dev, n = ids.device, ids.numel()
    flat = ids.flatten()
    sorted_e, order = torch.sort(flat, stable=True)
    counts = torch.zeros(num_experts, dtype=torch.int64, device=dev).scatter_add_(
        0, flat, torch.ones_like(flat))
    blocks = (counts + block_m - 1) // block_m
    block_end = torch.cumsum(blocks, 0)
    shift = (block_end - blocks) * block_m - (torch.cumsum(counts, 0) - counts)  # padded - packed start
    dest = shift[sorted_e] + torch.arange(n, device=dev)
    num_blocks = min(n, triton.cdiv(n, block_m) + num_experts)
    rows = torch.full((num_blocks * block_m,), n, dtype=torch.int32, device=dev)
    rows.scatter_(0, dest, order.to(torch.int32))
    block_expert = torch.searchsorted(block_end, torch.arange(num_blocks, device=dev), right=True)
    return rows, block_expert.to(torch.int32)


# configs --------------------------------------------------------------------------------------
def device_name(device: torch.device) -> str:
    if device.type != "cuda":
        return device.type
    return torch.cuda.get_device_name(device).replace(" ", "_")


def config_file(num_experts: int, inter: int, hidden: int, device: str) -> Path:
    return CONFIG_DIR / f"E={num_experts},N={inter},K={hidden},device_name={device}.json"


@functools.lru_cache(maxsize=None)
def _load_configs(path: Path) -> dict[int, dict] | None:
    if not path.is_file():
        return None
    return {int(m): cfg for m, cfg in json.loads(path.read_text()).items()}


def default_config(m: int, dtype: torch.dtype) -> dict:
    cfg = dict(BLOCK_M=16, BLOCK_N=64, BLOCK_K=64, GROUP_M=1, num_warps=4, num_stages=3) \
        if m <= 32 else dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, GROUP_M=8, num_warps=4,
                             num_stages=3)
    if dtype == torch.float32:
        cfg["BLOCK_K"] = 32
    return cfg


def get_config(m: int, num_experts: int, inter: int, hidden: int, dtype: torch.dtype,
               device: torch.device) -> dict:
    """The tuned config for the token count nearest ``m``, else the default."""
    configs = _load_configs(config_file(num_experts, inter, hidden, device_name(device)))
    if not configs:
        return default_config(m, dtype)
    return configs[min(configs, key=lambda k: abs(k - m))]


# the op ---------------------------------------------------------------------------------------
def _check(hidden, w13, w2, router_logits, top_k, activation):
    check_tensor("hidden", hidden, 2)
    check_tensor("w13", w13, 3, dtypes=(hidden.dtype,), device=hidden.device)
    check_tensor("w2", w2, 3, dtypes=(hidden.dtype,), device=hidden.device)
    check_tensor("router_logits", router_logits, 2, device=hidden.device, contiguous_last=False)
    t, h = hidden.shape
    e, two_i, _ = w13.shape
    require(two_i % 2 == 0 and tuple(w13.shape) == (e, two_i, h),
            f"w13 must be [E, 2I, H={h}], got {tuple(w13.shape)}")
    require(tuple(w2.shape) == (e, h, two_i // 2),
            f"w2 must be [E={e}, H={h}, I={two_i // 2}], got {tuple(w2.shape)}")
    require(tuple(router_logits.shape) == (t, e),
            f"router_logits must be [T={t}, E={e}], got {tuple(router_logits.shape)}")
    require(isinstance(top_k, int) and 0 < top_k <= e, f"top_k must be in [1, {e}], got {top_k!r}")
    require(activation in ACTIVATIONS,
            f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")


def fused_moe_with_config(hidden: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
                          router_logits: torch.Tensor, top_k: int, renormalize: bool,
                          activation: str = "silu", config: dict | None = None) -> torch.Tensor:
    """``fused_moe`` with explicit block sizes (``config``; None: tuned or default)."""
    from litevllm.plugin_api import torch_ops  # the routing rule is the reference's

    _check(hidden, w13, w2, router_logits, top_k, activation)
    t, h = hidden.shape
    e, inter = w13.shape[0], w2.shape[2]
    if t == 0:
        return torch.empty_like(hidden)
    cfg = dict(config or get_config(t, e, inter, h, hidden.dtype, hidden.device))
    bm, bn, bk = cfg.pop("BLOCK_M"), cfg.pop("BLOCK_N"), cfg.pop("BLOCK_K")
    group_m = cfg.pop("GROUP_M", 1)
    weights, ids = torch_ops.moe_route(router_logits, top_k, renormalize)
    rows, block_expert = moe_align(ids, e, bm)
    num_blocks, n = block_expert.shape[0], t * top_k
    ieee = hidden.dtype == torch.float32
    common = dict(ACT=ACTIVATIONS[activation], IEEE=ieee, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk,
                  GROUP_M=group_m, **cfg)
    # gate_up + activation: [T*k, I] in sorted-row order of its flat index
    act = torch.empty(n, inter, dtype=hidden.dtype, device=hidden.device)
    _moe_gemm_kernel[(num_blocks * triton.cdiv(inter, bn),)](
        hidden, w13, act, rows, block_expert, weights, n, num_blocks, e, inter, h, top_k,
        hidden.stride(0), w13.stride(0), w13.stride(1), act.stride(0),
        GATED=True, WEIGHTED=False, **common)
    # down, scaled by the routing weight of each (token, slot)
    out = torch.empty(n, h, dtype=hidden.dtype, device=hidden.device)
    _moe_gemm_kernel[(num_blocks * triton.cdiv(h, bn),)](
        act, w2, out, rows, block_expert, weights, n, num_blocks, e, h, inter, 1,
        act.stride(0), w2.stride(0), w2.stride(1), out.stride(0),
        GATED=False, WEIGHTED=True, **common)
    return out.view(t, top_k, h).sum(1, dtype=torch.float32).to(hidden.dtype)


def fused_moe(hidden: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor,
              router_logits: torch.Tensor, top_k: int, renormalize: bool,
              activation: str = "silu") -> torch.Tensor:
    """Sparse MoE: hidden [T, H], w13 [E, 2I, H] (gate then up), w2 [E, H, I],
    router_logits [T, E] -> [T, H]; softmax top-k routing as ``torch_ops.moe_route``."""
    return fused_moe_with_config(hidden, w13, w2, router_logits, top_k, renormalize, activation)
