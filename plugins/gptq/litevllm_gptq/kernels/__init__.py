"""Triton kernels over ``PackedWeight`` (imported only on CUDA or under TRITON_INTERPRET=1)."""
