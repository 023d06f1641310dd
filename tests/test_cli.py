"""The `lite` CLI end to end on tiny checkpoints (CPU)."""
import json

import pytest
from click.testing import CliRunner

from litevllm.cli import cli


def invoke(*args, **kw):
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False, **kw)


def test_run_streams_a_chat_answer(llama_dir):
    r = invoke("run", "--model", llama_dir, "--prompt", "hello", "--temperature", 0,
               "--max-tokens", 8)
    assert r.exit_code == 0, r.output
    assert r.output.strip()  # the tiny random model says something


def test_run_matches_the_api(llama_dir, llm):
    from litevllm import SamplingParams
    r = invoke("run", "--model", llama_dir, "--prompt", "hi there", "--temperature", 0,
               "--max-tokens", 6, "--no-chat-template")
    want = llm.generate("hi there", SamplingParams(temperature=0, max_tokens=6))[0].outputs[0].text
    assert r.exit_code == 0 and r.stdout == want + "\n"


def test_run_interactive_chat(llama_dir):
    r = invoke("run", "--model", llama_dir, "--temperature", 0, "--max-tokens", 4,
               input="hello\n/exit\n")
    assert r.exit_code == 0, r.output
    assert "Interactive chat" in r.output


def test_missing_model_is_one_line_error(tmp_path):
    r = invoke("run", "--model", tmp_path / "nope", "--prompt", "x")
    assert r.exit_code == 1
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert lines == [f"Error: model path '{tmp_path / 'nope'}' does not exist and is not a known "
                     f"model alias (aliases: {lines[0].split('(aliases: ')[1]}"]
    assert "Traceback" not in r.output


def test_errors_use_cli_spelling(tmp_path, llama_notok_dir):
    (tmp_path / "config.json").write_text((llama_notok_dir / "config.json").read_text())
    r = invoke("run", "--model", tmp_path, "--prompt", "x")
    assert r.exit_code == 1 and "(use --load-format dummy for random weights)" in r.output
    assert "load_format" not in r.output


def test_missing_plugin_command_says_what_to_install(monkeypatch):
    from litevllm import cli as cli_mod
    from litevllm import plugins as plugins_mod
    monkeypatch.setitem(cli_mod.PLUGIN_COMMANDS, "frob", ("frob", "litevllm-plugin-frob", "plugins/frob"))
    r = invoke("frob", "--model", "x")
    assert r.exit_code == 1 and r.output.strip() == (
        "Error: `lite frob` comes from the litevllm-plugin-frob plugin, which is not installed: "
        "pip install litevllm-plugin-frob (from a checkout: pip install -e plugins/frob)")
    monkeypatch.setenv("LITEVLLM_DISABLE_PLUGINS", "openai")
    monkeypatch.setattr(plugins_mod, "_manager", None)
    monkeypatch.setattr(cli, "_loaded", False, raising=False)
    monkeypatch.setattr(cli, "commands", {k: v for k, v in cli.commands.items() if k != "serve"})
    r = invoke("serve", "--model", "x")
    assert r.exit_code == 1 and "installed but disabled by LITEVLLM_DISABLE_PLUGINS=openai" in r.output


def test_port_in_use_is_named_before_the_model_loads(tmp_path):
    import socket
    pytest.importorskip("litevllm_openai")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        # a missing model would fail later, at load: the port is checked first
        r = invoke("serve", "--model", tmp_path / "no-model", "--port", port)
    assert r.exit_code == 1
    assert r.output.startswith(f"Error: port {port} on 127.0.0.1 is not available (Address "
                               f"already in use)"), r.output


