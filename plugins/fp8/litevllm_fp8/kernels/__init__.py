"""Triton kernels, one family per module: activation quantization, the W8A8 GEMM, the
weight-only (dequant in registers) GEMM and the fp8-expert fused-MoE GEMM."""
