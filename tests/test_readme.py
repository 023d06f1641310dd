"""The README's snippets run as written after its command 1, and its command table says which
distribution adds each command."""
import contextlib
import io
import re
from pathlib import Path

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README, re.S)


def test_python_snippets_run_on_the_demo_model(monkeypatch, llama_dir):
    """The snippets use `smollm2` (command 1 installs it); here the alias points at the tiny
    test model, so no download runs."""
    from litevllm.engine import engine
    resolve = engine.resolve_model_path
    monkeypatch.setattr(engine, "resolve_model_path",
                        lambda model: llama_dir if model == "smollm2" else resolve(model))
    blocks = python_blocks()
    assert blocks and 'LLM(model="smollm2")' in blocks[0]
    for block in blocks:
        scope = {}
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(block, "README.md", "exec"), scope)
        if "chunk" in scope:  # chat(stream=True): the reply is not cut at generate's 16 tokens
            last = scope["chunk"].outputs[0]
            assert last.finished and len(last.token_ids) > 16


def test_command_table_names_where_each_command_comes_from():
    from litevllm.plugins import get_plugin_manager
    manager = get_plugin_manager()
    rows = {m.group(1): m.group(2) for m in
            re.finditer(r"^\| `lite (\w+)[^|]*\| ([^|]*) \|", README, re.M)}
    for entry in manager.entries["commands"]:
        dist = manager.info[entry.plugin].distribution
        assert entry.name in rows and f"`{dist}`" in rows[entry.name], (entry.name, dist)
    assert "`litevllm-plugin-openai`" in rows["serve"]
    assert "downloads" in README and "minutes" in README  # first run and test duration
