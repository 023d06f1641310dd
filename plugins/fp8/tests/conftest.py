"""Kernel tests run through Triton's CPU interpreter unless a GPU run was asked for (the
variable is read when a kernel is decorated, so before litevllm_fp8.kernels is imported)."""
import os

os.environ.setdefault("TRITON_INTERPRET", "1")
