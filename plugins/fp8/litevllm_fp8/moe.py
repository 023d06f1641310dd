"""FP8 experts for FusedMoE: ``w13`` fp8 [E, 2I, H] (gate rows, then up) and ``w2`` fp8
[E, H, I] as uint8 bits, with float32 scales ``w13_scale`` [E, 2I, KB] / ``w2_scale`` [E, H, KB]
per row (KB = 1) or per row and block of columns.

- online ``quantization="fp8"``: each expert's weight is quantized per output channel on load;
- fp8 checkpoints: per-expert ``weight`` plus ``weight_scale`` (per tensor) or
  ``weight_scale_inv`` (block-wise), which core's FusedMoE routes to ``w13_<attr>`` /
  ``w2_<attr>``; an ``input_scale`` is not used (the experts run weight-only).
GPUs run the fp8-weight fused-MoE kernel; the CPU dequantizes and runs the fused_moe op.
"""
from __future__ import annotations

import torch
from torch import nn

from litevllm.plugin_api import fused_moe_with_shared

from litevllm_fp8 import reference as ref
from litevllm_fp8.linear import DUMMY_RANGE
from litevllm_fp8.path import TORCH, pick_path

SCALE_ATTR = {"tensor": "weight_scale", "block": "weight_scale_inv"}


