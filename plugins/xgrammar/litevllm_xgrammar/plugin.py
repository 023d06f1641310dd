from litevllm.plugin_api import hookimpl

PLUGIN_API_VERSION = "1.0"  # the contract this plugin was written against


@hookimpl
def register_structured_output_backends(register):
    register("xgrammar", "litevllm_xgrammar.backend:XGrammarBackend")
