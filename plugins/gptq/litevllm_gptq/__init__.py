"""GPTQ / AWQ int4 and online int8 weight-only quantization for LitevLLM."""
__version__ = "0.1.0"
