"""transformers' lazy-import tables kept on disk from one start to the next.

``import transformers`` builds the table of what its ``models`` package exports
(``define_import_structure``) by reading every file of every model, ~1,700 files, and does it
twice (``transformers`` and ``transformers.models`` ask with different arguments): ~0.4 s of
every start here. Inside ``cached_import_structures()`` that function is wrapped as its module
(``transformers.utils.import_utils``) loads: a table comes from
``$LITEVLLM_CACHE/import_structures.json`` while the install is as it was when the table was
stored, else it is built as usual (once for both callers) and stored. For a pip install, "as it
was" is the distribution's ``RECORD`` (each installed file with its hash; read in ~5 ms);
otherwise (an editable or unlisted install) every ``.py`` file under the table's directory, and
``import_utils.py`` itself, keeps its size and modification time (a walk of ~1,700 files). The wrapper is removed
on exit. Nothing changes when transformers is already imported; any problem with the file
builds the table as usual.
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib.abc
import importlib.machinery
import json
import os
import sys
from importlib import metadata

from litevllm.formats.cache_files import cache_dir, store_json

MODULE = "transformers.utils.import_utils"


def cache_file():
    return cache_dir() / "import_structures.json"


def tree_state(directory: str, extra: str) -> str:
    """A digest of the size and modification time of every ``.py`` file under ``directory``
    (``__pycache__`` aside) and of ``extra``."""
    entries = []
    for root, dirs, files in os.walk(directory, followlinks=True):  # as transformers' scan
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            st = os.stat(os.path.join(root, name))
            entries.append([os.path.join(root, name), st.st_size, st.st_mtime_ns])
    st = os.stat(extra)
    entries.append([extra, st.st_size, st.st_mtime_ns])
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()


def record_state(module: str, source: str) -> str | None:
    """A digest of the ``RECORD`` of the distribution named after ``module``'s top package, if
    that distribution installed ``source`` (``module``'s file); else None."""
    relative = module.replace(".", "/") + ".py"
    try:
        dist = metadata.distribution(module.partition(".")[0])
        record = dist.read_text("RECORD")
        if not record or f"{relative}," not in record \
                or not os.path.samefile(str(dist.locate_file(relative)), source):
            return None  # editable, or another copy than the one imported
    except (metadata.PackageNotFoundError, OSError, ValueError):
        return None
    return hashlib.sha256(json.dumps([source, record]).encode()).hexdigest()


def encode(table: dict) -> list:
    """``{frozenset(backends): {module: set(names)}}`` as JSON (order kept; sets sorted)."""
    return [[sorted(backends), {module: sorted(names) for module, names in modules.items()}]
            for backends, modules in table.items()]


def decode(data: list) -> dict:
    return {frozenset(backends): {module: set(names) for module, names in modules.items()}
            for backends, modules in data}


class _Cached:
    """``define_import_structure`` served from the cache file while its files are unchanged."""

    def __init__(self, real, source: str, module: str = MODULE):
        self.real, self.source = real, source
        self.installed = record_state(module, source)  # None: walk each table's files
        self.states: dict[str, str] = {}
        self.changed = False
        self.stored, self.path = {}, None
        self.open = True  # transformers keeps this wrapper: closed, it only calls the real one
        try:  # no home directory, no file, a broken file: tables are built as usual
            self.path = cache_file()
            stored = json.loads(self.path.read_text())
            self.stored = stored if isinstance(stored, dict) else {}
        except (OSError, ValueError, RuntimeError, KeyError):
            pass

    def __call__(self, module_path, prefix=None):
        if not self.open:
            return self.real(module_path, prefix)
        path = str(module_path)
        directory = path if os.path.isdir(path) else os.path.dirname(path)
        if directory not in self.states:
            try:
                self.states[directory] = self.installed or tree_state(directory, self.source)
            except OSError:  # a file gone while looking: no cache for this table
                return self.real(module_path, prefix)
        key, state = json.dumps([path, prefix]), self.states[directory]
        entry = self.stored.get(key)
        if isinstance(entry, dict) and entry.get("state") == state:
            try:
                return decode(entry["table"])
            except (AttributeError, KeyError, TypeError, ValueError):
                pass
        # the directory, as transformers reads it: the package's call and ``models/__init__``'s
        # then share one scan of the files when the cache misses
        table = self.real(directory, prefix)
        try:
            data = encode(table)
            if decode(data) == table:  # a table of another shape is not stored
                self.stored[key] = {"state": state, "table": data}
                self.changed = True
        except (AttributeError, TypeError, ValueError):
            pass
        return table


def _live(key: str) -> bool:
    """Whether a stored table's path still exists."""
    try:
        return os.path.exists(json.loads(key)[0])
    except (ValueError, TypeError, KeyError, IndexError):
        return False


class _WrapOnLoad(importlib.abc.MetaPathFinder):
    """Wraps ``define_import_structure`` right after its module runs, before transformers'
    ``__init__`` takes it."""

    def __init__(self):
        self.module = self.cached = None

    def find_spec(self, name, path, target=None):
        if name != MODULE:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            del spec.loader.exec_module  # once: a later reload runs the loader's own
            run(module)
            real = getattr(module, "define_import_structure", None)
            if callable(real):
                self.module, self.cached = module, _Cached(real, module.__file__)
                module.define_import_structure = self.cached
        spec.loader.exec_module = exec_module
        return spec


@contextlib.contextmanager
def cached_import_structures():
    """Wrap the first ``import transformers`` of a process (a no-op if it is imported)."""
    if MODULE in sys.modules:
        yield
        return
    finder = _WrapOnLoad()
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.meta_path.remove(finder)
        cached = finder.cached
        if cached is not None:
            if finder.module.define_import_structure is cached:
                finder.module.define_import_structure = cached.real
            if cached.changed and cached.path is not None:  # tables of removed installs dropped
                store_json(cached.path, {k: v for k, v in cached.stored.items() if _live(k)})
            cached.open, cached.stored, cached.states = False, {}, {}
