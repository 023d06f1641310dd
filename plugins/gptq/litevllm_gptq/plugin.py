"""Entry point of litevllm-plugin-gptq: registrations only (no torch or Triton imported here)."""
from litevllm.plugin_api import hookimpl

PLUGIN_API_VERSION = "1.0"  # the contract this plugin was written against


@hookimpl
def register_quant_methods(register):
    register("gptq", "litevllm_gptq.gptq:GPTQConfig")
    register("awq", "litevllm_gptq.awq:AWQConfig")
    register("int8", "litevllm_gptq.int8:Int8Config")
