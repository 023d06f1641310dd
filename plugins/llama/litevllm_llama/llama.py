"""Llama 2 / 3 and TinyLlama: exactly the generic decoder."""
from litevllm.plugin_api import LiteForCausalLM


class LlamaForCausalLM(LiteForCausalLM):
    pass
