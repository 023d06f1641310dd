"""Tiny random Qwen checkpoints built with transformers (a unique module name: no clash with
other test directories' helpers in one pytest run)."""
import torch

VOCAB = 128
BASE = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=3,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
            rms_norm_eps=1e-6, bos_token_id=None, eos_token_id=None, pad_token_id=None)
MOE = dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32)

# name -> (transformers class prefix, config overrides)
VARIANTS = {
    # a window in config that HF ignores (use_sliding_window false), tied embeddings
    "qwen2": ("Qwen2", dict(tie_word_embeddings=True, sliding_window=4, use_sliding_window=False)),
    # the window really applies, on layers from max_window_layers on
    "qwen2-sliding": ("Qwen2", dict(sliding_window=5, use_sliding_window=True, max_window_layers=1)),
    # shared expert; MoE on every 2nd layer (layer 1 only), no renormalisation
    "qwen2-moe-step2": ("Qwen2Moe", dict(**MOE, shared_expert_intermediate_size=48,
                                         decoder_sparse_step=2, norm_topk_prob=False)),
    # shared expert; MoE everywhere but mlp_only_layers, renormalised top-k
    "qwen2-moe-mlp-only": ("Qwen2Moe", dict(**MOE, shared_expert_intermediate_size=48,
                                            decoder_sparse_step=1, mlp_only_layers=[0],
                                            norm_topk_prob=True)),
    # a shared expert twice the experts' width: folded into the experts as 2 more
    "qwen2-moe-folded": ("Qwen2Moe", dict(**MOE, shared_expert_intermediate_size=64,
                                          decoder_sparse_step=1, norm_topk_prob=False)),
    # head_dim != hidden / heads
    "qwen3": ("Qwen3", dict(head_dim=24, tie_word_embeddings=True)),
    "qwen3-moe": ("Qwen3Moe", dict(**MOE, head_dim=24, norm_topk_prob=True, mlp_only_layers=[2])),
}


def build_hf(variant: str, seed: int = 0):
    """A float32 HF model with weights large enough for decisive logits and routing."""
    import transformers
    prefix, overrides = VARIANTS[variant]
    config = getattr(transformers, f"{prefix}Config")(**{**BASE, **overrides})
    torch.manual_seed(seed)
    model = getattr(transformers, f"{prefix}ForCausalLM")(config).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1:  # norms and biases
                p.copy_((1.0 if "norm" in name else 0.0) + 0.2 * torch.randn_like(p))
            else:  # fan-in scaled, so activations neither vanish nor explode
                p.normal_(0.0, 1.0 / p.shape[-1] ** 0.5)
    return model


def save_hf(variant: str, path, seed: int = 0):
    model = build_hf(variant, seed)
    model.save_pretrained(path)
    return model


def hf_log_softmax(model, token_ids: list[int]) -> torch.Tensor:
    """[len(token_ids), V] teacher-forced log-probabilities."""
    with torch.no_grad():
        return model(torch.tensor([token_ids])).logits[0].float().log_softmax(-1)
