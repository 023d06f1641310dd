"""The Triton skinny GEMM on a CUDA GPU: every tuned tile of this GPU's table (or a fixed set)
in bf16 against float32 torch, CUDA-graph replay with split-K counters and PDL, and the engine
with the GEMV forced on for a tiny Llama: greedy tokens against the eager torch-ops engine
(float32) and logprobs against transformers (bf16)."""
import json

import pytest
import torch

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

from gpu_parity import Bf16Check, assert_triton_ran, generate, same_until_tie  # noqa: E402
from transformers import LlamaConfig  # noqa: E402

FIXED = [dict(DOT=False, BM=1, BN=4, BK=512, SPLIT_K=1, num_stages=3),
         dict(DOT=False, BM=2, BN=8, BK=256, SPLIT_K=4, num_stages=3),
         dict(DOT=True, BM=16, BN=32, BK=128, SPLIT_K=4, num_stages=5),
         dict(DOT=True, BM=16, BN=64, BK=128, SPLIT_K=1, num_stages=3)]


def tuned_cases():
    """(kind, n, k, m, cfg) for every non-null entry of this GPU's table (else TinyLlama's
    shapes with FIXED tiles); odd row counts use their bucket's tile."""
    from litevllm_triton.gemv_table import CONFIG_DIR
    from litevllm_triton.kernels._common import device_name
    path = CONFIG_DIR / f"{device_name(torch.device('cuda'))}.json"
    if path.is_file():
        for key, entry in sorted(json.loads(path.read_text()).items()):
            kind, n, k = key.split(":")
            for bucket, cfg in sorted(entry.items()):
                if cfg:
                    yield kind, int(n), int(k), max(1, int(bucket) - 1), cfg
        return
    for kind, n, k in [("linear", 2560, 2048), ("gated", 5632, 2048), ("linear", 2048, 5632)]:
        for m, cfg in zip((1, 2, 7, 16), FIXED):
            yield kind, n, k, m, cfg


def test_tuned_tiles_bf16():
    from litevllm_triton.kernels.gemv import gemv
    from litevllm.ops import torch_ops as ref
    torch.manual_seed(0)
    failures = []
    for kind, n, k, m, cfg in tuned_cases():
        rows = 2 * n if kind == "gated" else n
        w = torch.randn(rows, k, device="cuda", dtype=torch.bfloat16) * k ** -0.5
        x = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
        act = "silu" if kind == "gated" else None
        want = ref.linear(x.float(), w.float())
        if act:
            want = ref.gated_linear(x, w, None, act).float()  # gate/up rounded, as the kernel
        for pdl in (False, True):
            got = gemv(x, w, None, cfg, act, pdl=pdl).float()
            err = ((got - want).norm() / want.norm()).item()
            if not err < 1e-2:
                failures.append(f"{kind} {n}x{k} M={m} {cfg} pdl={pdl}: rel err {err:.2e}")
    assert not failures, failures


@pytest.mark.parametrize("m", [17, 33, 64, 130, 256])
@pytest.mark.parametrize("cfg", [dict(DOT=True, BM=32, BN=32, BK=128, SPLIT_K=2, num_stages=4),
                                 dict(DOT=True, BM=64, BN=32, BK=64, SPLIT_K=1, num_stages=4),
                                 dict(DOT=True, SWAP=True, BM=32, BN=64, BK=128, SPLIT_K=2,
                                      num_stages=4),
                                 dict(DOT=True, SWAP=True, BM=64, BN=128, BK=64, SPLIT_K=1,
                                      num_stages=3)],
                         ids=["bm32_split2", "bm64", "swap32_split2", "swap64"])
def test_tall_tiles_bf16(cfg, m):
    """Decode batches of 17..256 rows (buckets 32-256): tiles taller than 16 rows and swapped
    (W x^T) tiles, plain and gated, against float32 torch."""
    from litevllm_triton.kernels.gemv import gemv
    from litevllm.ops import torch_ops as ref
    torch.manual_seed(0)
    w = torch.randn(2 * 1408, 2048, device="cuda", dtype=torch.bfloat16) / 45
    x = torch.randn(m, 2048, device="cuda", dtype=torch.bfloat16)
    for act in (None, "silu"):
        want = ref.gated_linear(x, w, None, act).float() if act else x.float() @ w.float().t()
        got = gemv(x, w, None, cfg, act, pdl=True).float()
        err = ((got - want).norm() / want.norm()).item()
        assert err < 1e-2, (act, err)


