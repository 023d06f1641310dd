"""End-to-end parity with transformers on CUDA (kernels="auto", which must be Triton): a tiny
random Llama, a Mistral with a window shorter than the prompts and a Qwen3 (q/k norms fused
into the rotary kernel), in float32 (exact greedy,
tight logprobs) and bf16 (tolerances from bf16 rounding), CUDA graphs on and off; the graphs
path against the eager torch-ops engine over whole sequences. See gpu_parity for the checks."""
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from gpu_parity import (Bf16Check, assert_triton_ran, check_float32, generate,  # noqa: E402
                        same_until_tie)
from transformers import LlamaConfig, MistralConfig, Qwen3Config  # noqa: E402

from litevllm import SamplingParams  # noqa: E402

VOCAB = 2048
COMMON = dict(vocab_size=VOCAB, hidden_size=512, intermediate_size=1024, num_hidden_layers=4,
              num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=1024,
              bos_token_id=1, eos_token_id=2)
CONFIGS = {"llama": LlamaConfig(**COMMON), "mistral": MistralConfig(**COMMON, sliding_window=48),
           "qwen3": Qwen3Config(**COMMON, head_dim=64)}
MAX_TOKENS = 32
# logits spread ~8x wider than the random init gives (std ~9 instead of ~1.1): top-2 gaps of
# ~2 instead of ~0.3, and logprobs that tell the tokens apart
LOGIT_SCALE = 8.0


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def checkpoint(request, random_hf_checkpoint):
    return random_hf_checkpoint(request.param, CONFIGS[request.param], norm=(1.0, 0.1),
                                logit_scale=LOGIT_SCALE, attn_implementation="eager")


def prompts():
    g = torch.Generator().manual_seed(1)
    return [torch.randint(3, VOCAB, (n,), generator=g).tolist() for n in (5, 40, 100, 300)]


def graphs_as_asked(llm, enforce_eager):
    assert bool(llm.engine.runner.graphs) is not enforce_eager


@pytest.mark.parametrize("enforce_eager", [False, True], ids=["graphs", "eager"])
def test_float32_matches_hf_exactly(checkpoint, enforce_eager):
    path, hf = checkpoint
    ps = prompts()
    llm, outs = generate(path, ps, MAX_TOKENS, "float32", enforce_eager=enforce_eager)
    assert_triton_ran(llm, "gated_linear")
    graphs_as_asked(llm, enforce_eager)
    for prompt, out in zip(ps, outs):
        check_float32(hf["float32"], prompt, out)


@pytest.mark.parametrize("enforce_eager", [False, True], ids=["graphs", "eager"])
def test_bf16_logprobs_match_hf_bf16(checkpoint, enforce_eager, request):
    if "qwen3" in request.node.callspec.id:
        # transformers' bf16 q/k norms round x * rstd before the weight product (two roundings,
        # ours one) and feed them to the attention logits: H200, 2026-12-02, 0.875 against the
        # 0.803 bound. Float32 exactness and graphs-vs-eager bf16 cover Qwen3.
        pytest.skip("Qwen3 bf16 q/k norms round differently from transformers' bf16")
    path, hf = checkpoint
    ps = prompts()
    llm, outs = generate(path, ps, MAX_TOKENS, "bfloat16", enforce_eager=enforce_eager)
    assert_triton_ran(llm, "gated_linear")
    graphs_as_asked(llm, enforce_eager)
    check = Bf16Check()
    for prompt, out in zip(ps, outs):
        check.add(hf["bfloat16"], prompt, out)
    check.finish()


PROMPTS = [list(range(3, 3 + n)) for n in (9, 33, 70)]


def test_graphs_match_eager_torch_ops(checkpoint):
    """Triton + CUDA graphs (with multi-step decode) against an independent engine path: eager
    torch reference ops and attention, float32, whole sequences."""
    llm, graphs = generate(checkpoint[0], PROMPTS, 48, "float32")
    assert llm.engine.runner.graphs and llm.engine.num_scheduler_steps > 1
    assert_triton_ran(llm, "gated_linear")
    del llm
    ref_llm, ref = generate(checkpoint[0], PROMPTS, 48, "float32", kernels="torch",
                            enforce_eager=True)
    assert set(ref_llm.engine.kernels_in_use.values()) == {"torch"}
    for prompt, got, want in zip(PROMPTS, graphs, ref):
        same_until_tie(got.token_ids, want, f"prompt of {len(prompt)} tokens")


