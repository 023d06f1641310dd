from litevllm.plugin_api import hookimpl

PLUGIN_API_VERSION = "1.1"  # the contract this plugin was written against


@hookimpl
def register_quant_methods(register):
    register("fp8", "litevllm_fp8.config:Fp8Config")
