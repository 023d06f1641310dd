"""Entry point of litevllm-plugin-gguf: registrations only; the format and demo modules load lazily."""
from litevllm.plugin_api import hookimpl

PLUGIN_API_VERSION = "1.0"


@hookimpl
def register_checkpoint_formats(register):
    register("gguf", "litevllm_gguf.format:GGUFFormat")


@hookimpl
def register_model_aliases(register):
    register("smollm2", "litevllm_gguf.demo:fetch_smollm2")


@hookimpl
def register_quant_methods(register):
    register("gguf", "litevllm_gguf.quant:GGUFQuantConfig")
