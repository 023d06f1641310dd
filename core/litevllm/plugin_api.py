"""The public plugin API: everything a plugin may import from litevllm.

Compatibility promise (``PLUGIN_API_VERSION`` = MAJOR.MINOR): a minor release only adds names
and optional arguments here; removing or changing the meaning of anything exported below needs a
new major version. The promise also covers the hook specs (``litevllm.hookspecs``), the
attributes and methods the core looks up on plugin classes or their instances (``packed_modules``,
``map_checkpoint_name``, ``route_checkpoint_tensor``, ``load_shard``, ``process_after_loading``,
``set_quantization``, ``tiny_test_config``, ...), the conformance kit ``litevllm.testing``, and the top-level
``litevllm.LLM`` / ``SamplingParams``. Modules not re-exported here are private and may change
at any time; ``tests/test_plugin_boundary.py`` keeps in-repo plugins to this API.

A plugin states the version it was written for as a literal, ``PLUGIN_API_VERSION = "1.0"`` in
its hook module; litevllm refuses it, with a clear message, when the major versions differ or
the plugin needs a newer minor version.

Names load on first use, so a plugin's hook module can import ``hookimpl`` from here without
pulling in torch or model code.
"""
import importlib

from litevllm.hookspecs import hookimpl
from litevllm.version import PLUGIN_API_VERSION

_EXPORTS = {
    "litevllm.attention.backend": ["AttentionBackend", "AttentionMetadata", "AttentionSpec"],
    "litevllm.attention.torch_backend": ["TorchAttentionBackend", "paged_attention_ref"],
    "litevllm.chat": ["chat_prompt_ids"],
    "litevllm.formats.base": ["CheckpointError", "CheckpointFormat"],
    "litevllm.formats.cache_files": ["cache_dir"],
    "litevllm.formats.hf_config": ["config_imports"],
    "litevllm.model.context": ["ModelContext"],
    "litevllm.model.decoder": ["LiteAttention", "LiteDecoderLayer", "LiteForCausalLM", "LiteMLP",
                               "LiteModel"],
    "litevllm.model.layers": ["RMSNorm", "RotaryEmbedding", "act_and_mul_op", "canonical_activation",
                              "rope_parameters"],
    "litevllm.model.linear": ["LiteLinear"],
    "litevllm.model.moe": ["FusedMoE", "route_expert_tensor", "shared_expert_slots"],
    "litevllm.ops": ["torch_ops"],
    "litevllm.quant.base": ["QuantConfig", "QuantMethod"],
    "litevllm.quant.unquantized": ["UnquantizedConfig", "UnquantizedMethod",
                                   "UnquantizedMoEMethod", "copy_shard", "fused_moe_with_shared"],
    "litevllm.plugins": ["PluginError"],
    "litevllm.structured.backend": ["GrammarMatcher", "StructuredOutputBackend", "apply_bitmask"],
    "litevllm.structured.params": ["StructuredOutputsParams"],
    "litevllm.cli": ["engine_options", "build_llm", "fail"],  # for register_commands plugins
    # the engine API for front ends (servers, Ray Serve replicas)
    "litevllm.engine.async_engine": ["AsyncLLMEngine", "EngineDeadError", "EngineOverloadedError"],
    "litevllm.engine.request_check": ["check_request"],
    "litevllm.outputs": ["CompletionOutput", "RequestOutput"],
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
