from litevllm.plugin_api import PLUGIN_API_VERSION, hookimpl  # noqa: F401  (declares the API used)


@hookimpl
def register_models(register):
    register("GemmaForCausalLM", "litevllm_gemma.gemma:GemmaForCausalLM")
    register("Gemma2ForCausalLM", "litevllm_gemma.gemma2:Gemma2ForCausalLM")
