from litevllm.plugin_api import PLUGIN_API_VERSION, hookimpl  # noqa: F401  (declares the API used)


@hookimpl
def register_models(register):
    register("LlamaForCausalLM", "litevllm_llama.llama:LlamaForCausalLM")
    register("MistralForCausalLM", "litevllm_llama.mistral:MistralForCausalLM")
