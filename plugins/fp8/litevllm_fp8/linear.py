"""The fp8 linear method: fp8 weights (uint8 bits) [N, K] and float32 scales per output row.

Checkpoint tensors per shard (q/k/v, gate/up each bring their own): ``weight`` float8_e4m3fn,
``weight_scale`` (per tensor, or per channel) or ``weight_scale_inv`` [ceil(n/bn), ceil(K/bk)]
(block-wise), and ``input_scale`` (static activations; the max over a fused layer's shards).
Every scale is kept per output row, so fused shards keep their own scales exactly.
Online mode quantizes each bf16 shard per output channel as it arrives.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from litevllm.plugin_api import QuantMethod, copy_shard

from litevllm_fp8 import reference as ref
from litevllm_fp8.path import TORCH, W8A8, pick_path

DUMMY_RANGE = 0.02  # dummy weights span +-0.02 after dequant, like core's dummy init
# calibration scales some fp8 checkpoints keep on projections; the loader moves the k_proj/v_proj
# KV-cache ones to the attention (model/loader.py KV_SCALE_ALIASES), others are not used
KV_SCALES = ("output_scale", "k_scale", "v_scale")


def _param(*shape, dtype=torch.float32) -> nn.Parameter:
    return nn.Parameter(torch.empty(*shape, dtype=dtype), requires_grad=False)


class Fp8LinearMethod(QuantMethod):
    def __init__(self, config):
        self.config = config

    def create_weights(self, layer, input_size, output_sizes, dtype):
        cfg, n = self.config, sum(output_sizes)
        layer.weight = _param(n, input_size, dtype=torch.uint8)
        layer.group_k, layer.in_scale, layer.fp8_loaded = input_size, None, False
        if cfg.mode == "tensor":
            layer.weight_scale = _param(n)
            if cfg.static_input:
                layer.input_scale = _param(len(output_sizes))
        elif cfg.mode == "block":
            layer.group_k = cfg.block[1]
            layer.weight_scale_inv = _param(n, ref.cdiv(input_size, cfg.block[1]))
        else:  # online: scales are computed, not loaded
            layer.register_buffer("w_scale", torch.empty(n, 1), persistent=False)

    # loading -----------------------------------------------------------------------------------
    def load_shard(self, layer, param_name, loaded, shard):
        cfg, sizes = self.config, layer.output_sizes
        label = f"{layer.prefix}.{param_name}" + ("" if shard is None else f" (shard {shard})")
        rows = slice(sum(sizes[:shard]), sum(sizes[:shard + 1])) if shard is not None \
            else slice(0, sum(sizes))
        n = rows.stop - rows.start
        if param_name == "weight":
            if cfg.mode == "online":
                if not loaded.is_floating_point() or loaded.dtype == ref.FP8:
                    raise ValueError(f"{label}: online fp8 needs a 16/32-bit checkpoint, got "
                                     f"{loaded.dtype}")
                if tuple(loaded.shape) != (n, layer.input_size):
                    raise ValueError(f"tensor for '{label}' has shape {tuple(loaded.shape)}, "
                                     f"expected {(n, layer.input_size)}")
                q, scale = ref.quantize_rows(loaded.to(layer.weight.device))
                layer.weight.data[rows] = q.view(torch.uint8)
                layer.w_scale[rows] = scale
            else:
                if loaded.dtype != ref.FP8:
                    raise ValueError(f"{label} has dtype {loaded.dtype}, expected float8_e4m3fn "
                                     f"(quant_method fp8)")
                copy_shard(layer.weight, loaded.view(torch.uint8), sizes, shard, label)
            layer.fp8_loaded = True
        elif param_name == "weight_scale" and cfg.mode == "tensor":
            if loaded.numel() == 1:  # per tensor (per shard)
                layer.weight_scale.data[rows] = loaded.reshape(())
            elif loaded.numel() == n and loaded.dim() <= 2 and loaded.shape[0] == n:
                layer.weight_scale.data[rows] = loaded.reshape(n)  # per channel
            else:
                raise ValueError(f"{label} has shape {tuple(loaded.shape)}, expected a scalar "
                                 f"or [{n}] (per-tensor or per-channel scale)")
        elif param_name == "weight_scale_inv" and cfg.mode == "block":
            bn, bk = cfg.block
            want = (ref.cdiv(n, bn), ref.cdiv(layer.input_size, bk))
            if tuple(loaded.shape) != want:
                raise ValueError(f"{label} has shape {tuple(loaded.shape)}, expected {want} "
                                 f"(ceil(N/{bn}), ceil(K/{bk}))")
            layer.weight_scale_inv.data[rows] = loaded.repeat_interleave(bn, 0)[:n]
        elif param_name == "input_scale":
            if loaded.numel() != 1:
                raise ValueError(f"{label} has shape {tuple(loaded.shape)}, expected a scalar")
            if cfg.static_input:
                idx = slice(None) if shard is None else shard
                layer.input_scale.data[idx] = loaded.reshape(())
            # dynamic scheme: a checkpoint's calibration scale is not used
        elif param_name in KV_SCALES:
            pass
        else:
            expected = {"tensor": "weight_scale", "block": "weight_scale_inv",
                        "online": "no scale"}[cfg.mode]
            raise ValueError(f"unexpected tensor {label} for an fp8 layer (the config's scheme "
                             f"expects {expected})")

    def process_after_loading(self, layer):
        cfg = self.config
        if not layer.fp8_loaded:
            self._dummy(layer)
        if cfg.mode == "tensor":
            layer.w_scale = layer.weight_scale.data.float()[:, None].contiguous()
            if cfg.static_input:
                layer.in_scale = layer.input_scale.data.float().max().reshape(1)
        elif cfg.mode == "block":
            layer.w_scale = layer.weight_scale_inv.data.float().contiguous()
        layer.fp8_path = pick_path(layer.weight.device)
        # W8A8 with block scales needs whole 128-column groups of activations
        k = layer.input_size
        layer.w8a8_ok = cfg.mode != "block" or (k % layer.group_k == 0
                                                and layer.group_k % 128 == 0)

    @staticmethod
    @torch.no_grad()
    def _dummy(layer):
        """``load_format="dummy"``: random fp8 weights, scales giving +-DUMMY_RANGE."""
        w = torch.empty(layer.weight.shape, device=layer.weight.device)
        layer.weight.data.copy_(w.uniform_(-ref.FP8_MAX, ref.FP8_MAX).to(ref.FP8)
                                .view(torch.uint8))
        scale = DUMMY_RANGE / ref.FP8_MAX
        for name in ("weight_scale", "weight_scale_inv", "w_scale"):
            if hasattr(layer, name):
                getattr(layer, name).data.fill_(scale)
        if hasattr(layer, "input_scale"):
            layer.input_scale.data.fill_(1.0 / ref.FP8_MAX)
        layer.fp8_loaded = True

    # running -----------------------------------------------------------------------------------
    def apply(self, layer, x, bias):
        lead, k = x.shape[:-1], x.shape[-1]
        x2 = x.reshape(-1, k)
        if layer.fp8_path == TORCH:
            w = ref.dequantize(layer.weight, layer.w_scale, layer.group_k, x.dtype)
            y = F.linear(x2, w, bias)
        else:
            from litevllm_fp8.ops import fp8_linear
            y = fp8_linear(x2, layer.weight, layer.w_scale, layer.group_k, layer.in_scale, bias,
                           layer.fp8_path, layer.w8a8_ok and layer.fp8_path == W8A8)
        return y.reshape(*lead, y.shape[-1])
