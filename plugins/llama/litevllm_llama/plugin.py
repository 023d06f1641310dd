from litevllm.plugin_api import hookimpl

PLUGIN_API_VERSION = "1.0"  # the contract this plugin was written against


@hookimpl
def register_models(register):
    register("LlamaForCausalLM", "litevllm_llama.llama:LlamaForCausalLM")
    register("MistralForCausalLM", "litevllm_llama.mistral:MistralForCausalLM")
