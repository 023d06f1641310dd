"""Hook implementations. Registration is lazy ("module:attr"): importing this imports no Triton."""
from litevllm.plugin_api import hookimpl

PLUGIN_API_VERSION = "1.0"  # the contract this plugin was written against

OPS = ("rms_norm", "rotary_embedding", "silu_and_mul", "gelu_tanh_and_mul", "reshape_and_cache",
       "fused_moe")
DEVICES = ("cuda",)  # torch's device type on NVIDIA and AMD (ROCm) GPUs alike


@hookimpl
def register_ops(register):
    for op in OPS:
        register(op, f"litevllm_triton.ops:{op}", provider="triton", devices=DEVICES)


@hookimpl
def register_attention_backends(register):
    register("triton", "litevllm_triton.backend:TritonAttentionBackend", devices=DEVICES)
