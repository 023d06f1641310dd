"""`quant_method: fp8` checkpoints and online `quantization="fp8"`: which layers, which scales."""
from __future__ import annotations

from litevllm.plugin_api import QuantConfig, UnquantizedMethod

# fused LiteLinear layers -> the checkpoint projections stacked in them
FUSED = {"qkv_proj": ("q_proj", "k_proj", "v_proj"), "gate_up_proj": ("gate_proj", "up_proj")}
# MoE routers stay in the model's dtype (tiny, and top-k choice is sensitive to their error)
ROUTERS = ("gate", "shared_expert_gate")


def _matches(name: str, entry: str) -> bool:
    """``entry`` (a module name or a suffix of one, e.g. ``lm_head`` or ``mlp.down_proj``)
    names module ``name`` or one of its parents."""
    return f".{entry}." in f".{name}."


class Fp8Config(QuantConfig):
    """``mode``: "tensor" (per-tensor ``weight_scale``), "block" (``weight_scale_inv`` per
    ``block`` = [bn, bk]) or "online" (bf16 checkpoint, per-channel scales computed at load)."""

    name = "fp8"

    def __init__(self, mode: str = "online", static_input: bool = False,
                 block: tuple[int, int] | None = None, ignored: tuple[str, ...] = ()):
        self.mode, self.static_input, self.block, self.ignored = mode, static_input, block, ignored

    @classmethod
    def from_hf(cls, quant_config: dict) -> "Fp8Config":
        qc = dict(quant_config or {})
        if not qc:
            return cls("online")
        method = qc.get("quant_method", "fp8")
        if method != "fp8":
            raise ValueError(f"quantization 'fp8' cannot read a checkpoint quantized with "
                             f"'{method}' (drop --quantization to use the checkpoint's own)")
        fmt = qc.get("fmt", "e4m3")
        if fmt not in ("e4m3", "float8_e4m3fn"):
            raise ValueError(f"fp8 checkpoint: only e4m3 weights are supported, got fmt={fmt!r}")
        scheme = qc.get("activation_scheme", "dynamic")
        if scheme not in ("dynamic", "static"):
            raise ValueError(f"fp8 checkpoint: activation_scheme must be 'dynamic' or 'static', "
                             f"got {scheme!r}")
        block = qc.get("weight_block_size")
        if block is not None:
            if not (isinstance(block, (list, tuple)) and len(block) == 2
                    and all(isinstance(b, int) and b > 0 for b in block)):
                raise ValueError(f"fp8 checkpoint: weight_block_size must be two positive ints, "
                                 f"got {block!r}")
            if scheme == "static":
                raise ValueError("fp8 checkpoint: block-wise weights need activation_scheme "
                                 "'dynamic'")
        ignored = tuple(qc.get("ignored_layers") or ()) + tuple(qc.get("modules_to_not_convert")
                                                                  or ())
        return cls("block" if block else "tensor", scheme == "static",
                   tuple(block) if block else None, ignored)

    def is_ignored(self, prefix: str) -> bool:
        parent, _, leaf = prefix.rpartition(".")
        names = [f"{parent}.{s}" for s in FUSED[leaf]] if leaf in FUSED else [prefix]
        hits = [any(_matches(n, e) for e in self.ignored) for n in names]
        if any(hits) and not all(hits):
            skipped = [n for n, h in zip(names, hits) if h]
            raise ValueError(f"fp8: {prefix} fuses {', '.join(names)} but only "
                             f"{', '.join(skipped)} is left unquantized; all or none must be")
        return all(hits)

    def method_for(self, prefix):
        if prefix.rpartition(".")[2] in ROUTERS or self.is_ignored(prefix):
            return UnquantizedMethod()
        from litevllm_fp8.linear import Fp8LinearMethod
        return Fp8LinearMethod(self)

    def moe_method_for(self, prefix):
        """FP8 experts (core's FusedMoE routes per-expert scale tensors to ``w13_<attr>``)."""
        from litevllm_fp8.moe import Fp8MoEMethod
        return Fp8MoEMethod(self)

