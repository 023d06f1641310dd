"""transformers' lazy-import tables from the start-up cache (formats/import_structure.py): the
same lazy modules as a plain import, served from the file while the files are unchanged."""
import json
import os
import subprocess
import sys

from litevllm.formats import import_structure as cache

DUMP = """
import json, sys
from litevllm.formats.import_structure import cache_file, cached_import_structures
ctx = cached_import_structures() if sys.argv[1] == "cached" else __import__("contextlib").nullcontext()
with ctx:
    import transformers
    import transformers.models
    from transformers import AutoConfig, LlamaConfig
import transformers.utils.import_utils as iu
assert not hasattr(iu.define_import_structure, "real")  # the wrapper is gone after the block
import gc
from litevllm.formats.import_structure import _Cached
kept = [o for o in gc.get_objects() if isinstance(o, _Cached)]
assert len(kept) == (sys.argv[1] == "cached")
assert all(not f.open and not f.stored for f in kept)  # a wrapper kept after it holds no tables
out = {name: [sorted(mod._class_to_module.items()), sorted(map(str, mod.__all__)),
              sorted(mod._object_missing_backend)]
       for name, mod in (("transformers", transformers), ("models", sys.modules["transformers.models"]))}
out["LlamaConfig"] = LlamaConfig.__module__
out["stored"] = cache_file().is_file()
print(json.dumps(out))
"""


def dump(mode, env):
    out = subprocess.run([sys.executable, "-c", DUMP, mode], capture_output=True, text=True,
                         env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.splitlines()[-1])


def test_cached_tables_give_the_same_lazy_modules(tmp_path):
    env = {**os.environ, "LITEVLLM_CACHE": str(tmp_path)}
    plain = dump("plain", env)
    assert not plain.pop("stored")
    built = dump("cached", env)  # built and stored
    assert built.pop("stored")
    served = dump("cached", env)  # from the file
    served.pop("stored")
    assert built == plain and served == plain
    stored = json.loads((tmp_path / "import_structures.json").read_text())
    assert any(json.loads(k)[0].endswith("models") for k in stored)


def test_a_changed_file_rebuilds_its_table(tmp_path, monkeypatch):
    monkeypatch.setenv("LITEVLLM_CACHE", str(tmp_path / "cache"))
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "a.py").write_text("__all__ = ['A']\n")
    (pkg / "sub" / "b.py").write_text("__all__ = ['B']\n")
    source = tmp_path / "import_utils.py"
    source.write_text("")
    builds = []
    table = {frozenset(): {"p.a": {"A"}}, frozenset({"torch"}): {"p.sub.b": {"B", "C"}}}

    def real(path, prefix=None):
        builds.append(path)
        return table

    def start():  # one process's start: read the file, look up, store on exit
        fn = cache._Cached(real, str(source))
        got = fn(str(pkg / "__init__.py"), "p")
        if fn.changed:
            cache.store_json(cache.cache_file(), fn.stored)
        return got

    assert start() == table and len(builds) == 1
    assert start() == table and len(builds) == 1  # from the file
    (pkg / "sub" / "b.py").write_text("__all__ = ['B', 'C']\n")  # an edit in a subpackage
    assert start() == table and len(builds) == 2
    assert start() == table and len(builds) == 2
    (pkg / "c.py").write_text("")  # a new module
    start()
    (tmp_path / "cache" / "import_structures.json").write_text("{not json")
    start()
    assert len(builds) == 4
    (tmp_path / "cache" / "import_structures.json").write_text('{"x": 1, "[1]": [2]}')
    assert start() == table and len(builds) == 5  # entries of another shape are skipped
    assert cache._live(json.dumps([str(pkg)])) and not cache._live("x")


def test_a_pip_install_is_known_by_its_record(tmp_path, monkeypatch):
    site = tmp_path / "site"
    (site / "fakepkg" / "utils").mkdir(parents=True)
    source = site / "fakepkg" / "utils" / "import_utils.py"
    source.write_text("")
    info = site / "fakepkg-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fakepkg\nVersion: 1.0\n")
    record = info / "RECORD"
    record.write_text("fakepkg/utils/import_utils.py,sha256=abc,0\n")
    monkeypatch.syspath_prepend(str(site))
    module = "fakepkg.utils.import_utils"
    state = cache.record_state(module, str(source))
    assert state is not None and state == cache.record_state(module, str(source))
    source.write_text("# edited in place: the RECORD still says what pip installed\n")
    assert cache.record_state(module, str(source)) == state
    record.write_text("fakepkg/utils/import_utils.py,sha256=def,0\n")  # reinstalled
    assert cache.record_state(module, str(source)) not in (None, state)
    copy = tmp_path / "import_utils.py"  # another copy than the one installed: walk instead
    copy.write_text("")
    assert cache.record_state(module, str(copy)) is None
    record.write_text("__editable__.fakepkg.pth,sha256=abc,0\n")  # an editable install
    assert cache.record_state(module, str(source)) is None
    assert cache.record_state("nopkg.utils.import_utils", str(source)) is None
