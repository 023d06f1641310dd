from litevllm.attention.backend import AttentionBackend, AttentionMetadata, AttentionSpec

__all__ = ["AttentionBackend", "AttentionMetadata", "AttentionSpec"]
