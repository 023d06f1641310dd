"""One Triton kernel per module, each with a typed wrapper that validates its inputs."""
from litevllm_triton.kernels.act_and_mul import gelu_tanh_and_mul, silu_and_mul
from litevllm_triton.kernels.decode_attention import decode_attention, decode_order
from litevllm_triton.kernels.positions_and_slots import positions_and_slots
from litevllm_triton.kernels.prefill_attention import prefill_attention
from litevllm_triton.kernels.reshape_and_cache import reshape_and_cache
from litevllm_triton.kernels.rms_norm import rms_norm
from litevllm_triton.kernels.rotary import rotary_embedding
from litevllm_triton.kernels.sampling import sample

__all__ = ["decode_attention", "decode_order", "gelu_tanh_and_mul", "positions_and_slots",
           "prefill_attention",
           "reshape_and_cache", "rms_norm", "rotary_embedding", "sample", "silu_and_mul"]