def test_multi_step_decode_matches_single_step(checkpoint):
    """Several graph replays per host sync (num_scheduler_steps) give the same tokens."""
    _, multi = generate(checkpoint[0], PROMPTS, 40, "bfloat16", num_scheduler_steps=8)
    _, single = generate(checkpoint[0], PROMPTS, 40, "bfloat16", num_scheduler_steps=1)
    assert [o.token_ids for o in multi] == [o.token_ids for o in single]


def test_ordered_decode_graphs_match_eager_torch_ops(checkpoint):
    """Decode batches of >= 32 sequences launch longest context first (the Triton backend's
    prepare(), captured with each decode graph): 40 prompts of mixed lengths, float32, give
    the tokens of the eager torch-ops engine."""
    from litevllm_triton.backend import TritonAttentionBackend
    g = torch.Generator().manual_seed(2)
    ps = [torch.randint(3, VOCAB, (n,), generator=g).tolist()
          for n in torch.randint(4, 200, (40,), generator=g).tolist()]
    llm, graphs = generate(checkpoint[0], ps, 24, "float32", max_num_seqs=64)
    runner = llm.engine.runner
    assert runner.attn.prepare_in_graph
    assert max(runner.graphs) >= TritonAttentionBackend.ORDER_MIN_SEQS
    del llm, runner
    _, ref = generate(checkpoint[0], ps, 24, "float32", kernels="torch", enforce_eager=True,
                      max_num_seqs=64)
    for prompt, got, want in zip(ps, graphs, ref):
        same_until_tie(got.token_ids, want, f"prompt of {len(prompt)} tokens")


@pytest.mark.parametrize("in_graph", [True, False])
def test_prepare_in_graph_replays_with_each_step(checkpoint, monkeypatch, in_graph):
    """``prepare_in_graph``: the decode graphs capture the backend's prepare(), so its device
    work runs at every replay; without it, prepare() runs before the capture only."""
    from litevllm_triton.backend import TritonAttentionBackend
    calls = torch.zeros((), dtype=torch.int64, device="cuda")
    prepare = TritonAttentionBackend.prepare

    def counting(self, meta):
        calls.add_(1)  # device work: replayed only where captured
        return prepare(self, meta)
    monkeypatch.setattr(TritonAttentionBackend, "prepare", counting)
    monkeypatch.setattr(TritonAttentionBackend, "prepare_in_graph", in_graph)
    llm, _ = generate(checkpoint[0], [PROMPTS[0]], 1, "bfloat16")  # start-up + one prefill
    assert llm.engine.runner.graphs
    before = int(calls)
    out = llm.generate([{"prompt_token_ids": PROMPTS[1]}],
                       SamplingParams(temperature=0, max_tokens=20, ignore_eos=True))
    assert len(out[0].outputs[0].token_ids) == 20
    if in_graph:  # 19 decode steps replayed, each running prepare()
        assert int(calls) - before >= 19
    else:  # at most the prefill and one decode step outside the graphs
        assert int(calls) - before <= 2


def test_packed_copies_to_cuda():
    """Step inputs go to the GPU as one copy through reused pinned buffers: every view starts
    16-byte aligned (Triton specialises on it) and holds its values, whether the copies queue
    behind a busy GPU (slots not yet free: one-off buffers) or reuse the ring's slots."""
    from litevllm.engine.host_tensors import _PinnedRing, to_device_packed
    dev = torch.device("cuda")
    held = []
    for busy in (True, False):
        if busy:
            torch.cuda._sleep(200_000_000)  # ~0.1 s of GPU work ahead of the copies
        for i in range(2 * _PinnedRing.SLOTS + 3):
            parts = [torch.arange(3) + i, torch.arange(5, dtype=torch.int32) - i,
                     torch.arange(6, dtype=torch.int32).view(2, 3) * i,
                     torch.zeros(0, dtype=torch.int64), torch.tensor(i % 2 == 0)]
            got = to_device_packed(parts, dev)
            for p, g in zip(parts, got):
                assert g.device.type == "cuda" and g.dtype == p.dtype and g.shape == p.shape
                assert g.data_ptr() % 16 == 0
            held.append((parts, got))
        torch.cuda.synchronize()
    for parts, got in held:
        for p, g in zip(parts, got):
            assert torch.equal(p, g.cpu())
