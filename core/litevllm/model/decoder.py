"""The generic Llama-like decoder. Architectures configure or subclass it.

Parameter names follow HF (``model.layers.N.self_attn.o_proj.weight``) so checkpoints load by
name; q/k/v and gate/up are fused through ``packed_modules``.
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from litevllm.attention.backend import AttentionMetadata, AttentionSpec
from litevllm.attention.backend import rotary_store_allowed
from litevllm.kinds import op_takes
from litevllm.model.context import ModelContext
from litevllm.model.layers import RMSNorm, RotaryEmbedding, canonical_activation
from litevllm.model.linear import LiteLinear
from litevllm.ops.torch_ops import FP8_KV_DTYPES
from litevllm.quant.unquantized import copy_shard


class LiteAttention(nn.Module):
    def __init__(self, config, layer_idx: int, ctx: ModelContext, prefix: str):
        super().__init__()
        self.layer_idx = layer_idx
        hidden = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.num_kv_heads = getattr(config, "num_key_value_heads", None) or self.num_heads
        self.head_dim = getattr(config, "head_dim", None) or hidden // self.num_heads
        self.q_size, self.kv_size = self.num_heads * self.head_dim, self.num_kv_heads * self.head_dim
        bias = self.qkv_bias(config)
        self.qkv_proj = LiteLinear(hidden, [self.q_size, self.kv_size, self.kv_size], ctx,
                                   bias=bias, prefix=f"{prefix}.qkv_proj")
        self.o_proj = LiteLinear(self.q_size, hidden, ctx, bias=self.o_bias(config),
                                 prefix=f"{prefix}.o_proj")
        self.rotary_emb = RotaryEmbedding(self.head_dim, config, ctx,
                                          rot_dim=self.rotary_dim(config))
        self.spec = AttentionSpec(self.num_heads, self.num_kv_heads, self.head_dim,
                                  scale=self.scale(config),
                                  sliding_window=self.sliding_window(config, layer_idx),
                                  logit_softcap=getattr(config, "attn_logit_softcapping", None))
        self.attn = ctx.attn
        # (self.spec, self.attn, self.rotary_emb, the spec's kv_stored copy when the rotary op
        # stores k/v, else None)
        self._stored_spec = (None, None, None, None)

    # hooks for subclasses -------------------------------------------------------------------
    def qkv_bias(self, config) -> bool:
        return getattr(config, "attention_bias", False)

    def o_bias(self, config) -> bool:
        return getattr(config, "attention_bias", False)

    def scale(self, config) -> float:
        return self.head_dim ** -0.5

    def sliding_window(self, config, layer_idx: int) -> int | None:
        return None

    def rotary_dim(self, config) -> int:
        """Leading channels of each head that rotary rotates (the rest pass through)."""
        return self.head_dim

    def qk_norms(self) -> tuple[RMSNorm | None, RMSNorm | None]:
        """(q_norm, k_norm): RMSNorms applied to each q/k head before rope, fused into the
        rotary op; (None, None) for none."""
        return None, None

    def load_shard(self, attr: str, loaded: torch.Tensor, shard) -> None:
        """The checkpoint's per-tensor KV-cache scales (``self_attn.k_scale``/``v_scale``, as
        vLLM reads them), kept for a float8 cache; a subclass's own parameters are copied in
        (the loader sends this module every tensor named after it); other tensors ignored."""
        if attr in self._parameters:
            copy_shard(self._parameters[attr], loaded, [], shard, attr)
            return
        if attr not in ("k_scale", "v_scale") or self.attn.kv_cache_dtype not in FP8_KV_DTYPES:
            return
        if loaded.numel() != 1:
            raise ValueError(f"only per-tensor KV scales are supported, got shape "
                             f"{tuple(loaded.shape)}")
        value = loaded.float().item()
        if not value > 0:
            raise ValueError(f"KV scale must be positive, got {value}")
        self.spec = dataclasses.replace(self.spec, **{attr: value})

    # ---------------------------------------------------------------------------------------
    def rotary_stores_kv(self) -> bool:
        """Whether the rotary op stores k/v too (one kernel): the backend allows it, the op
        takes the cache arguments and ``rotary_emb`` is the stock module, unpatched."""
        rope = self.rotary_emb
        return (rotary_store_allowed(self.attn)
                and type(rope).forward is RotaryEmbedding.forward and "forward" not in vars(rope)
                and op_takes(rope.ops.rotary_embedding, "k_cache"))

    def forward(self, positions, x, kv_cache, meta: AttentionMetadata):
        t = x.shape[0]
        q, k, v = self.qkv_proj(x).split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        norms = self.qk_norms()
        spec = self.spec
        key = self._stored_spec
        if key[0] is not spec or key[1] is not self.attn or key[2] is not self.rotary_emb:
            # first call, or the spec (KV scales), backend or rotary_emb was replaced
            self._stored_spec = key = (spec, self.attn, self.rotary_emb, dataclasses.replace(
                spec, kv_stored=True) if self.rotary_stores_kv() else None)
        if key[3] is not None:
            spec = key[3]
            q, k = self.rotary_emb(positions, q, k, *norms, v=v, k_cache=kv_cache[0],
                                   v_cache=kv_cache[1], slot_mapping=meta.slot_mapping,
                                   k_scale=spec.k_scale, v_scale=spec.v_scale)
        else:  # without norms, the (positions, q, k) call a replaced ``rotary_emb`` may take
            q, k = (self.rotary_emb(positions, q, k) if norms == (None, None)
                    else self.rotary_emb(positions, q, k, *norms))
        out = self.attn.forward(spec, q.reshape(t, self.num_heads, self.head_dim),
                                k.reshape(t, self.num_kv_heads, self.head_dim),
                                v.reshape(t, self.num_kv_heads, self.head_dim), kv_cache, meta)
        return self.o_proj(out)


class LiteMLP(nn.Module):
    def __init__(self, config, ctx: ModelContext, prefix: str, intermediate_size: int | None = None):
        super().__init__()
        inter = intermediate_size or config.intermediate_size
        self.gate_up_proj = LiteLinear(config.hidden_size, [inter, inter], ctx,
                                       bias=getattr(config, "mlp_bias", False),
                                       prefix=f"{prefix}.gate_up_proj")
        self.down_proj = LiteLinear(inter, config.hidden_size, ctx,
                                    bias=getattr(config, "mlp_bias", False),
                                    prefix=f"{prefix}.down_proj")
        self.act = canonical_activation(self.activation(config))

    def activation(self, config) -> str:
        return getattr(config, "hidden_act", "silu")

    def forward(self, x):
        return self.down_proj(self.gate_up_proj.forward_gated(x, self.act))


class LiteDecoderLayer(nn.Module):
    attention_cls = LiteAttention
    mlp_cls = LiteMLP
    norm_offset = 0.0

    def __init__(self, config, layer_idx: int, ctx: ModelContext, prefix: str):
        super().__init__()
        eps = getattr(config, "rms_norm_eps", 1e-6)
        self.self_attn = self.attention_cls(config, layer_idx, ctx, f"{prefix}.self_attn")
        self.mlp = self.make_mlp(config, layer_idx, ctx, f"{prefix}.mlp")
        self.input_layernorm = RMSNorm(config.hidden_size, eps, ctx, self.norm_offset)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps, ctx, self.norm_offset)

    def make_mlp(self, config, layer_idx: int, ctx: ModelContext, prefix: str) -> nn.Module:
        return self.mlp_cls(config, ctx, prefix)

    def forward(self, positions, hidden, residual, kv_cache, meta):
        if residual is None:
            residual, hidden = hidden, self.input_layernorm(hidden)
        else:
            hidden, residual = self.input_layernorm(hidden, residual)
        hidden = self.self_attn(positions, hidden, kv_cache, meta)
        hidden, residual = self.post_attention_layernorm(hidden, residual)
        return self.mlp(hidden), residual


class LiteModel(nn.Module):
    layer_cls = LiteDecoderLayer
    norm_offset = 0.0

    def __init__(self, config, ctx: ModelContext, prefix: str = "model"):
        super().__init__()
        # uninitialised (no random init): weights are loaded or drawn by init_dummy_weights
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, _weight=torch.empty(
            config.vocab_size, config.hidden_size, dtype=ctx.dtype, device=ctx.device))
        self.embed_tokens.weight.requires_grad_(False)
        self.layers = nn.ModuleList(self.layer_cls(config, i, ctx, f"{prefix}.layers.{i}")
                                    for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, getattr(config, "rms_norm_eps", 1e-6), ctx,
                            self.norm_offset)

    def embed(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.embed_tokens(input_ids)

    def forward(self, input_ids, positions, kv_caches, meta):
        hidden, residual = self.embed(input_ids), None
        for layer, kv_cache in zip(self.layers, kv_caches):
            hidden, residual = layer(positions, hidden, residual, kv_cache, meta)
        hidden, _ = self.norm(hidden, residual)
        return hidden


def _compose(base: type, name: str, **swaps) -> type:
    """``base`` with some class attributes replaced (``base`` itself when nothing changes)."""
    swaps = {k: v for k, v in swaps.items() if v is not None and getattr(base, k) is not v}
    return type(name, (base,), swaps) if swaps else base


class LiteForCausalLM(nn.Module):
    """Generic causal LM: ``model`` + ``lm_head``.

    Subclasses override only what differs. Swapping one part needs no class chain:
    ``attention_cls``, ``mlp_cls`` and ``layer_cls`` set here are threaded into ``model_cls``.
    """

    model_cls = LiteModel
    layer_cls: type | None = None
    attention_cls: type | None = None
    mlp_cls: type | None = None
    # fused parameter -> the checkpoint modules stacked into it, in shard order
    packed_modules = {"qkv_proj": ["q_proj", "k_proj", "v_proj"],
                      "gate_up_proj": ["gate_proj", "up_proj"]}
    # checkpoint tensors to skip (substring match)
    ignored_tensors = ("rotary_emb.inv_freq",)

    def __init__(self, config, ctx: ModelContext):
        super().__init__()
        self.config, self.ctx = config, ctx
        cls = type(self)
        layer = _compose(cls.layer_cls or cls.model_cls.layer_cls, f"{cls.__name__}Layer",
                         attention_cls=cls.attention_cls, mlp_cls=cls.mlp_cls)
        model_cls = _compose(cls.model_cls, f"{cls.__name__}Model", layer_cls=layer)
        self.model = model_cls(config, ctx)
        self.tie_word_embeddings = bool(getattr(config, "tie_word_embeddings", False))
        if self.tie_word_embeddings:
            self.lm_head = self.model.embed_tokens
        else:
            with torch.device("meta"):  # no random init (see embed_tokens)
                self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
            self.lm_head.weight = nn.Parameter(torch.empty(
                config.vocab_size, config.hidden_size, dtype=ctx.dtype, device=ctx.device),
                requires_grad=False)
        self.final_logit_softcap = getattr(config, "final_logit_softcapping", None)

    def num_kv_layers(self) -> int:
        return len(self.model.layers)

    def kv_shape(self) -> tuple[int, int]:
        """(num_kv_heads, head_dim) of the KV cache."""
        attn = self.model.layers[0].self_attn
        return attn.num_kv_heads, attn.head_dim

    def forward(self, input_ids, positions, kv_caches, meta):
        return self.model(input_ids, positions, kv_caches, meta)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.ctx.ops.linear(hidden, self.lm_head.weight).float()
        if self.final_logit_softcap:
            logits = self.final_logit_softcap * torch.tanh(logits / self.final_logit_softcap)
        return logits

    def map_checkpoint_name(self, name: str) -> str | None:
        """Rename a checkpoint tensor before packing; None skips it."""
        if any(s in name for s in self.ignored_tensors):
            return None
        if self.tie_word_embeddings and name.startswith("lm_head."):
            return None
        return name
