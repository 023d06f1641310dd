"""kv_cache_dtype="fp8": a float8 e4m3 KV cache with per-layer scales (torch reference, CPU).

The expectation is transformers with its attention fed K/V through the same fp8 round trip
(x / scale saturated to +-448, cast to float8 e4m3 by torch, times scale;
litevllm.testing.fp8_kv): no engine code. Both sides compute in float32 on the same weights;
what differs is the summation order (~1e-6), which flips an fp8 rounding only when a value sits
on a rounding boundary. Logprobs then agree to 2e-4 (the float32 HF-parity tolerance of
test_parity_llama), while the same engine differs from unquantized HF by far more: the cache
really holds fp8.
"""
import json

import pytest
import torch
from safetensors.torch import load_file, save_file

from litevllm import LLM, SamplingParams
from litevllm.testing import logprob_rows
from litevllm.testing.fp8_kv import hf_with_fp8_kv

FP8 = torch.float8_e4m3fn
PROMPTS = [[5, 17, 99, 3, 250, 42, 7, 8, 9, 10, 11, 120, 130, 140, 150, 160, 170, 180, 190, 200],
           [300, 12, 77], list(range(1, 31))]
MAX_TOKENS = 10


def _engine(path, **kw):
    opts = dict(dtype="float32", device="cpu", kernels="torch", block_size=8,
                max_model_len=256, seed=0)
    return LLM(str(path), **{**opts, **kw})


def _generate(llm, vocab, prompts=PROMPTS):
    params = SamplingParams(temperature=0, max_tokens=MAX_TOKENS, ignore_eos=True,
                            logprobs=vocab)
    return llm.generate([{"prompt_token_ids": p} for p in prompts], params)


def _check_against(hf, outs, vocab, prompts=PROMPTS):
    """Greedy tokens are the reference's argmax (teacher forced), logprobs within 2e-4."""
    for prompt, out in zip(prompts, outs):
        gen = out.outputs[0].token_ids
        with torch.no_grad():
            ref = hf(torch.tensor([prompt + gen])).logits[0].log_softmax(-1)
        ref = ref[len(prompt) - 1:-1]
        assert gen == ref.argmax(-1).tolist()
        torch.testing.assert_close(logprob_rows(out.outputs[0].logprobs, vocab), ref,
                                   atol=2e-4, rtol=1e-4)


def _max_distance(hf, outs, vocab):
    worst = 0.0
    for prompt, out in zip(PROMPTS, outs):
        gen = out.outputs[0].token_ids
        with torch.no_grad():
            ref = hf(torch.tensor([prompt + gen])).logits[0].log_softmax(-1)[len(prompt) - 1:-1]
        worst = max(worst, float((logprob_rows(out.outputs[0].logprobs, vocab) - ref).abs().max()))
    return worst


def test_fp8_cache_matches_hf_with_fp8_kv(llama_dir, hf_model, vocab_size):
    hf_fp8 = hf_with_fp8_kv(llama_dir)
    for prefix_caching in (False, True):
        llm = _engine(llama_dir, kv_cache_dtype="fp8", enable_prefix_caching=prefix_caching)
        outs = _generate(llm, vocab_size)
        caches = llm.engine.runner.kv_caches
        assert caches[0].dtype == FP8 and caches[0].element_size() == 1
        assert bool((caches[0].view(torch.uint8) != 0).any())  # K/V were written as fp8 bytes
        _check_against(hf_fp8, outs, vocab_size)
    # a prefix hit reads fp8 blocks an earlier request wrote (3 full blocks of PROMPTS[2])
    again = [PROMPTS[2][:24] + [100, 101, 102]]
    hit = _generate(llm, vocab_size, again)
    assert hit[0].num_cached_tokens == 24
    _check_against(hf_fp8, hit, vocab_size, again)
    assert _max_distance(hf_model(llama_dir), outs, vocab_size) > 0.05  # really quantized


@pytest.mark.parametrize("layout", ["self_attn.{x}_scale", "self_attn.{x}_proj.output_scale",
                                    "self_attn.{x}_proj.{x}_scale"])
def test_checkpoint_kv_scales_are_used(llama_dir, tmp_path, vocab_size, layout):
    """``model.layers.N.self_attn.k_scale``/``v_scale`` (vLLM's layout), or the same scales on
    k_proj/v_proj (older AutoFP8 layouts), set the layer's scales for an fp8 cache and are
    ignored by an "auto" cache."""
    path = tmp_path / "scaled"
    path.mkdir()
    for f in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        if (llama_dir / f).is_file():
            (path / f).write_text((llama_dir / f).read_text())
    tensors = load_file(llama_dir / "model.safetensors")
    layers = json.loads((llama_dir / "config.json").read_text())["num_hidden_layers"]
    f32 = [float(torch.tensor(x)) for x in (0.01, 0.004, 0.02, 0.012)]  # as stored: float32
    scales = {i: (f32[2 * i], f32[2 * i + 1]) for i in range(layers)}
    for i, (ks, vs) in scales.items():
        tensors[f"model.layers.{i}." + layout.format(x="k")] = torch.tensor(ks)
        tensors[f"model.layers.{i}." + layout.format(x="v")] = torch.tensor(vs)
    save_file(tensors, path / "model.safetensors")
    llm = _engine(path, kv_cache_dtype="fp8")
    layer_scales = {i: (layer.self_attn.spec.k_scale, layer.self_attn.spec.v_scale)
                    for i, layer in enumerate(llm.engine.model.model.layers)}
    assert layer_scales == scales
    outs = _generate(llm, vocab_size)
    _check_against(hf_with_fp8_kv(llama_dir, scales=scales), outs, vocab_size)
    # scales 1.0 would be another model
    assert _max_distance(hf_with_fp8_kv(llama_dir), outs, vocab_size) > 0.05
    auto = _engine(path)
    assert {layer.self_attn.spec.k_scale for layer in auto.engine.model.model.layers} == {1.0}


