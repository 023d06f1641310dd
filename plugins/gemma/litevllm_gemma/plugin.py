from litevllm.plugin_api import hookimpl

PLUGIN_API_VERSION = "1.0"  # the contract this plugin was written against


@hookimpl
def register_models(register):
    register("GemmaForCausalLM", "litevllm_gemma.gemma:GemmaForCausalLM")
    register("Gemma2ForCausalLM", "litevllm_gemma.gemma2:Gemma2ForCausalLM")
