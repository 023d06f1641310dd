"""GGUF (llama.cpp) checkpoints for LitevLLM."""
__version__ = "0.1.0"
