"""GPTQ-quantized MoE experts (e.g. Qwen1.5-MoE GPTQ-Int4), stacked per projection.

Checkpoint tensors ``experts.<e>.{gate,up,down}_proj.{qweight,qzeros,scales,g_idx}`` load into
``w13_*`` (gate then up, stacked on N) and ``w2_*`` with a leading expert dim, and are repacked
into one stacked ``PackedWeight`` per projection (``qweight [E, K / p, N]``).

CUDA: each (token, chosen expert) row runs the GEMV against its own expert's weights
(``gemv_experts``): no host sync, so decode runs inside CUDA graphs; outside a capture, larger
batches sort rows by expert and run one ``packed_linear`` per expert, as the CPU path does.
"""
from __future__ import annotations

import torch

from litevllm.plugin_api import copy_shard, torch_ops
from litevllm_gptq.gptq import group_perm, unpack_cols, zero_bias
from litevllm_gptq.layout import PackedWeight, pack_rows, unpack_rows
from litevllm_gptq.linear import packed_linear
from litevllm_gptq.method import float_param, group_size_of, int_param, scale_dtype

ROWS_PER_EXPERT_GEMV = 64  # (token, expert) rows up to which CUDA runs the per-row GEMV


class PackedMoEMethod:
    def __init__(self, config, prefix: str):
        self.config, self.prefix = config, prefix

    def create_weights(self, layer, num_experts, hidden, intermediate, dtype):
        p = 32 // self.config.bits
        layer.moe_shapes = {"w13": (hidden, [intermediate, intermediate]), "w2": (intermediate, [hidden])}
        layer.moe_groups, layer.moe_g_idx = {}, {}
        for name, (k, sizes) in layer.moe_shapes.items():
            n = sum(sizes)
            g = layer.moe_groups[name] = group_size_of(self.config.group_size, k,
                                                       f"{self.prefix}.{name}")
            if k % p or any(s % p for s in sizes):
                raise ValueError(f"{self.prefix}: expert sizes {k}x{sizes} are not multiples of {p}")
            setattr(layer, f"{name}_qweight", int_param(num_experts, k // p, n))
            setattr(layer, f"{name}_qzeros", int_param(num_experts, k // g, n // p))
            setattr(layer, f"{name}_scales", float_param(num_experts, k // g, n,
                                                         dtype=scale_dtype(dtype)))

    def load_expert(self, layer, param_name, loaded, expert, shard):
        base, _, attr = param_name.partition("_")
        where = f"{self.prefix}.{expert}.{base}.{attr}"
        if base not in layer.moe_shapes or attr not in ("qweight", "qzeros", "scales", "g_idx") \
                or expert is None:
            raise ValueError(f"unexpected expert tensor '{where}' for GPTQ experts")
        k, sizes = layer.moe_shapes[base]
        if attr == "g_idx":
            if loaded.shape != (k,):
                raise ValueError(f"'{where}' has shape {tuple(loaded.shape)}, expected ({k},)")
            g_idx = loaded.to(layer.w2_qweight.device, torch.int32)
            seen = layer.moe_g_idx.setdefault((base, expert), g_idx)
            if not torch.equal(seen, g_idx):
                raise ValueError(f"'{where}' differs between gate_proj and up_proj")
            return
        p = 32 // self.config.bits
        rows = k // p if attr == "qweight" else k // layer.moe_groups[base]
        if loaded.dim() != 2 or loaded.shape[0] != rows:
            raise ValueError(f"'{where}' has shape {tuple(loaded.shape)}: expected {rows} rows "
                             f"(group_size={self.config.group_size}, input size {k})")
        per = p if attr == "qzeros" else 1
        copy_shard(getattr(layer, param_name)[expert], loaded, [s // per for s in sizes], shard,
                   where, dim=1)

    def process_after_loading(self, layer):
        bits = self.config.bits
        for name in layer.moe_shapes:
            qweight = getattr(layer, f"{name}_qweight").data
            scales = getattr(layer, f"{name}_scales").data
            qzeros = getattr(layer, f"{name}_qzeros").data
            e, groups, n = scales.shape
            zeros = unpack_cols(qzeros.reshape(e * groups, -1), bits).reshape(e, groups, n)
            if self.config.checkpoint_format == "gptq":
                zeros = zeros + 1
            g = layer.moe_groups[name]
            perms = [None] * e
            for ex in range(e):
                g_idx = layer.moe_g_idx.get((name, ex))
                if g_idx is not None:
                    perms[ex] = group_perm(g_idx, groups, g, f"{self.prefix}.{ex}.{name}.g_idx")
            perm = None
            if any(pm is not None for pm in perms):
                ident = torch.arange(qweight.shape[1] * (32 // bits), device=qweight.device)
                perm = torch.stack([ident if pm is None else pm for pm in perms])
                for ex in range(e):
                    qweight[ex] = pack_rows(unpack_rows(qweight[ex], bits)[perm[ex]], bits)
            packed = PackedWeight(qweight, scales, zero_bias(zeros, scales, bits), bits, g, perm)
            for attr in ("qweight", "qzeros", "scales"):
                delattr(layer, f"{name}_{attr}")
            layer.register_buffer(f"{name}_packed_qweight", packed.qweight, persistent=False)
            layer.register_buffer(f"{name}_packed_scales", packed.scales, persistent=False)
            layer.register_buffer(f"{name}_packed_bias", packed.bias, persistent=False)
            layer.register_buffer(f"{name}_packed_perm", packed.perm, persistent=False)
            setattr(layer, f"{name}_packed", packed)
        layer.moe_g_idx = {}

    def apply(self, layer, x, router_logits):
        weights, ids = torch_ops.moe_route(router_logits, layer.top_k, layer.renormalize)
        act = torch_ops.silu_and_mul if layer.activation == "silu" else torch_ops.gelu_tanh_and_mul
        rows = ids.numel()
        if x.is_cuda and (rows <= ROWS_PER_EXPERT_GEMV or torch.cuda.is_current_stream_capturing()):
            return self._per_row(layer, x, weights, ids, act)
        return self._per_expert(layer, x, weights, ids, act)

    @staticmethod
    def _per_row(layer, x, weights, ids, act):
        from litevllm_gptq.kernels.gemv import gemv_experts
        t, k = ids.shape
        eids = ids.flatten().to(torch.int32)
        xr = x.repeat_interleave(k, dim=0)
        h = gemv_experts(_permuted(xr, layer.w13_packed, ids), _unpermuted(layer.w13_packed), eids)
        a = act(h)
        y = gemv_experts(_permuted(a, layer.w2_packed, ids), _unpermuted(layer.w2_packed), eids)
        return (y.float().view(t, k, -1) * weights[..., None]).sum(1).to(x.dtype)

    @staticmethod
    def _per_expert(layer, x, weights, ids, act):
        t, k = ids.shape
        flat = ids.flatten()
        order = torch.argsort(flat, stable=True)
        token_of = order // k
        counts = torch.bincount(flat, minlength=layer.num_experts).tolist()
        xs = x.index_select(0, token_of)
        out = torch.empty(t * k, x.shape[1], dtype=x.dtype, device=x.device)
        start = 0
        for e, cnt in enumerate(counts):
            if cnt:
                rows = slice(start, start + cnt)
                h = packed_linear(xs[rows], _expert(layer.w13_packed, e))
                out[rows] = packed_linear(act(h), _expert(layer.w2_packed, e))
                start += cnt
        scaled = out.float() * weights.flatten()[order, None]
        result = torch.zeros(t, x.shape[1], dtype=torch.float32, device=x.device)
        result.index_add_(0, token_of, scaled)
        return result.to(x.dtype)


def _expert(w: PackedWeight, e: int) -> PackedWeight:
    return PackedWeight(w.qweight[e], w.scales[e], None if w.bias is None else w.bias[e], w.bits,
                        w.group_size, None if w.perm is None else w.perm[e])


def _unpermuted(w: PackedWeight) -> PackedWeight:
    return w if w.perm is None else PackedWeight(w.qweight, w.scales, w.bias, w.bits,
                                                 w.group_size)


def _permuted(x, w: PackedWeight, ids):
    """Rows of ``x`` (one per (token, expert)) in their expert's desc_act input order."""
    if w.perm is None:
        return x
    return torch.gather(x, 1, w.perm[ids.flatten()])
