"""In-repo plugins use only the public API: `litevllm.plugin_api`, `litevllm.testing`, and
the top-level names of `litevllm` (LLM, SamplingParams, ...). Everything else is private."""
import ast
from pathlib import Path

import pytest

import litevllm

ROOT = Path(__file__).resolve().parents[1]
ALLOWED = ("litevllm.plugin_api", "litevllm.testing")
SKIP_DIRS = {"build", "dist", "__pycache__", ".venv"}
PLUGINS = sorted(d for pattern in ("plugins/*", "examples/*") for d in ROOT.glob(pattern)
                 if (d / "pyproject.toml").is_file())


def private_imports(path: Path):
    """(line, module) for each import of a private litevllm module in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            mods = [(a.name, None) for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods = [(node.module, [a.name for a in node.names])]
        else:
            continue
        for mod, names in mods:
            if mod == "litevllm":  # only the top-level public names
                bad = [n for n in names or [] if n not in litevllm.__all__]
                if bad:
                    yield node.lineno, f"litevllm.{bad[0]}"
            elif mod.startswith("litevllm.") and not mod.startswith(ALLOWED):
                yield node.lineno, mod


def python_files(root: Path):
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).parts
        if not any(p in SKIP_DIRS or p.endswith(".egg-info") for p in parts):
            yield path


def test_rule_catches_private_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("import litevllm.plugins\nfrom litevllm.model.decoder import LiteModel\n"
                   "from litevllm import plugins, LLM\nfrom litevllm.plugin_api import hookimpl\n"
                   "from litevllm.testing import check_plugin\nfrom litevllm import LLM\n"
                   "from .x import y\nimport litevllm_triton.ops\n")
    assert list(private_imports(src)) == [(1, "litevllm.plugins"), (2, "litevllm.model.decoder"),
                                          (3, "litevllm.plugins")]


@pytest.mark.parametrize("plugin", PLUGINS, ids=[str(p.relative_to(ROOT)) for p in PLUGINS])
def test_plugin_imports_only_public_api(plugin):
    found = [f"{path.relative_to(ROOT)}:{line}: imports {mod}"
             for path in python_files(plugin) for line, mod in private_imports(path)]
    assert not found, ("plugins may import only litevllm.plugin_api, litevllm.testing and "
                       "litevllm's top-level names:\n" + "\n".join(found))
