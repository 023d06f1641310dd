"""Phi-3 (``Phi3ForCausalLM``: Phi-3-mini/medium 4k, Phi-3.5-mini, Phi-4-mini) on the generic
decoder, written only against ``litevllm.plugin_api``.

Differences from Llama, from transformers' ``modeling_phi3.py``:

- q/k/v ship as one ``qkv_proj`` tensor and gate/up as one ``gate_up_proj`` tensor. These
  are the names and layouts of the generic decoder's fused layers, so each tensor loads whole
  (the loader passes ``shard=None``); nothing to declare.
- Rotary embedding may cover only the first ``partial_rotary_factor`` of each head
  (Phi-4-mini uses 0.75); the rest passes through unrotated.
- ``sliding_window`` (when set) applies to every layer.
- Only the default rope is supported. The 128k variants use ``longrope``, whose frequencies
  switch with the sequence length; they are refused with a clear error.
"""
from litevllm.plugin_api import LiteAttention, LiteForCausalLM, rope_parameters

SUPPORTED_ROPE_TYPES = ("default",)


class Phi3Attention(LiteAttention):
    def rotary_dim(self, config):  # differs: partial rotary
        factor = rope_parameters(config).get("partial_rotary_factor",
                                             getattr(config, "partial_rotary_factor", 1.0))
        return int(self.head_dim * factor)

    def sliding_window(self, config, layer_idx):  # differs: a window on every layer
        return getattr(config, "sliding_window", None)


class Phi3ForCausalLM(LiteForCausalLM):
    attention_cls = Phi3Attention
    # Tiny configs for `lite plugins check` / litevllm.testing: overrides on top of a tiny
    # transformers Phi3Config. The second one exercises partial rotary, the sliding window
    # and tied embeddings.
    tiny_test_config = [{}, {"partial_rotary_factor": 0.5, "sliding_window": 8,
                             "tie_word_embeddings": True}]

    def __init__(self, config, ctx):
        rope_type = rope_parameters(config)["rope_type"]
        if rope_type not in SUPPORTED_ROPE_TYPES:
            raise ValueError(f"Phi-3 rope_type '{rope_type}' is not supported by "
                             f"litevllm-plugin-phi3 (supported: {', '.join(SUPPORTED_ROPE_TYPES)});"
                             f" the 128k-context 'longrope' variants need it, use a 4k variant")
        super().__init__(config, ctx)
