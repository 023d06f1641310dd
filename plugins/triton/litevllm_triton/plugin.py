"""Hook implementations. Registration is lazy ("module:attr"): importing this imports no Triton."""
import os

from litevllm.plugin_api import hookimpl

PLUGIN_API_VERSION = "1.5"  # the contract this plugin was written against

OPS = ("rms_norm", "rotary_embedding", "silu_and_mul", "gelu_tanh_and_mul", "reshape_and_cache",
       "fused_moe", "linear", "gated_linear", "sample", "positions_and_slots")
DEVICES = ("cuda",)  # torch's device type on NVIDIA and AMD (ROCm) GPUs alike
# Triton's CPU interpreter (TRITON_INTERPRET=1, for tests) runs the kernels on CPU tensors, but
# only when asked for by name (kernels="triton"): "auto" keeps the torch path on the CPU
EXPLICIT = ("cpu",) if os.environ.get("TRITON_INTERPRET") == "1" else ()


@hookimpl
def register_ops(register):
    for op in OPS:
        register(op, f"litevllm_triton.ops:{op}", provider="triton", devices=DEVICES,
                 explicit_devices=EXPLICIT)


@hookimpl
def register_attention_backends(register):
    register("triton", "litevllm_triton.backend:TritonAttentionBackend", devices=DEVICES,
             explicit_devices=EXPLICIT)
