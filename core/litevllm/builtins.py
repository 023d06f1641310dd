"""Built-in registrations, made through the same hooks as any plugin."""
from litevllm.hookspecs import hookimpl

_TORCH_OPS = ("rms_norm", "rotary_embedding", "silu_and_mul", "gelu_tanh_and_mul",
              "reshape_and_cache", "fused_moe", "linear", "gated_linear", "sample",
              "positions_and_slots")


@hookimpl
def register_ops(register):
    for op in _TORCH_OPS:
        register(op, f"litevllm.ops.torch_ops:{op}", provider="torch", devices=("*",), priority=-100)


@hookimpl
def register_attention_backends(register):
    register("torch", "litevllm.attention.torch_backend:TorchAttentionBackend", devices=("*",),
             priority=-100)


@hookimpl
def register_checkpoint_formats(register):
    register("safetensors", "litevllm.formats.safetensors:SafetensorsFormat", priority=-100)


@hookimpl
def register_quant_methods(register):
    register("none", "litevllm.quant.unquantized:UnquantizedConfig")


@hookimpl
def register_commands(register):
    register("litevllm.bench:bench")
