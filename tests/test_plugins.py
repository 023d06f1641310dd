"""The plugin system: discovery, failures, allow/deny lists, API versions, conflicts, CLI."""
import json
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from litevllm import plugins as plugins_mod
from litevllm.plugins import PluginError, PluginManager

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fake_entrypoints(monkeypatch):
    """Make PluginManager see extra entry points backed by modules in fixtures/plugin_modules."""
    monkeypatch.syspath_prepend(str(FIXTURES / "plugin_modules"))
    real = metadata.entry_points

    def install(*names):
        extra = [metadata.EntryPoint(n, n, "litevllm") for n in names]
        monkeypatch.setattr(plugins_mod.metadata, "entry_points",
                            lambda group: list(real(group=group)) + extra)
    return install


def test_builtins_register_through_hooks():
    pm = PluginManager(load_entrypoints=False)
    assert pm.names("attention_backends") == ["torch"]
    assert "rms_norm" in pm.names("ops")
    assert pm.pick("checkpoint_formats", "safetensors").plugin == "litevllm"


def test_llama_plugin_discovered():
    pm = PluginManager()
    assert pm.info["llama"].status == "loaded"
    assert pm.pick("models", "MistralForCausalLM").target == "litevllm_llama.mistral:MistralForCausalLM"


def test_broken_plugin_is_reported_and_skipped(fake_entrypoints, caplog):
    fake_entrypoints("lv_broken_import")
    pm = PluginManager()
    assert pm.info["lv_broken_import"].status == "failed"
    assert "broken on purpose" in pm.info["lv_broken_import"].error
    assert "lv_broken_import" in caplog.text
    assert pm.model_class("LlamaForCausalLM").__name__ == "LlamaForCausalLM"


def test_raising_hook_is_reported(fake_entrypoints):
    fake_entrypoints("lv_bad_hook")
    pm = PluginManager()
    assert pm.info["lv_bad_hook"].status == "failed"
    assert "registration exploded" in pm.info["lv_bad_hook"].error


def test_deny_list_hides_plugin(monkeypatch):
    """The hint names the disabled plugin and the variable, instead of `pip install` it."""
    monkeypatch.setenv("LITEVLLM_DISABLE_PLUGINS", "llama")
    pm = PluginManager()
    assert pm.info["llama"].status == "disabled"
    with pytest.raises(PluginError) as e:
        pm.model_class("LlamaForCausalLM")
    assert str(e.value) == ("architecture 'LlamaForCausalLM' needs plugin 'llama' "
                            "(litevllm-plugin-llama), which is installed but disabled by "
                            "LITEVLLM_DISABLE_PLUGINS=llama")


@pytest.mark.parametrize("var", ["LITEVLLM_DISABLE_PLUGINS", "LITEVLLM_PLUGINS"])
def test_disabled_alias_plugin_is_named(monkeypatch, var):
    from litevllm.engine.engine import resolve_model_path
    monkeypatch.setenv(var, "gguf" if var == "LITEVLLM_DISABLE_PLUGINS" else "llama")
    monkeypatch.setattr(plugins_mod, "_manager", None)
    with pytest.raises(FileNotFoundError) as e:
        resolve_model_path("smollm2")
    msg = str(e.value)
    assert "aliases: none installed; plugin" in msg and "'gguf'" in msg
    assert (f"disabled by {var}=gguf" if var == "LITEVLLM_DISABLE_PLUGINS"
            else f"not in {var}=llama") in msg


def test_unknown_names_in_plugin_lists_warn(monkeypatch, caplog):
    monkeypatch.setenv("LITEVLLM_DISABLE_PLUGINS", "lama")
    monkeypatch.setenv("LITEVLLM_PLUGINS", "llama,litevllm-plugin-gguf,nosuch")
    pm = PluginManager()
    assert pm.info["llama"].status == "loaded" and pm.info["gguf"].status == "loaded"
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any(w.startswith("LITEVLLM_DISABLE_PLUGINS names 'lama', which is not an installed "
                            "plugin; did you mean 'llama'?") for w in warnings), warnings
    assert any(w.startswith("LITEVLLM_PLUGINS names 'nosuch'") for w in warnings), warnings
    assert len(warnings) == 2


def test_allow_list(monkeypatch):
    monkeypatch.setenv("LITEVLLM_PLUGINS", "litevllm-plugin-llama")
    pm = PluginManager()
    assert pm.info["llama"].status == "loaded"
    assert all(i.status == "disabled" for n, i in pm.info.items() if n not in ("llama", "litevllm"))


def test_api_version_mismatch_refused(fake_entrypoints):
    fake_entrypoints("lv_future_api")
    pm = PluginManager()
    info = pm.info["lv_future_api"]
    assert info.status == "failed"
    assert "2.0" in info.error and plugins_mod.PLUGIN_API_VERSION in info.error
    assert "FutureForCausalLM" not in pm.names("models")


