"""The worked third-party plugin in examples/litevllm-plugin-phi3: installed (editable) into
the test environment if needed, then checked in fresh interpreters, which see its entry point
(this process's importlib.metadata and plugin manager may not)."""
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "litevllm-plugin-phi3"


@pytest.fixture(scope="module")
def phi3_installed():
    try:
        metadata.distribution("litevllm-plugin-phi3")
    except metadata.PackageNotFoundError:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                        "--no-build-isolation", "-e", str(EXAMPLE)], check=True,
                       capture_output=True)
    # the new .pth file is not read by this interpreter: keep the package importable here
    # too, so an in-process plugin manager that now sees the entry point can load it
    if str(EXAMPLE) not in sys.path:
        sys.path.append(str(EXAMPLE))


def test_lite_plugins_check_phi3(phi3_installed):
    out = subprocess.run([sys.executable, "-m", "litevllm.cli", "plugins", "check", "phi3"],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Phi3ForCausalLM [config 2/2]" in out.stdout
    assert " 0 failed" in out.stdout and "FAIL" not in out.stdout


def test_example_own_tests(phi3_installed):
    # its parity tests run the same checks as `lite plugins check phi3` above: skip them here
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          "-k", "not matches_transformers", str(EXAMPLE / "tests")],
                         capture_output=True, text=True, cwd=EXAMPLE)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
