"""The public plugin API: everything a plugin may import from litevllm.

Compatibility promise (``PLUGIN_API_VERSION`` = MAJOR.MINOR): a minor release only adds names
and optional arguments here; removing or changing the meaning of anything exported below needs a
new major version. Modules not re-exported here are private and may change at any time.

Names load on first use, so a plugin's hook module can import ``hookimpl`` from here without
pulling in torch or model code.
"""
import importlib

from litevllm.hookspecs import hookimpl
from litevllm.version import PLUGIN_API_VERSION

_EXPORTS = {
    "litevllm.attention.backend": ["AttentionBackend", "AttentionMetadata", "AttentionSpec"],
    "litevllm.attention.torch_backend": ["TorchAttentionBackend", "paged_attention_ref"],
    "litevllm.formats.base": ["CheckpointError", "CheckpointFormat"],
    "litevllm.model.context": ["ModelContext"],
    "litevllm.model.decoder": ["LiteAttention", "LiteDecoderLayer", "LiteForCausalLM", "LiteMLP",
                               "LiteModel"],
    "litevllm.model.layers": ["RMSNorm", "RotaryEmbedding", "act_and_mul_op", "rope_parameters"],
    "litevllm.model.linear": ["LiteLinear"],
    "litevllm.model.moe": ["FusedMoE", "route_expert_tensor"],
    "litevllm.ops": ["torch_ops"],
    "litevllm.quant.base": ["QuantConfig", "QuantMethod"],
}
_WHERE = {name: module for module, names in _EXPORTS.items() for name in names}

__all__ = ["hookimpl", "PLUGIN_API_VERSION", *_WHERE]


def __getattr__(name):
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"litevllm.plugin_api has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name) if name != "torch_ops" \
        else importlib.import_module("litevllm.ops.torch_ops")
    globals()[name] = value
    return value


def __dir__():
    return __all__
