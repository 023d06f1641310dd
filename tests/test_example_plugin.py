"""The worked third-party plugin in examples/litevllm-plugin-phi3: installed into a private
directory (never the test environment), then checked in fresh interpreters that see it."""
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "litevllm-plugin-phi3"


@pytest.fixture(scope="module")
def phi3_installed(private_install):
    return private_install(EXAMPLE)


def test_lite_plugins_check_phi3(phi3_installed):
    out = subprocess.run([sys.executable, "-m", "litevllm.cli", "plugins", "check", "phi3"],
                         capture_output=True, text=True, env=phi3_installed)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Phi3ForCausalLM [config 2/2]" in out.stdout
    assert " 0 failed" in out.stdout and "FAIL" not in out.stdout


def test_example_own_tests(phi3_installed):
    # its parity tests run the same checks as `lite plugins check phi3` above: skip them here
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-k", "not matches_transformers", str(EXAMPLE / "tests")],
                         capture_output=True, text=True, cwd=EXAMPLE, env=phi3_installed)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
