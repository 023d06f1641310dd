"""The public plugin API: everything a plugin may import from litevllm.

Compatibility promise (``PLUGIN_API_VERSION`` = MAJOR.MINOR): a minor release only adds names
and optional arguments here; removing or changing the meaning of anything exported below needs a
new major version. Modules not re-exported here are private and may change at any time.
"""
from litevllm.attention.backend import AttentionBackend, AttentionMetadata, AttentionSpec
from litevllm.formats.base import CheckpointError, CheckpointFormat
from litevllm.hookspecs import hookimpl
from litevllm.model.context import ModelContext
from litevllm.model.decoder import (LiteAttention, LiteDecoderLayer, LiteForCausalLM, LiteMLP,
                                    LiteModel)
from litevllm.model.layers import RMSNorm, RotaryEmbedding, act_and_mul_op, rope_parameters
from litevllm.model.linear import LiteLinear
from litevllm.ops import torch_ops
from litevllm.quant.base import QuantConfig, QuantMethod
from litevllm.version import PLUGIN_API_VERSION

__all__ = [
    "AttentionBackend", "AttentionMetadata", "AttentionSpec", "CheckpointError",
    "CheckpointFormat", "hookimpl", "ModelContext", "LiteAttention", "LiteDecoderLayer",
    "LiteForCausalLM", "LiteMLP", "LiteModel", "RMSNorm", "RotaryEmbedding", "act_and_mul_op",
    "rope_parameters", "LiteLinear", "torch_ops", "QuantConfig", "QuantMethod",
    "PLUGIN_API_VERSION",
]