def test_conflicting_architectures_error(fake_entrypoints):
    fake_entrypoints("lv_conflict")
    pm = PluginManager()
    with pytest.raises(PluginError, match="registered by several plugins.*llama.*lv_conflict"):
        pm.model_class("LlamaForCausalLM")


def test_override_resolves_conflict(fake_entrypoints):
    fake_entrypoints("lv_override")
    pm = PluginManager()
    assert pm.model_class("LlamaForCausalLM").__name__ == "OverrideLlama"


def test_unknown_architecture_message():
    pm = PluginManager()
    with pytest.raises(PluginError) as e:
        pm.model_class("QwenFooForCausalLM")
    msg = str(e.value)
    assert "litevllm-plugin-llama" in msg and "pip install litevllm-plugin-qwen" in msg


def test_help_imports_no_plugin_module():
    code = ("import sys; from click.testing import CliRunner; from litevllm.cli import cli;"
            "r = CliRunner().invoke(cli, ['--help']); assert r.exit_code == 0, r.output;"
            "assert 'bench' in r.output;"
            "print([m for m in sys.modules if m.startswith('litevllm_') or m in ('torch', 'triton')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_plugins_command_json():
    result = CliRunner().invoke(plugins_mod_cli(), ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    data = {p["name"]: p for p in json.loads(result.output)}
    assert data["llama"]["registers"]["models"] == ["LlamaForCausalLM", "MistralForCausalLM"]
    assert data["litevllm"]["registers"]["attention_backends"] == ["torch"]
    assert data["litevllm"]["registers"]["commands"] == ["bench"]  # named after the command
    text = CliRunner().invoke(plugins_mod_cli(), ["plugins"]).output
    assert "llama (litevllm-plugin-llama" in text


def plugins_mod_cli():
    from litevllm.cli import cli
    return cli


def test_out_of_tree_plugin_installed_and_runs(tmp_path, private_install):
    """pip-install the fixture package privately, then use its architecture in a fresh
    interpreter."""
    from transformers import LlamaConfig, LlamaForCausalLM
    env = private_install(FIXTURES / "demo_plugin")
    cfg = LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=64)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["architectures"] = ["DemoForCausalLM"]
    config["model_type"] = "llama"
    (tmp_path / "config.json").write_text(json.dumps(config))
    code = (f"from litevllm import LLM, SamplingParams; llm = LLM({str(tmp_path)!r});"
            "out = llm.generate({'prompt_token_ids': [1, 2, 3]}, SamplingParams(temperature=0, max_tokens=4));"
            "print(type(llm.engine.model).__module__, len(out[0].outputs[0].token_ids))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["litevllm_demo.model", "4"]


def test_broken_checkpoint_format_is_skipped(fake_entrypoints, tmp_path, caplog, monkeypatch):
    """A format plugin whose module cannot import must not block the other formats; it is
    reported only when no format takes a path, and in `lite plugins`."""
    fake_entrypoints("lv_broken_format")
    pm = PluginManager()
    (tmp_path / "config.json").write_text("{}")
    assert pm.checkpoint_format(tmp_path).name == "safetensors"
    assert "lv_broken_format" not in caplog.text
    with pytest.raises(PluginError, match="no checkpoint format recognises .*; plugin "
                                          "'lv_broken_format' registered .*lv_missing_module"):
        pm.checkpoint_format(tmp_path / "nothing-here")
    monkeypatch.setattr(plugins_mod, "_manager", pm)
    data = {p["name"]: p for p in json.loads(
        CliRunner().invoke(plugins_mod_cli(), ["plugins", "--json"]).output)}
    assert "No module named 'lv_missing_module'" in data["lv_broken_format"]["error"]
    assert data["llama"]["error"] == ""


def test_named_kernels_must_serve_the_device(monkeypatch):
    import importlib

    from litevllm.ops import Ops
    plugin = pytest.importorskip("litevllm_triton.plugin")

    def manager(interpret: bool):
        if interpret:
            monkeypatch.setenv("TRITON_INTERPRET", "1")
        else:
            monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        importlib.reload(plugin)  # the registration reads the variable at import
        return PluginManager()

    try:
        with pytest.raises(PluginError, match="kernels='triton' does not run on cpu"):
            Ops("triton", "cpu", manager(interpret=False))
        pm = manager(interpret=True)  # the interpreter runs it, when named
        assert Ops("triton", "cpu", pm).rms_norm.__module__ == "litevllm_triton.ops"
        assert Ops("auto", "cpu", pm).rms_norm.__module__ == "litevllm.ops.torch_ops"
    finally:
        monkeypatch.undo()
        importlib.reload(plugin)
