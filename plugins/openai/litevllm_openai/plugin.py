from litevllm.plugin_api import hookimpl

PLUGIN_API_VERSION = "1.0"  # the contract this plugin was written against


@hookimpl
def register_commands(register):
    register("litevllm_openai.cli:serve")  # imported only when `lite serve` runs
