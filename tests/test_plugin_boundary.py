"""In-repo plugins use only the public API: `litevllm.plugin_api`, `litevllm.testing`, and
the top-level names of `litevllm` (LLM, SamplingParams, AsyncLLMEngine, ...). Everything else
is private, and so are the engine's internals (``engine.block_manager``, ``engine._x``, ...)."""
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


# engine state a front end must reach only through AsyncLLMEngine / LLMEngine's public methods
ENGINE_INTERNALS = {"block_manager", "scheduler", "runner", "sampler", "detokenizer", "requests",
                    "hf_config", "num_blocks", "max_seq_len", "rng", "path"}


def engine_internals(path: Path):
    """(line, expression) for each ``<...>engine.<name>`` whose name is private (``_x``) or an
    engine internal: plugins drive the engine through its public API only."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    for node in sorted((n for n in ast.walk(tree) if isinstance(n, ast.Attribute)),
                       key=lambda n: (n.lineno, n.col_offset)):
        owner = node.value
        name = owner.id if isinstance(owner, ast.Name) else \
            owner.attr if isinstance(owner, ast.Attribute) else None
        if name in ("engine", "_engine") and (node.attr.startswith("_")
                                              or node.attr in ENGINE_INTERNALS):
            yield node.lineno, f"{name}.{node.attr}"


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


def test_rule_catches_engine_internals(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("a = llm.engine.block_manager.num_free_blocks\nb = engine._streams\n"
                   "c = self.engine.stats()\nd = server.llm.engine.requests\n"
                   "e = engine.max_model_len\nf = llm.engine.model\ng = x._engine\n")
    assert list(engine_internals(src)) == [(1, "engine.block_manager"), (2, "engine._streams"),
                                           (4, "engine.requests")]


@pytest.mark.parametrize("plugin", PLUGINS, ids=[str(p.relative_to(ROOT)) for p in PLUGINS])
def test_plugin_uses_only_public_engine_api(plugin):
    found = [f"{path.relative_to(ROOT)}:{line}: reaches {expr}"
             for path in python_files(plugin) for line, expr in engine_internals(path)]
    assert not found, ("plugins drive the engine only through its public API "
                       "(litevllm.AsyncLLMEngine, LLM):\n" + "\n".join(found))


@pytest.mark.parametrize("plugin", PLUGINS, ids=[str(p.relative_to(ROOT)) for p in PLUGINS])
def test_plugin_imports_only_public_api(plugin):
    found = [f"{path.relative_to(ROOT)}:{line}: imports {mod}"
             for path in python_files(plugin) for line, mod in private_imports(path)]
    assert not found, ("plugins may import only litevllm.plugin_api, litevllm.testing and "
                       "litevllm's top-level names:\n" + "\n".join(found))
