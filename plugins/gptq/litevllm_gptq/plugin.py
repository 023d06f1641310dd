from litevllm.plugin_api import hookimpl

PLUGIN_API_VERSION = "1.0"  # the contract this plugin was written against


@hookimpl
def register_quant_methods(register):
    pass  # GPTQ, AWQ and int8 register here
