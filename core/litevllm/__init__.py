"""LitevLLM: a small, fast LLM inference engine in Python and Triton."""
from litevllm.version import PLUGIN_API_VERSION, __version__

__all__ = ["LLM", "SamplingParams", "StructuredOutputsParams", "AsyncLLMEngine", "PLUGIN_API_VERSION",
           "__version__"]


def __getattr__(name):  # keep `import litevllm` (and `lite --help`) light
    if name == "LLM":
        from litevllm.llm import LLM
        return LLM
    if name == "SamplingParams":
        from litevllm.sampling_params import SamplingParams
        return SamplingParams
    if name == "AsyncLLMEngine":
        from litevllm.engine.async_engine import AsyncLLMEngine
        return AsyncLLMEngine
    if name == "StructuredOutputsParams":
        from litevllm.structured.params import StructuredOutputsParams
        return StructuredOutputsParams
    raise AttributeError(f"module 'litevllm' has no attribute {name!r}")
