"""Gemma and Gemma 2 architectures for LitevLLM."""
