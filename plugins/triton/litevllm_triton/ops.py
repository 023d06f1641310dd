"""Drop-in ops with the signatures of ``litevllm.ops.torch_ops``, backed by Triton kernels.

One difference: ``rotary_embedding`` rotates q and k in place (and returns them), where the
reference returns new tensors.
"""
from litevllm_triton.kernels import (gelu_tanh_and_mul, reshape_and_cache, rms_norm,
                                     rotary_embedding, silu_and_mul)
from litevllm_triton.kernels.fused_moe import fused_moe

__all__ = ["fused_moe", "gelu_tanh_and_mul", "reshape_and_cache", "rms_norm",
           "rotary_embedding", "silu_and_mul"]
