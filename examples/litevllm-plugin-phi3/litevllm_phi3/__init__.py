"""Phi-3 for LitevLLM: the model in ``litevllm_phi3.model``, hooks in ``litevllm_phi3.plugin``."""
__version__ = "0.1.0"