def test_fp8_doubles_the_blocks(llama_dir):
    """Bytes per block follow the element size: 2x the blocks of a 16-bit cache."""
    kw = dict(dtype="bfloat16", cpu_kv_cache_gib=0.001)
    half = _engine(llama_dir, **kw).engine
    fp8 = _engine(llama_dir, kv_cache_dtype="fp8", **kw).engine
    assert fp8.runner.bytes_per_block() * 2 == half.runner.bytes_per_block()
    assert fp8.num_blocks == 2 * half.num_blocks
    assert half.runner.kv_caches[0].dtype == torch.bfloat16
    # the same memory budget holds twice the tokens
    assert fp8.runner.kv_caches[0].nbytes == pytest.approx(half.runner.kv_caches[0].nbytes,
                                                           rel=0.01)


def test_copy_blocks_copies_fp8_bytes(llama_dir):
    runner = _engine(llama_dir, kv_cache_dtype="fp8", cpu_kv_cache_gib=0.001).engine.runner
    for cache in runner.kv_caches:
        cache.view(torch.uint8).copy_(torch.randint(0, 120, cache.shape, dtype=torch.uint8))
    before = [c.clone() for c in runner.kv_caches]
    runner.copy_blocks([(3, 7), (5, 1)])
    for old, new in zip(before, runner.kv_caches):
        assert torch.equal(new[:, 7].view(torch.uint8), old[:, 3].view(torch.uint8))
        assert torch.equal(new[:, 1].view(torch.uint8), old[:, 5].view(torch.uint8))


def test_bad_kv_cache_dtype_is_one_line_error(llama_dir):
    with pytest.raises(ValueError, match=r"^kv_cache_dtype must be one of auto, fp8, fp8_e4m3; "
                                         r"got 'int4'$"):
        _engine(llama_dir, kv_cache_dtype="int4")


def test_backend_without_fp8_says_so():
    from litevllm.attention.backend import AttentionBackend

    class Plain(AttentionBackend):
        name = "plain"
    with pytest.raises(ValueError, match="^attention backend 'plain' cannot store a "
                                         "float8_e4m3fn KV cache on cpu; use kv_cache_dtype 'auto'$"):
        Plain(torch.device("cpu"), torch.float16, 16, FP8)
    assert Plain(torch.device("cpu"), torch.float16, 16).kv_cache_dtype == torch.float16


def test_cli_option(llama_dir, tmp_path):
    from click.testing import CliRunner

    from litevllm.cli import cli
    r = CliRunner().invoke(cli, ["run", "--model", str(llama_dir), "--prompt", "x",
                                 "--kv-cache-dtype", "int4"])
    assert r.exit_code == 2 and "Invalid value for '--kv-cache-dtype': 'int4' is not one of " \
                                "'auto', 'fp8', 'fp8_e4m3'" in r.output
    out = tmp_path / "tp.json"
    r = CliRunner().invoke(cli, ["bench", "throughput", "--model", str(llama_dir), "--load-format",
                                 "dummy", "--num-prompts", "4", "--min-len", "4", "--max-len", "24",
                                 "--kv-cache-dtype", "fp8", "--json-out", str(out)])
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["kv_cache_dtype"] == "float8_e4m3fn" and data["output_tok_per_s"] > 0


def test_three_argument_backend_still_constructs(llama_dir, monkeypatch):
    """A backend written before kv_cache_dtype, with its own (device, dtype, block_size)
    constructor, still runs with the default "auto" cache (plugin API 1.0)."""
    from litevllm.attention.torch_backend import TorchAttentionBackend
    from litevllm.engine import engine

    class Legacy(TorchAttentionBackend):
        def __init__(self, device, dtype, block_size):
            super().__init__(device, dtype, block_size)
    monkeypatch.setattr(engine, "pick_attention_backend", lambda *a: Legacy)
    llm = _engine(llama_dir)
    assert isinstance(llm.engine.runner.attn, Legacy)
    assert llm.engine.runner.kv_caches[0].dtype == torch.float32
    assert len(_generate(llm, 16, [[5, 6, 7]])[0].outputs[0].token_ids) == MAX_TOKENS


def test_three_argument_backend_refuses_fp8_in_one_line(llama_dir, monkeypatch):
    """The same backend asked for a float8 cache: a one-line refusal naming it, no TypeError."""
    from litevllm.attention.torch_backend import TorchAttentionBackend
    from litevllm.engine import engine

    class Legacy(TorchAttentionBackend):
        name = "legacy"

        def __init__(self, device, dtype, block_size):
            super().__init__(device, dtype, block_size)
    monkeypatch.setattr(engine, "pick_attention_backend", lambda *a: Legacy)
    with pytest.raises(ValueError, match="attention backend 'legacy' cannot store a "
                                         "float8_e4m3fn KV cache"):
        _engine(llama_dir, kv_cache_dtype="fp8")