def test_graph_replay_split_k_and_pdl():
    """A captured chain of split-K GEMVs (PDL launches) replays correctly with new inputs: the
    tile counters are back at zero after every launch."""
    from litevllm_triton.kernels.gemv import gemv
    w1 = torch.randn(1024, 2048, device="cuda", dtype=torch.bfloat16) / 45
    w2 = torch.randn(2048, 512, device="cuda", dtype=torch.bfloat16) / 22
    x = torch.randn(3, 2048, device="cuda", dtype=torch.bfloat16)

    def chain():
        h = gemv(x, w1, None, FIXED[1], "silu", pdl=True)
        return gemv(h, w2, None, FIXED[2], pdl=True)

    chain()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = chain()
    for _ in range(3):
        x.copy_(torch.randn_like(x))
        graph.replay()
        h = torch.nn.functional.silu((x @ w1[:512].t()).float()) * (x @ w1[512:].t()).float()
        want = h.to(torch.bfloat16).float() @ w2.float().t()
        err = ((out.float() - want).norm() / want.norm()).item()
        assert err < 1e-2, err


VOCAB = 2048
CONFIG = LlamaConfig(vocab_size=VOCAB, hidden_size=512, intermediate_size=1024,
                     num_hidden_layers=4, num_attention_heads=8, num_key_value_heads=2,
                     max_position_embeddings=1024, bos_token_id=1, eos_token_id=2)
# the tiny model's shapes: qkv 768x512, o 512x512, gate_up 2x1024x512, down 512x1024, lm_head
SHAPES = [("linear", 768, 512), ("linear", 512, 512), ("gated", 1024, 512),
          ("linear", 512, 1024), ("linear", VOCAB, 512)]
PROMPTS = [list(range(3, 3 + n)) for n in (9, 33, 70)]


@pytest.fixture(scope="module")
def checkpoint(random_hf_checkpoint):
    return random_hf_checkpoint("llama_gemv", CONFIG, norm=(1.0, 0.1), logit_scale=8.0,
                                attn_implementation="eager")


@pytest.fixture
def forced_table(monkeypatch):
    """The GEMV on for every shape of the tiny model and every row bucket; counts launches."""
    from litevllm_triton import gemv_table, ops
    entry = {"1": FIXED[0], "2": FIXED[1], "4": FIXED[2], "8": FIXED[3], "16": FIXED[2]}
    table = {gemv_table.table_key(*s): entry for s in SHAPES}
    monkeypatch.setattr(gemv_table, "_load", lambda device: table)
    calls = []
    real = ops.gemv
    monkeypatch.setattr(ops, "gemv", lambda *a, **k: calls.append(a[0].shape[0]) or real(*a, **k))
    return calls


@pytest.mark.parametrize("prompts", [PROMPTS[:1], PROMPTS], ids=["batch1", "batch3"])
def test_engine_gemv_matches_eager_torch_ops(checkpoint, forced_table, prompts):
    llm, got = generate(checkpoint[0], prompts, 40, "float32")
    assert llm.engine.runner.graphs
    assert_triton_ran(llm, "gated_linear")
    assert forced_table, "the GEMV never ran"
    del llm
    _, ref = generate(checkpoint[0], prompts, 40, "float32", kernels="torch", enforce_eager=True)
    for prompt, g, r in zip(prompts, got, ref):
        same_until_tie(g.token_ids, r, f"prompt of {len(prompt)} tokens")


def test_engine_gemv_bf16_logprobs_match_hf(checkpoint, forced_table):
    path, hf = checkpoint
    _, outs = generate(path, PROMPTS, 32, "bfloat16")
    assert forced_table
    check = Bf16Check()
    for prompt, out in zip(PROMPTS, outs):
        check.add(hf["bfloat16"], prompt, out)
    check.finish()
