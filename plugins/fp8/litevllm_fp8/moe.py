"""FP8 experts for FusedMoE (online ``quantization="fp8"``): each expert's gate/up/down weight
is quantized per output channel as it is loaded. GPUs run the fp8-weight fused-MoE kernel;
the CPU dequantizes and runs the model's fused_moe op."""
from __future__ import annotations

import torch
from torch import nn

from litevllm_fp8 import reference as ref
from litevllm_fp8.linear import DUMMY_RANGE
from litevllm_fp8.path import TORCH, pick_path


class Fp8MoEMethod:
    """``w13`` fp8 [E, 2I, H] (gate rows, then up) and ``w2`` fp8 [E, H, I] as uint8 bits;
    float32 per-row scales ``w13_scale`` [E, 2I] and ``w2_scale`` [E, H]."""

    def __init__(self, config):
        self.config = config

    def create_weights(self, layer, num_experts, hidden, intermediate, dtype):
        def u8(*shape):
            return nn.Parameter(torch.empty(*shape, dtype=torch.uint8), requires_grad=False)
        layer.w13 = u8(num_experts, 2 * intermediate, hidden)
        layer.w2 = u8(num_experts, hidden, intermediate)
        layer.register_buffer("w13_scale", torch.empty(num_experts, 2 * intermediate),
                              persistent=False)
        layer.register_buffer("w2_scale", torch.empty(num_experts, hidden), persistent=False)
        layer.fp8_loaded = False

    def load_expert(self, layer, param_name, loaded, expert, shard):
        """One expert's gate (0) / up (1) of w13, or its w2; ``expert`` None: all experts."""
        if param_name not in ("w13", "w2"):
            raise ValueError(f"unexpected tensor '{param_name}' for fp8 experts")
        weight, scale = getattr(layer, param_name), getattr(layer, f"{param_name}_scale")
        if expert is not None:
            weight, scale = weight[expert], scale[expert]
        rows = weight.shape[-2]
        if param_name == "w13" and shard is not None:
            rows //= 2
            weight = weight.narrow(-2, shard * rows, rows)
            scale = scale.narrow(-1, shard * rows, rows)
        label = f"{param_name}[{'all' if expert is None else expert}]" + \
            ("" if shard is None else f" shard {shard}")
        if tuple(loaded.shape) != tuple(weight.shape):
            raise ValueError(f"tensor for '{label}' has shape {tuple(loaded.shape)}, expected "
                             f"{tuple(weight.shape)}")
        if not loaded.is_floating_point() or loaded.dtype == ref.FP8:
            raise ValueError(f"{label}: online fp8 needs a 16/32-bit checkpoint, got "
                             f"{loaded.dtype}")
        flat = loaded.to(weight.device).reshape(-1, loaded.shape[-1])
        q, s = ref.quantize_rows(flat)
        weight.copy_(q.view(torch.uint8).view(weight.shape))
        scale.copy_(s.view(scale.shape))
        layer.fp8_loaded = True

    def process_after_loading(self, layer):
        if not layer.fp8_loaded:  # load_format="dummy"
            for name in ("w13", "w2"):
                w = getattr(layer, name)
                rnd = torch.empty(w.shape, device=w.device).uniform_(-ref.FP8_MAX, ref.FP8_MAX)
                w.data.copy_(rnd.to(ref.FP8).view(torch.uint8))
                getattr(layer, f"{name}_scale").fill_(DUMMY_RANGE / ref.FP8_MAX)
            layer.fp8_loaded = True
        layer.fp8_path = pick_path(layer.w13.device)

    def apply(self, layer, x, router_logits):
        if layer.fp8_path == TORCH:
            w13 = ref.as_fp8(layer.w13).float().mul(layer.w13_scale[..., None]).to(x.dtype)
            w2 = ref.as_fp8(layer.w2).float().mul(layer.w2_scale[..., None]).to(x.dtype)
            return layer.ops.fused_moe(x, w13, w2, router_logits, layer.top_k,
                                       layer.renormalize, layer.activation)
        from litevllm_fp8.kernels.fused_moe_fp8 import fused_moe_fp8
        return fused_moe_fp8(x, layer.w13, layer.w13_scale, layer.w2, layer.w2_scale,
                             router_logits, layer.top_k, layer.renormalize, layer.activation)
