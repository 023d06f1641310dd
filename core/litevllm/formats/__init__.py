from litevllm.formats.base import CheckpointFormat

__all__ = ["CheckpointFormat"]
