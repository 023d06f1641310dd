"""FP8 quantization for LitevLLM (``quant_method: fp8`` checkpoints and ``quantization="fp8"``)."""
