"""The conformance kit (litevllm.testing) and `lite plugins check`."""
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from litevllm import testing
from litevllm.cli import cli
from litevllm.kinds import KIND_TABLE
from litevllm.plugin_api import TorchAttentionBackend, torch_ops

BROKEN = Path(__file__).parent / "fixtures" / "broken_plugin"


def test_unknown_plugin_fails_with_reason():
    report = testing.check_plugin("no-such-plugin")
    assert not report.ok
    assert report.failure_lines() == [
        f"FAIL plugin no-such-plugin: installed: {report.get('installed').reason}"]
    assert "no 'litevllm' entry point or distribution named 'no-such-plugin'" in \
        report.get("installed").reason


def test_validate_kinds():
    assert KIND_TABLE["attention_backends"].validate("torch", TorchAttentionBackend) is None
    assert KIND_TABLE["ops"].validate("rms_norm", torch_ops.rms_norm) is None
    assert "reference signature" in KIND_TABLE["ops"].validate("rms_norm", lambda x, w: x)
    assert "not a subclass of torch.nn.Module" in KIND_TABLE["models"].validate("X", object)
    assert "not a subclass of CheckpointFormat" in KIND_TABLE["checkpoint_formats"].validate("x", int)
    assert "not a click.Command" in KIND_TABLE["commands"].validate("x", print)


def test_cli_registrations_only_and_exit_status():
    result = CliRunner().invoke(cli, ["plugins", "check", "--registrations-only", "llama"])
    assert result.exit_code == 0, result.output
    assert "PASS  model LlamaForCausalLM" in result.output
    result = CliRunner().invoke(cli, ["plugins", "check", "--registrations-only", "llama", "nope"])
    assert result.exit_code == 1
    assert result.output.splitlines()[-1].startswith("FAIL plugin nope: installed: ")


def test_broken_plugin_is_reported(tmp_path):
    """Install the fixture into a private directory; only the subprocess sees it."""
    src, site = tmp_path / "src", tmp_path / "site"
    shutil.copytree(BROKEN, src, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--no-compile", "--target", str(site), str(src)],
                   check=True, capture_output=True)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(site), *filter(None, [os.environ.get("PYTHONPATH")])])}
    out = subprocess.run([sys.executable, "-m", "litevllm.cli", "plugins", "check",
                          "broken_fixture"], env=env, capture_output=True, text=True)
    assert out.returncode == 1, out.stdout + out.stderr
    failures = [line for line in out.stdout.splitlines() if line.startswith("FAIL ")]
    # one line per failed check, naming the check and why; loading and consistency still pass
    # kernels=<name> checks fail too (triton runs everywhere: GPU, or the CPU interpreter)
    checks = [line.split(": ")[1] for line in failures]
    assert [c for c in checks if not c.startswith("kernels=")] == ["greedy", "logits"], out.stdout
    assert failures[0].startswith("FAIL BrokenLlamaForCausalLM: greedy: prompt ")
    assert "HF argmax" in failures[0] and "max |logit - HF|" in failures[1]
    for check in ("installed", "imports", "api_version", "registers", "load", "batched"):
        assert any(line.split()[:2] == ["PASS", check] for line in out.stdout.splitlines()), check


def test_skipped_checks_are_visible():
    report = testing.Report("subject")
    report.add("ran", testing.PASS, "fine")
    report.add("kernels=x", testing.SKIP, "no GPU\nsecond line dropped")
    assert report.ok and [c.name for c in report.skipped] == ["kernels=x"]
    assert report.skip_lines() == ["SKIP subject: kernels=x: no GPU"]
    assert "  SKIP  kernels=x  no GPU" in report.table()
    with pytest.warns(testing.SkippedCheckWarning, match="SKIP subject: kernels=x: no GPU"):
        report.assert_ok()


def test_kernels_plan():
    assert testing._kernels_plan("nope") == (None, "no 'nope' kernel provider installed")
    where, _ = testing._kernels_plan("triton")
    assert where in ("cuda", "cpu", "subprocess")  # triton is installed: it always runs


def test_cli_requested_kernels_that_cannot_run_fail():
    """--kernels NAME is a request: a provider that cannot run fails the check (exit 1)."""
    result = CliRunner().invoke(cli, ["plugins", "check", "llama", "--kernels", "nope"])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert "FAIL LlamaForCausalLM: kernels=nope: requested but cannot run: no 'nope' kernel " \
           "provider installed" in lines
    assert all(not line.startswith("FAIL") or "kernels=nope" in line for line in lines), \
        result.output


def test_cli_named_plugin_without_a_tiny_config_fails(monkeypatch):
    """An architecture that cannot be checked fails when its plugin was named, and is listed
    as SKIP when all installed plugins are checked."""
    def no_config(arch, model_cls=None):
        raise LookupError(f"no tiny config for {arch}")
    monkeypatch.setattr(testing, "conformance_configs", no_config)
    named = CliRunner().invoke(cli, ["plugins", "check", "llama"])
    assert named.exit_code == 1, named.output
    assert "FAIL LlamaForCausalLM: tiny_config: no tiny config for LlamaForCausalLM" in \
        named.output.splitlines()
    everything = CliRunner().invoke(cli, ["plugins", "check"])
    assert not any("tiny_config" in line for line in everything.output.splitlines()
                   if line.startswith("FAIL")), everything.output
    assert "SKIP LlamaForCausalLM: tiny_config: no tiny config for LlamaForCausalLM" in \
        everything.output.splitlines()
