"""Triton kernels and attention backend for LitevLLM.

Importing this package is cheap: Triton is only imported by ``kernels``, ``ops`` and ``backend``.
"""
__version__ = "0.1.0"
