"""Piecewise CUDA graphs (prefill, chunked/mixed and speculative verify steps) against eager
runs of the same engine, float32 with the Triton kernels: greedy tokens identical (up to a
float32 tie), prompt and sample logprobs close, for a dense, an MoE, a sliding-window +
soft-cap and a plugin-provided model."""
import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from gpu_parity import F32_ATOL, TOP, generate, same_until_tie  # noqa: E402

from litevllm import LLM, SamplingParams  # noqa: E402
from litevllm.engine.piecewise import PiecewiseGraphs  # noqa: E402
from litevllm.plugins import PluginError  # noqa: E402
from litevllm.testing import build_checkpoint, model_class, tiny_config  # noqa: E402

SIZES = dict(vocab_size=512, hidden_size=128, num_hidden_layers=3, max_position_embeddings=2048)
ARCHS = {"LlamaForCausalLM": {}, "Qwen2MoeForCausalLM": {},
         "Gemma2ForCausalLM": dict(sliding_window=32, query_pre_attn_scalar=32,
                                   attn_logit_softcapping=50.0, final_logit_softcapping=30.0),
         "Phi3ForCausalLM": {}}


@pytest.fixture(scope="module", params=sorted(ARCHS))
def checkpoint(request, tmp_path_factory):
    arch = request.param
    try:
        model_class(arch)
    except PluginError:
        pytest.skip(f"no installed plugin provides {arch}")
    path = tmp_path_factory.mktemp(arch)
    build_checkpoint(arch, tiny_config(arch, **SIZES, **ARCHS[arch]), path)
    return path


def prompts(lengths):
    g = torch.Generator().manual_seed(3)
    return [torch.randint(3, 500, (n,), generator=g).tolist() for n in lengths]


def piecewise_steps(llm) -> list[int]:
    """Token counts of the steps that replay piecewise graphs from now on (filled as the engine
    steps); buckets the start-up budget left are captured when first met."""
    pw = llm.engine.runner.piecewise
    assert pw is not None and not pw.disabled and pw.pieces
    assert set(pw.pieces) <= set(pw.buckets) and max(pw.buckets) in pw.pieces  # largest first
    ran, forward = [], pw.forward

    def counted(input_ids, *args):
        hidden = forward(input_ids, *args)
        if hidden is not None:
            ran.append(input_ids.shape[0])
        return hidden
    pw.forward = counted
    return ran


def close_outputs(got, want, where):
    """Same tokens up to a tie; logprobs of the shared prefix within F32_ATOL."""
    same_until_tie(got.token_ids, want, where)
    for i, (a, b) in enumerate(zip(got.token_ids, want.token_ids)):
        if a != b:
            break
        assert abs(got.logprobs[i][a] - want.logprobs[i][b]) <= F32_ATOL, f"{where}, position {i}"


@pytest.mark.parametrize("whole", [True, False], ids=["whole-step", "pieces"])
def test_chunked_mixed_batches_match_eager(checkpoint, whole):
    """64-token steps: prompt chunks share steps with other sequences' decodes. The Triton
    backend takes whole-step graphs; "pieces" swaps in the piecewise graphs other backends
    get (attention eager between them)."""
    ps = prompts([5, 40, 100, 300, 77])
    opts = dict(max_num_batched_tokens=64, max_model_len=1024, max_piecewise_graph_tokens=2048)
    llm = LLM(str(checkpoint), kernels="auto", dtype="float32", max_num_seqs=8,
              gpu_memory_utilization=0.3, **opts)
    runner = llm.engine.runner
    assert runner.piecewise.whole
    if not whole:
        runner.piecewise = PiecewiseGraphs(runner.model, runner.attn, runner.device, 64)
        runner.piecewise.capture(runner.kv_caches, runner._graph_meta(1))
        assert not runner.piecewise.whole
    steps = piecewise_steps(llm)
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True, logprobs=TOP)
    got = [o.outputs[0] for o in llm.generate([{"prompt_token_ids": p} for p in ps], params)]
    assert len(steps) > 5 and max(steps) == 64
    del llm
    _, want = generate(checkpoint, ps, 24, "float32", enforce_eager=True, **opts)
    for p, g, w in zip(ps, got, want):
        close_outputs(g, w, f"prompt of {len(p)}")


def test_long_prefill_prompt_logprobs_match_eager(checkpoint):
    """Whole-prompt steps (one bucket each) and every prompt row's logits."""
    ps = prompts([1000, 333])
    params = SamplingParams(temperature=0, max_tokens=8, ignore_eos=True, prompt_logprobs=0)

    def run(**kw):
        llm = LLM(str(checkpoint), kernels="auto", dtype="float32", max_model_len=1100,
                  max_num_seqs=4, gpu_memory_utilization=0.3,
                  **{"max_piecewise_graph_tokens": 2048, **kw})
        steps = piecewise_steps(llm) if llm.engine.runner.piecewise else []
        return steps, llm.generate([{"prompt_token_ids": p} for p in ps], params)
    steps, got = run()
    assert steps and max(steps) >= 1000
    _, want = run(max_piecewise_graph_tokens=0)
    for p, g, w in zip(ps, got, want):
        assert g.outputs[0].token_ids == w.outputs[0].token_ids
        a = torch.tensor([d[t] for d, t in zip(g.prompt_logprobs[1:], p[1:])])
        b = torch.tensor([d[t] for d, t in zip(w.prompt_logprobs[1:], p[1:])])
        torch.testing.assert_close(a, b, atol=F32_ATOL, rtol=0)


def test_speculative_verify_steps_run_under_graphs(checkpoint):
    """n-gram drafts verified under graphs give the plain greedy tokens. A verify batch of
    decodes is laid out as decode rows (1 + len(draft) per sequence) and replays the decode
    graphs; one with a prompt chunk in it replays piecewise graphs."""
    g = torch.Generator().manual_seed(2)
    loop = torch.randint(3, 500, (12,), generator=g).tolist()
    ps = [{"prompt_token_ids": p} for p in (loop * 8, loop * 3 + [5] * 40)]
    params = SamplingParams(temperature=0, max_tokens=48, ignore_eos=True)
    common = dict(kernels="auto", dtype="float32", max_num_seqs=16, gpu_memory_utilization=0.3,
                  max_model_len=1024)
    plain = LLM(str(checkpoint), enforce_eager=True, **common).generate(ps, params)
    spec = {"method": "ngram", "num_speculative_tokens": 4, "prompt_lookup_max": 3,
            "min_acceptance_rate": 0.01}
    llm = LLM(str(checkpoint), speculative_config=spec, max_piecewise_graph_tokens=2048, **common)
    runner, rows = llm.engine.runner, []
    replay = runner._replay
    runner._replay = lambda inputs: rows.append(inputs.meta.num_seqs) or replay(inputs)
    out = llm.generate(ps, params)
    assert llm.engine.stats()["spec_num_draft_tokens"] > 0
    assert max(rows) > len(ps), "no verify step (more rows than sequences) replayed graphs"
    for o, p in zip(out, plain):
        assert o.outputs[0].token_ids == p.outputs[0].token_ids


def test_option_zero_turns_piecewise_off(checkpoint):
    llm = LLM(str(checkpoint), kernels="auto", dtype="float32", max_num_seqs=4,
              gpu_memory_utilization=0.3, max_piecewise_graph_tokens=0)
    assert llm.engine.runner.piecewise is None and llm.engine.runner.graphs
