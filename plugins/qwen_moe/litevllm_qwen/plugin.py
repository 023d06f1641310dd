from litevllm.plugin_api import hookimpl

PLUGIN_API_VERSION = "1.1"  # the contract this plugin was written against


@hookimpl
def register_models(register):
    register("Qwen2ForCausalLM", "litevllm_qwen.qwen2:Qwen2ForCausalLM")
    register("Qwen2MoeForCausalLM", "litevllm_qwen.qwen2_moe:Qwen2MoeForCausalLM")
    register("Qwen3ForCausalLM", "litevllm_qwen.qwen3:Qwen3ForCausalLM")
    register("Qwen3MoeForCausalLM", "litevllm_qwen.qwen3_moe:Qwen3MoeForCausalLM")