def test_unknown_lite_toml_keys_warn(llama_dir, tmp_path, monkeypatch):
    (tmp_path / "lite.toml").write_text(
        f'model = "{llama_dir}"\ntemprature = 0.0\n[run]\nmax_token = 3\n[bench.latency]\nbatchsize = 2\n')
    monkeypatch.chdir(tmp_path)
    r = invoke("plugins")
    assert r.exit_code == 0
    assert "lite.toml: unknown key 'temprature' (did you mean 'temperature'?)" in r.stderr
    assert "lite.toml [run]: unknown key 'max_token' (did you mean 'max_tokens'?)" in r.stderr
    assert "lite.toml [bench.latency]: unknown key 'batchsize' (did you mean 'batch_size'?)" in r.stderr
    assert "'model'" not in r.stderr


def test_bad_sampling_value_is_one_line_error(llama_dir):
    r = invoke("run", "--model", llama_dir, "--prompt", "x", "--top-p", 1.5)
    assert r.exit_code == 1 and "top_p" in r.output and "Traceback" not in r.output


def bench_latency(model, out, *options):
    """`lite bench latency` on dummy weights; returns (result, its JSON output)."""
    r = invoke("bench", "latency", "--model", model, "--load-format", "dummy", *options,
               "--json-out", out)
    assert r.exit_code == 0, r.output
    return r, json.loads(out.read_text())


def test_bench_latency_dummy_on_cpu(llama_dir, tmp_path):
    r, data = bench_latency(llama_dir, tmp_path / "lat.json", "--input-len", 16, "--output-len", 8,
                            "--batch-size", 2, "--num-iters", 2, "--num-iters-warmup", 1)
    assert data["batch_size"] == 2 and data["decode_ms_per_step"] > 0 and data["prefill_ms"] > 0
    for key in ("decode_tok_per_s", "weights_gb_per_s", "peak_memory_gib"):
        assert key in data and key in r.output


def test_bench_throughput_reports_ttft_and_itl(llama_dir, tmp_path):
    out = tmp_path / "tp.json"
    r = invoke("bench", "throughput", "--model", llama_dir, "--load-format", "dummy",
               "--num-prompts", 6, "--min-len", 4, "--max-len", 24, "--json-out", out)
    assert r.exit_code == 0, r.output
    data = json.loads(out.read_text())
    assert data["num_prompts"] == 6 and data["output_tok_per_s"] > 0
    assert data["ttft_ms_median"] > 0 and data["itl_ms_mean"] > 0
    # the warm-up runs other prompts: random timed prompts find nothing in the prefix cache,
    # and cached input is reported apart from computed input
    assert data["prefix_cache_hit_rate"] == 0 and data["input_tokens_cached"] == 0
    assert data["input_tokens_computed"] >= 6 * 4


def test_bench_throughput_cpu_defaults_are_small_and_said(llama_dir, tmp_path):
    out = tmp_path / "tp.json"
    r = invoke("bench", "throughput", "--model", llama_dir, "--load-format", "dummy",
               "--max-len", 24, "--json-out", out)
    assert r.exit_code == 0, r.output
    assert "cpu: small defaults --num-prompts 8 --min-len 16 (GPU: --num-prompts 256 " \
           "--min-len 100 --max-len 1024); pass them to change" in r.stderr
    assert json.loads(out.read_text())["num_prompts"] == 8


def test_options_from_lite_toml(llama_dir, tmp_path, monkeypatch):
    (tmp_path / "lite.toml").write_text(
        f'model = "{llama_dir}"\ntemperature = 0.0\n[run]\nmax_tokens = 3\n')
    monkeypatch.chdir(tmp_path)
    r = invoke("run", "--prompt", "hello", "--no-chat-template")
    assert r.exit_code == 0, r.output
    from litevllm import LLM, SamplingParams
    want = LLM(str(llama_dir)).generate("hello", SamplingParams(temperature=0, max_tokens=3))
    assert r.stdout == want[0].outputs[0].text + "\n"


def test_bad_lite_toml(tmp_path, monkeypatch):
    (tmp_path / "lite.toml").write_text("model = \n")
    monkeypatch.chdir(tmp_path)
    r = invoke("plugins")
    assert r.exit_code == 1 and "lite.toml: invalid TOML" in r.output


