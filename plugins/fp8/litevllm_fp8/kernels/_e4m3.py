"""Decoding e4m3 bits without fp8 hardware: GPUs below compute capability 8.9 cannot use
Triton's float8e4nv type, so the weight-only kernels read the uint8 bits and rebuild the value
as float16 (exact: e4m3 has 3 mantissa bits and a small exponent range)."""
import torch
import triton
import triton.language as tl

from litevllm_fp8.path import has_fp8_tensor_cores

E4M3_BITS_SCALE = 256.0  # _e4m3_bits_to_f16 returns the value times 2**-8


def native_fp8(device: torch.device) -> bool:
    """float8e4nv loads work (FP8 GPUs, and the CPU interpreter)."""
    return device.type != "cuda" or has_fp8_tensor_cores(device)


@triton.jit
def e4m3_bits_to_f16(b):
    """uint8 e4m3 bits -> float16 equal to the e4m3 value * 2**-8 (sign, exponent and
    mantissa shifted into place; e4m3 subnormals land on float16 subnormals)."""
    b16 = b.to(tl.uint16)
    bits = ((b16 & 0x7F) << 7) | ((b16 & 0x80) << 8)
    return bits.to(tl.float16, bitcast=True)
