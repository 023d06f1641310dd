from litevllm.quant.base import QuantConfig, QuantMethod

__all__ = ["QuantConfig", "QuantMethod"]