class Fp8MoEMethod:
    def __init__(self, config):
        self.config = config

    def create_weights(self, layer, num_experts, hidden, intermediate, dtype):
        mode = self.config.mode
        layer.fp8_block_k = self.config.block[1] if mode == "block" else None
        layer.fp8_loaded = False
        for name, rows, cols in (("w13", 2 * intermediate, hidden), ("w2", hidden, intermediate)):
            setattr(layer, name, _param(num_experts, rows, cols, dtype=torch.uint8))
            if mode == "online":
                layer.register_buffer(f"{name}_scale", torch.empty(num_experts, rows, 1),
                                      persistent=False)
            elif mode == "tensor":
                setattr(layer, f"{name}_weight_scale", _param(num_experts, rows))
            else:
                kb = ref.cdiv(cols, layer.fp8_block_k)
                setattr(layer, f"{name}_weight_scale_inv", _param(num_experts, rows, kb))

    # loading -----------------------------------------------------------------------------------
    def load_expert(self, layer, param_name, loaded, expert, shard):
        """One expert's gate (shard 0) / up (1) of w13, or its w2; ``expert`` None: all."""
        mode = self.config.mode
        base, _, attr = param_name.partition("_")
        label = f"{param_name}[{'all' if expert is None else expert}]" + \
            ("" if shard is None else f" shard {shard}")
        if base not in ("w13", "w2") or attr not in ("", SCALE_ATTR.get(mode), "input_scale"):
            raise ValueError(f"unexpected tensor '{label}' for fp8 experts ({mode} scales)")
        if attr == "input_scale":
            return  # the experts run weight-only
        weight = getattr(layer, base)
        target = weight if not attr else getattr(layer, param_name)
        if expert is not None:
            target = target[expert]
        rows = weight.shape[1]
        if base == "w13" and shard is not None:
            rows //= 2
            target = _rows(target, shard * rows, rows, attr)
        if not attr:
            self._load_weight(layer, base, target, loaded, expert, shard, rows, label)
        elif attr == "weight_scale":
            if loaded.numel() != 1:
                raise ValueError(f"tensor for '{label}' has shape {tuple(loaded.shape)}, "
                                 f"expected a scalar (per-tensor scale)")
            target.fill_(float(loaded))
        else:  # weight_scale_inv [ceil(rows/bn), ceil(K/bk)] -> one row per weight row
            bn = self.config.block[0]
            want = (*(() if expert is not None else (weight.shape[0],)), ref.cdiv(rows, bn),
                    target.shape[-1])
            if tuple(loaded.shape) != want:
                raise ValueError(f"tensor for '{label}' has shape {tuple(loaded.shape)}, "
                                 f"expected {want}")
            target.copy_(loaded.repeat_interleave(bn, -2).narrow(-2, 0, rows))

    def _load_weight(self, layer, base, target, loaded, expert, shard, rows, label):
        if tuple(loaded.shape) != tuple(target.shape):
            raise ValueError(f"tensor for '{label}' has shape {tuple(loaded.shape)}, expected "
                             f"{tuple(target.shape)}")
        if self.config.mode != "online":
            if loaded.dtype != ref.FP8:
                raise ValueError(f"'{label}' has dtype {loaded.dtype}, expected float8_e4m3fn")
            target.copy_(loaded.view(torch.uint8))
        else:
            if not loaded.is_floating_point() or loaded.dtype == ref.FP8:
                raise ValueError(f"{label}: online fp8 needs a 16/32-bit checkpoint, got "
                                 f"{loaded.dtype}")
            q, s = ref.quantize_rows(loaded.to(target.device).reshape(-1, loaded.shape[-1]))
            target.copy_(q.view(torch.uint8).view(target.shape))
            scale = getattr(layer, f"{base}_scale")
            if expert is not None:
                scale = scale[expert]
            if shard is not None:
                scale = _rows(scale, shard * rows, rows, "")
            scale.copy_(s.view(scale.shape))
        layer.fp8_loaded = True

    def process_after_loading(self, layer):
        mode = self.config.mode
        if not layer.fp8_loaded:  # load_format="dummy"
            for name in ("w13", "w2"):
                w = getattr(layer, name)
                rnd = torch.empty(w.shape, device=w.device).uniform_(-ref.FP8_MAX, ref.FP8_MAX)
                w.data.copy_(rnd.to(ref.FP8).view(torch.uint8))
                scale = getattr(layer, f"{name}_scale" if mode == "online"
                                else f"{name}_{SCALE_ATTR[mode]}")
                scale.data.fill_(DUMMY_RANGE / ref.FP8_MAX)
            layer.fp8_loaded = True
        if mode == "tensor":
            layer.w13_scale = layer.w13_weight_scale.data[..., None].contiguous()
            layer.w2_scale = layer.w2_weight_scale.data[..., None].contiguous()
        elif mode == "block":
            layer.w13_scale = layer.w13_weight_scale_inv.data
            layer.w2_scale = layer.w2_weight_scale_inv.data
        layer.fp8_path = pick_path(layer.w13.device)

    # running -----------------------------------------------------------------------------------
    fuses_shared_expert = True  # apply takes shared / shared_gate (FusedMoE.forward)

    def apply(self, layer, x, router_logits, shared=None, shared_gate=None):
        if layer.fp8_path == TORCH:
            w13 = _dequant(layer.w13, layer.w13_scale, layer.fp8_block_k, x.dtype)
            w2 = _dequant(layer.w2, layer.w2_scale, layer.fp8_block_k, x.dtype)
            return fused_moe_with_shared(layer.ops.fused_moe, x, w13, w2, router_logits,
                                         layer.top_k, layer.renormalize, layer.activation,
                                         shared=shared, shared_gate=shared_gate)
        from litevllm_fp8.kernels.fused_moe_fp8 import fused_moe_fp8
        return fused_moe_fp8(x, layer.w13, layer.w13_scale, layer.w2, layer.w2_scale,
                             router_logits, layer.top_k, layer.renormalize, layer.activation,
                             block_k=layer.fp8_block_k, shared=shared, shared_gate=shared_gate)


def _param(*shape, dtype=torch.float32) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape, dtype=dtype), requires_grad=False)


def _rows(t: torch.Tensor, start: int, n: int, attr: str) -> torch.Tensor:
    """Rows [start, start + n) of a weight or scale (one expert's or stacked): the row dim is
    the last for per-tensor scales ([.., rows]), the last but one otherwise."""
    return t.narrow(-1 if attr == "weight_scale" else -2, start, n)


def _dequant(w, scale, block_k, dtype):
    e, rows, cols = w.shape
    return ref.dequantize(w.reshape(e * rows, cols), scale.reshape(e * rows, -1),
                          block_k or cols, dtype).view(e, rows, cols)
