"""Qwen2-MoE (Qwen1.5-MoE): Qwen2 attention, sparse MoE blocks with a gated shared expert."""
from torch import nn

from litevllm.plugin_api import (FusedMoE, LiteDecoderLayer, LiteForCausalLM, LiteLinear, LiteMLP,
                                 route_expert_tensor, shared_expert_slots)

from litevllm_qwen.qwen2 import Qwen2Attention


def is_moe_layer(config, layer_idx: int) -> bool:
    """HF's rule: every ``decoder_sparse_step``-th layer is sparse, except ``mlp_only_layers``."""
    return (layer_idx not in (getattr(config, "mlp_only_layers", None) or [])
            and config.num_experts > 0 and (layer_idx + 1) % config.decoder_sparse_step == 0)


class QwenMoeBlock(nn.Module):
    """Softmax top-k router over fused experts, plus (Qwen2-MoE) a sigmoid-gated shared expert."""

    def __init__(self, config, ctx, prefix):
        super().__init__()
        hidden, experts, inter = config.hidden_size, config.num_experts, config.moe_intermediate_size
        shared = getattr(config, "shared_expert_intermediate_size", 0) or 0
        # differs: the shared expert's gate is one more router row (packed_modules), one GEMV
        # for both; unloaded rows pad the width to a multiple of 8 (cuBLAS is slow on others)
        self.num_experts, pad = experts, -(experts + 1) % 8
        self.gate = LiteLinear(hidden, [experts, 1] + [pad] * bool(pad) if shared else experts,
                               ctx, prefix=f"{prefix}.gate")
        # differs: where the scheme can, the shared expert runs as more experts in the same GEMMs
        fold = shared_expert_slots(ctx, f"{prefix}.experts", shared, inter,
                                   f"{prefix}.shared_expert")
        self.experts = FusedMoE(experts, config.num_experts_per_tok, hidden, inter, ctx,
                                renormalize=bool(getattr(config, "norm_topk_prob", False)),
                                activation=getattr(config, "hidden_act", "silu"),
                                prefix=f"{prefix}.experts", shared_experts=fold,
                                shared_prefix=f"{prefix}.shared_expert")
        self.shared_expert = LiteMLP(config, ctx, f"{prefix}.shared_expert", shared) \
            if shared and not fold else None

    def process_after_loading(self):  # the padding rows (a float router): zeros
        w = getattr(self.gate, "weight", None)
        if w is not None and w.shape[0] > self.num_experts + 1 and w.is_floating_point():
            w.data[self.num_experts + 1:].zero_()

    def forward(self, x):  # the gated shared expert is added in the experts' final sum
        logits, e = self.gate(x), self.num_experts
        if self.shared_expert is None:  # none, or folded (its gate logit: column e)
            return self.experts(x, logits[:, :e + bool(self.experts.shared_experts)])
        return self.experts(x, logits[:, :e], self.shared_expert(x), logits[:, e:e + 1])


class Qwen2MoeAttention(Qwen2Attention):
    def qkv_bias(self, config):
        return getattr(config, "qkv_bias", True)  # differs: configurable (transformers 5)


class Qwen2MoeDecoderLayer(LiteDecoderLayer):
    attention_cls = Qwen2MoeAttention

    def make_mlp(self, config, layer_idx, ctx, prefix):
        # differs: sparse MoE on every decoder_sparse_step-th layer except mlp_only_layers
        if is_moe_layer(config, layer_idx):
            return QwenMoeBlock(config, ctx, prefix)
        return LiteMLP(config, ctx, prefix)


class Qwen2MoeForCausalLM(LiteForCausalLM):
    layer_cls = Qwen2MoeDecoderLayer

    def __init__(self, config, ctx):
        super().__init__(config, ctx)
        if getattr(config, "shared_expert_intermediate_size", 0):
            # differs: the router and the shared expert's gate load into one packed linear
            self.packed_modules = {**self.packed_modules, "gate": ["gate", "shared_expert_gate"]}
        self.folded = {m.experts.shared_prefix: f"{n}.experts" for n, m in self.named_modules()
                       if isinstance(m, QwenMoeBlock) and m.experts.shared_experts}

    def route_checkpoint_tensor(self, module_name, attr):
        # differs: per-expert (and folded shared-expert) tensors load into stacked expert slices
        return route_expert_tensor(module_name, attr, self.folded)
