"""Gemma: the generic decoder with scaled embeddings, (1 + w) RMSNorm and a GELU-tanh gated MLP.

head_dim comes from the config (256 in the released sizes) and lm_head is tied to the
embeddings (``tie_word_embeddings`` defaults to true for Gemma configs); the generic decoder
already reads both.
"""
import torch

from litevllm.plugin_api import LiteDecoderLayer, LiteForCausalLM, LiteMLP, LiteModel


def gemma_activation(config) -> str:
    """Gemma's gate activation, read like HF: ``hidden_activation`` first, then ``hidden_act``.

    The released checkpoints say ``"gelu"`` but were trained with the tanh approximation, and
    HF runs them with ``gelu_pytorch_tanh``; so do we.
    """
    name = getattr(config, "hidden_activation", None) or getattr(config, "hidden_act", None)
    return "gelu_pytorch_tanh" if name in (None, "gelu") else name


class GemmaMLP(LiteMLP):
    def activation(self, config):
        # differs: GELU-tanh gate (a legacy "gelu" means the tanh approximation too)
        return gemma_activation(config)


class GemmaDecoderLayer(LiteDecoderLayer):
    mlp_cls = GemmaMLP
    norm_offset = 1.0  # differs: RMSNorm scales by (1 + weight), computed in float32


class GemmaModel(LiteModel):
    layer_cls = GemmaDecoderLayer
    norm_offset = 1.0  # differs: (1 + weight) final norm

    def __init__(self, config, ctx, prefix: str = "model"):
        super().__init__(config, ctx, prefix)
        # HF casts the normalizer to the model dtype (sqrt(3072) = 55.43 becomes 55.5 in bf16)
        normalizer = torch.tensor(config.hidden_size ** 0.5, dtype=ctx.dtype, device="cpu")
        self.normalizer = float(normalizer)

    def embed(self, input_ids):
        # differs: embeddings are scaled by sqrt(hidden_size)
        return self.embed_tokens(input_ids) * self.normalizer


class GemmaForCausalLM(LiteForCausalLM):
    model_cls = GemmaModel
