"""Tiny quantized Llama checkpoints in the exact on-disk layouts, written independently of the
plugin's own packing code, plus the float32 transformers model holding the same dequantized
weights (the reference)."""
from __future__ import annotations

import json
import zlib

import torch

from litevllm import LLM, SamplingParams
from litevllm.testing import logprob_rows

SIZES = dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-6,
             tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
AWQ_ORDER = (0, 2, 4, 6, 1, 3, 5, 7)  # slot i of an int32 holds column AWQ_ORDER[i]


def to_int32(x: torch.Tensor) -> torch.Tensor:
    x = x.to(torch.int64) & 0xFFFFFFFF
    return torch.where(x >= 2**31, x - 2**32, x).to(torch.int32)


def pack_k(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """[K, N] codes -> int32 [K / p, N]: row k in slot k % p of row k // p (GPTQ qweight)."""
    p = 32 // bits
    out = torch.zeros(codes.shape[0] // p, codes.shape[1], dtype=torch.int64)
    for i in range(p):
        out |= codes[i::p].to(torch.int64) << (bits * i)
    return to_int32(out)


def pack_n(codes: torch.Tensor, bits: int, order=None) -> torch.Tensor:
    """[R, N] codes -> int32 [R, N / p] packed along N; slot i holds column order[i]."""
    p = 32 // bits
    order = order or tuple(range(p))
    out = torch.zeros(codes.shape[0], codes.shape[1] // p, dtype=torch.int64)
    for i in range(p):
        out |= codes[:, order[i]::p].to(torch.int64) << (bits * i)
    return to_int32(out)


def quantize(w: torch.Tensor, bits: int, group: int, sym: bool, g_idx: torch.Tensor,
             zmin: int = 0):
    """``w [K, N]`` -> codes [K, N], zeros [K/G, N], fp16 scales [K/G, N], dequantized [K, N]."""
    k, n = w.shape
    groups = k // group
    top = 2**bits - 1
    scales = torch.empty(groups, n)
    zeros = torch.empty(groups, n, dtype=torch.int64)
    for gi in range(groups):
        rows = w[g_idx == gi]
        if sym:
            s = rows.abs().amax(0).clamp(min=1e-5) / (2 ** (bits - 1) - 1)
            z = torch.full((n,), 2 ** (bits - 1), dtype=torch.int64)
        else:
            lo, hi = rows.amin(0).clamp(max=0), rows.amax(0).clamp(min=0)
            s = ((hi - lo) / top).clamp(min=1e-5)
            z = torch.round(-lo / s).to(torch.int64).clamp(zmin, top)
        scales[gi], zeros[gi] = s, z
    scales = scales.half()
    s_rows, z_rows = scales.float()[g_idx], zeros[g_idx]
    codes = torch.clamp(torch.round(w / s_rows) + z_rows, 0, top).to(torch.int64)
    return codes, zeros, scales, (codes - z_rows).float() * s_rows


def random_llama(vocab_size: int, seed: int = 0):
    """A float32 transformers Llama with well-spread random weights."""
    import transformers
    cfg = transformers.LlamaConfig(vocab_size=vocab_size, **SIZES)
    torch.manual_seed(seed)
    return random_init(transformers.LlamaForCausalLM(cfg), seed)


def random_init(model, seed: int = 0):
    """Redraw every weight: matrices ~ N(0, 1/fan_in), 1-D tensors = init + N(0, 0.1)."""
    model = model.float().eval()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            noise = torch.randn(p.shape, generator=gen)
            p.copy_(p + 0.1 * noise if p.dim() == 1 else noise / p.shape[-1] ** 0.5)
    return model


def make_quant_llama(path, vocab_size: int, scheme: str, seed=0, **kw):
    """Save a quantized tiny Llama at ``path``; return the float32 HF model with the same
    dequantized weights."""
    model = random_llama(vocab_size, seed)
    names = [f"model.layers.{i}.{lin}" for i in range(model.config.num_hidden_layers)
             for lin in LINEARS]
    return write_quantized(model, path, names, scheme, seed=seed, **kw)


def write_quantized(model, path, names, scheme: str, **kw):
    """Quantize the linears ``names`` of ``model`` (in place, to their dequantized values) and
    save the checkpoint in ``scheme``'s on-disk layout with its quantization_config."""
    tensors = {k: v.contiguous() for k, v in model.state_dict().items()}
    deq = save_quantized(tensors, model.config, type(model).__name__, path, names, scheme, **kw)
    with torch.no_grad():
        for name, w in deq.items():
            model.get_submodule(name).weight.copy_(w)
    return model


def save_quantized(tensors, config, arch, path, names, scheme: str, *, bits=4, group_size=128,
                   sym=True, desc_act=False, checkpoint_format="gptq", zero_point=True, skip=(),
                   seed=0) -> dict:
    """Replace ``<name>.weight`` in the checkpoint dict ``tensors`` by ``scheme``'s tensors, save
    it with config.json at ``path``; return ``{name: dequantized weight [N, K]}``."""
    from safetensors.torch import save_file
    deq_out = {}
    for name in names:
        if any(s in name for s in skip):
            continue
        w = tensors.pop(f"{name}.weight").t().contiguous()  # [K, N]
        k = w.shape[0]
        g = k if group_size == -1 else group_size
        g_idx = torch.arange(k) // g
        if desc_act:  # one order per layer input: q/k/v (and gate/up) share theirs
            shared = name.replace("k_proj", "q_proj").replace("v_proj", "q_proj") \
                .replace("up_proj", "gate_proj")
            order = torch.Generator().manual_seed(seed + zlib.crc32(shared.encode()))
            g_idx = g_idx[torch.randperm(k, generator=order)]
        codes, zeros, scales, deq = quantize(w, bits, g, sym, g_idx,
                                             zmin=1 if checkpoint_format == "gptq" else 0)
        deq_out[name] = deq.t().contiguous()
        if scheme == "gptq":
            stored = zeros - 1 if checkpoint_format == "gptq" else zeros
            tensors[f"{name}.qweight"] = pack_k(codes, bits)
            tensors[f"{name}.qzeros"] = pack_n(stored, bits)
            tensors[f"{name}.g_idx"] = g_idx.to(torch.int32)
        else:
            tensors[f"{name}.qweight"] = pack_n(codes, bits, AWQ_ORDER)
            if zero_point:
                tensors[f"{name}.qzeros"] = pack_n(zeros, bits, AWQ_ORDER)
        tensors[f"{name}.scales"] = scales
    path.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path / "model.safetensors"))
    cfg_dict = config.to_dict()
    cfg_dict["architectures"] = [arch]
    cfg_dict["torch_dtype"] = "float32"
    if scheme == "gptq":
        q = dict(quant_method="gptq", bits=bits, group_size=group_size, desc_act=desc_act, sym=sym,
                 checkpoint_format=checkpoint_format, damp_percent=0.01, true_sequential=True)
    else:
        q = dict(quant_method="awq", bits=bits, group_size=group_size, zero_point=zero_point,
                 version="gemm")
    if skip:
        q["modules_to_not_convert"] = list(skip)
    cfg_dict["quantization_config"] = q
    (path / "config.json").write_text(json.dumps(cfg_dict, indent=2))
    return deq_out


# -- comparing the engine with the reference -----------------------------------------------
PROMPTS = [[5, 17, 99, 3, 250, 42, 7, 8, 9, 10, 11, 120, 130, 140], [300, 12, 77], [64]]
VOCAB = 384
MAX_TOKENS = 8


def generate(path, **llm_kwargs):
    llm = LLM(str(path), block_size=8, **llm_kwargs)
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True,
                            logprobs=VOCAB, prompt_logprobs=VOCAB)
    return llm.generate([{"prompt_token_ids": p} for p in PROMPTS], params)


def assert_matches_hf(outputs, hf, atol=2e-4, rtol=1e-4, tokens=True):
    """Greedy tokens are HF's argmax and logprobs match HF's log_softmax (teacher forced)."""
    for prompt, out in zip(PROMPTS, outputs):
        gen = out.outputs[0].token_ids
        with torch.no_grad():
            ref = hf(torch.tensor([prompt + gen])).logits[0].float().log_softmax(-1)
        n = len(prompt)
        if tokens:
            assert gen == ref[n - 1:-1].argmax(-1).tolist()
        torch.testing.assert_close(logprob_rows(out.outputs[0].logprobs, VOCAB), ref[n - 1:-1],
                                   atol=atol, rtol=rtol)
        if n > 1:
            torch.testing.assert_close(logprob_rows(out.prompt_logprobs[1:], VOCAB), ref[:n - 1],
                                       atol=atol, rtol=rtol)
