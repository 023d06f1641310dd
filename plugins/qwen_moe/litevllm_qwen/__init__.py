"""Qwen architectures for LitevLLM. Importing this package imports no model code."""
__version__ = "0.1.0"