def test_lite_toml_nested_tables(llama_dir, tmp_path, monkeypatch):
    (tmp_path / "lite.toml").write_text(
        f'model = "{llama_dir}"\nload_format = "dummy"\n'
        '[bench]\nnum_iters = 1\n[bench.latency]\nbatch_size = 2\ninput_len = 8\noutput_len = 4\n')
    monkeypatch.chdir(tmp_path)
    r = invoke("bench", "latency", "--num-iters-warmup", 0, "--json-out", tmp_path / "out.json")
    assert r.exit_code == 0, r.output
    data = json.loads((tmp_path / "out.json").read_text())
    assert (data["batch_size"], data["input_len"], data["output_len"]) == (2, 8, 4)


def test_bench_rejects_bad_numbers_in_one_line(llama_dir):
    r = CliRunner().invoke(cli, ["bench", "latency", "--model", str(llama_dir), "--batch-size", "0"])
    assert r.exit_code == 2 and "'--batch-size': 0 is not in the range x>=1" in r.output
    r = CliRunner().invoke(cli, ["bench", "throughput", "--model", str(llama_dir),
                                 "--min-len", "10", "--max-len", "5"])
    assert r.exit_code == 2 and "--min-len 10 exceeds --max-len 5" in r.output


def test_bench_latency_multi_step(llama_dir, tmp_path):
    _, data = bench_latency(llama_dir, tmp_path / "lat.json", "--input-len", 8, "--output-len", 9,
                            "--num-iters", 1, "--num-iters-warmup", 0, "--num-scheduler-steps", 4)
    assert data["decode_ms_per_step"] > 0


def test_moe_weight_bytes_count_touched_experts():
    """GB/s of an MoE model counts the experts a batch is expected to read."""
    import torch

    from litevllm.bench import _weight_bytes
    from litevllm.testing import model_class, model_context, tiny_config

    config = tiny_config("Qwen2MoeForCausalLM", num_experts=4, num_experts_per_tok=2)
    with torch.device("meta"):
        model = model_class("Qwen2MoeForCausalLM")(config, model_context("meta"))
    llm = type("FakeLLM", (), {})()
    llm.engine = type("FakeEngine", (), {"model": model})()
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    experts = sum(p.numel() * p.element_size() for n, p in model.named_parameters()
                  if n.endswith(("experts.w13", "experts.w2")))
    assert experts > 0
    assert _weight_bytes(llm, 1) == int(total - experts * 0.5)  # top-2 of 4: half the experts
    assert _weight_bytes(llm, 1000) == total


def test_engine_options_come_from_the_config_fields(llama_dir, monkeypatch):
    """Every engine option of litevllm.config is a flag of `lite run`, and reaches LLM()."""
    import litevllm
    from litevllm.cli import run
    from litevllm.config import option_fields
    names = {p.name for p in run.params}
    for keyword, field, _ in option_fields():
        if field.metadata["cli"]:
            assert field.metadata.get("param", keyword) in names, keyword
    seen = {}

    def fake_llm(model, **kw):
        seen.update(kw, model=model)
        raise ValueError("stop here")
    monkeypatch.setattr(litevllm, "LLM", fake_llm)
    r = invoke("run", "-m", llama_dir, "-p", "x", "--block-size", 8, "--no-enable-chunked-prefill",
               "--tokenizer", llama_dir, "--no-prefix-caching")
    assert r.exit_code == 1 and "stop here" in r.output
    assert seen["block_size"] == 8 and seen["enable_chunked_prefill"] is False
    assert seen["tokenizer"] == str(llama_dir) and seen["enable_prefix_caching"] is False
    assert seen["max_num_seqs"] == 256 and seen["speculative_config"] is None
    r = invoke("run", "-m", llama_dir, "-p", "x", "--block-size", 7)
    assert r.exit_code == 2 and "'7' is not one of" in r.output
