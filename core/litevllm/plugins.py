"""Plugin discovery and the registry every lookup goes through.

Plugins are modules named by ``[project.entry-points.litevllm]``. They are imported once, on the
first lookup, never at ``import litevllm``. Built-ins register through the same hooks.
"""
from __future__ import annotations

import difflib
import importlib
import logging
import os
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from litevllm import hookspecs
from litevllm.kinds import KIND_TABLE, KINDS  # noqa: F401  (KINDS: the kind names, re-exported)
from litevllm.version import PLUGIN_API_VERSION

log = logging.getLogger("litevllm")
BUILTIN = "litevllm"


class PluginError(RuntimeError):
    """A plugin problem the user must fix (conflict, unknown name, API mismatch)."""


@dataclass
class Entry:
    kind: str
    name: str
    target: str  # "module:attr"
    plugin: str
    priority: int = 0
    override: bool = False
    options: dict = field(default_factory=dict)

    def load(self):
        module, _, attr = self.target.partition(":")
        try:
            obj = importlib.import_module(module)
            for part in attr.split(".") if attr else []:
                obj = getattr(obj, part)
        except Exception as e:
            raise PluginError(f"plugin '{self.plugin}' registered {KIND_TABLE[self.kind].singular} '{self.name}' "
                              f"as {self.target}, which failed to load: {type(e).__name__}: {e}") from e
        return obj


@dataclass
class PluginInfo:
    name: str
    version: str
    distribution: str
    status: str = "loaded"   # loaded | failed | disabled
    error: str = ""          # why it failed, or the variable that disabled it


def _api_compatible(required: str) -> bool:
    have = tuple(int(x) for x in PLUGIN_API_VERSION.split("."))
    want = tuple(int(x) for x in str(required).split("."))
    return want[0] == have[0] and want[1:] <= have[1:]


def _env_list(var: str) -> set[str] | None:
    value = os.environ.get(var)
    if value is None:
        return None
    return {x.strip() for x in value.split(",") if x.strip()}


class PluginManager:
    """Loads plugins through entry points and holds what they registered."""

    def __init__(self, load_entrypoints: bool = True):
        self.pm = pluggy.PluginManager("litevllm")
        self.pm.add_hookspecs(hookspecs)
        self.info: dict[str, PluginInfo] = {}
        self.entries: dict[str, list[Entry]] = {k: [] for k in KINDS}
        from litevllm import builtins
        self.pm.register(builtins, name=BUILTIN)
        self.info[BUILTIN] = PluginInfo(BUILTIN, _version("litevllm"), "litevllm")
        if load_entrypoints:
            self._load_entrypoints()
        self._collect()

    # discovery -------------------------------------------------------------------------------
    def _load_entrypoints(self):
        allow, deny = _env_list("LITEVLLM_PLUGINS"), _env_list("LITEVLLM_DISABLE_PLUGINS") or set()
        eps = sorted(metadata.entry_points(group="litevllm"), key=lambda e: e.name)
        known = {BUILTIN} | {n for ep in eps for n in (ep.name, ep.dist.name if ep.dist else ep.name)}
        for var, names in (("LITEVLLM_PLUGINS", allow or set()), ("LITEVLLM_DISABLE_PLUGINS", deny)):
            for name in sorted(names - known):
                close = difflib.get_close_matches(name, sorted(known), n=1)
                log.warning("%s names '%s', which is not an installed plugin%s (installed: %s)",
                            var, name, f"; did you mean '{close[0]}'?" if close else "",
                            ", ".join(sorted(ep.name for ep in eps)) or "none")
        for ep in eps:
            dist = ep.dist.name if ep.dist else ep.name
            version = ep.dist.version if ep.dist else "?"
            info = PluginInfo(ep.name, version, dist)
            self.info[ep.name] = info
            if ep.name in deny or dist in deny:
                info.status, info.error = "disabled", f"disabled by LITEVLLM_DISABLE_PLUGINS={os.environ['LITEVLLM_DISABLE_PLUGINS']}"
                continue
            if allow is not None and not ({ep.name, dist} & allow):
                info.status, info.error = "disabled", f"not in LITEVLLM_PLUGINS={os.environ['LITEVLLM_PLUGINS']}"
                continue
            try:
                module = ep.load()
            except Exception as e:  # a broken plugin must not take the engine down
                self._fail(info, f"failed to import: {type(e).__name__}: {e}")
                continue
            required = getattr(module, "PLUGIN_API_VERSION", None)
            if required is not None and not _api_compatible(required):
                self._fail(info, f"written for plugin API {required}, but litevllm provides "
                                 f"{PLUGIN_API_VERSION}; upgrade the plugin or litevllm")
                continue
            self.pm.register(module, name=ep.name)

    def _fail(self, info: PluginInfo, why: str):
        info.status, info.error = "failed", why
        log.warning("litevllm plugin '%s' (%s) skipped: %s", info.name, info.distribution, why)

    def _collect(self):
        for kind in KINDS:
            caller = getattr(self.pm.hook, f"register_{kind}")
            for impl in caller.get_hookimpls():
                def register(name, target=None, *, priority=0, override=False, _p=impl.plugin_name,
                             _k=kind, **options):
                    if _k == "commands":  # register("module:attr"): named after attr
                        target = target or name
                        name = target.rpartition(":")[2].rpartition(".")[2]
                    self.entries[_k].append(Entry(_k, name, target, _p, priority, override, options))
                try:
                    impl.function(register=register)
                except Exception as e:
                    self._fail(self.info[impl.plugin_name], f"register_{kind} raised {type(e).__name__}: {e}")

    # lookups ---------------------------------------------------------------------------------
    def candidates(self, kind: str, name: str) -> list[Entry]:
        return [e for e in self.entries[kind] if e.name == name and self._ok(e.plugin)]

    def _ok(self, plugin: str) -> bool:
        return self.info[plugin].status == "loaded"

    def select(self, kind: str, name="auto", **context) -> Entry | None:
        """The entry ``name`` resolves to under the kind's selector (``KIND_TABLE``): every
        lookup of a registered name goes through here. ``context``: what the selector needs
        besides the name (``kernels``, ``device_type`` for ops)."""
        return KIND_TABLE[kind].select(self, kind, name, **context)

    def pick(self, kind: str, name: str) -> Entry | None:
        """The entry registered as ``name``, whatever the kind's selector (:func:`by_name`)."""
        return by_name(self, kind, name)

    def names(self, kind: str) -> list[str]:
        return sorted({e.name for e in self.entries[kind] if self._ok(e.plugin)})

    def loaded_plugins(self) -> list[str]:
        return [n for n, i in self.info.items() if i.status == "loaded"]

    def not_loaded(self) -> str:
        """'; plugin 'gguf' disabled by LITEVLLM_DISABLE_PLUGINS=gguf' (or ''), for messages
        that list what is available."""
        why: dict[str, list[str]] = {}
        for info in self.info.values():
            if info.status != "loaded":
                why.setdefault(info.error, []).append(f"'{info.name}'")
        return "".join(f"; plugin{'s' * (len(names) > 1)} {', '.join(names)} {error}"
                       for error, names in why.items())

    def model_class(self, architecture: str):
        entry = self.select("models", architecture)
        if entry is None:
            hint = _install_hint(architecture)
            off = [i for i in self.info.values() if i.distribution == hint and i.status != "loaded"]
            if off:  # installed, but disabled or broken: installing it again would not help
                raise PluginError(f"architecture '{architecture}' needs plugin '{off[0].name}' "
                                  f"({hint}), which is installed but {off[0].error}")
            installed = ", ".join(f"{p.distribution} {p.version}" for p in self.info.values()
                                  if p.status == "loaded")
            raise PluginError(f"no installed plugin provides architecture '{architecture}' "
                              f"(installed plugins: {installed}{self.not_loaded()}); "
                              f"try `pip install {hint}`")
        return entry.load()

    def checkpoint_format(self, path):
        return self.select("checkpoint_formats", path).load()

    def load_errors(self, plugin: str) -> list[str]:
        """Why each registration of ``plugin`` that cannot be imported fails (`lite plugins`)."""
        errors = []
        for kind in KINDS:
            for entry in self.entries[kind]:
                if entry.plugin == plugin:
                    try:
                        entry.load()
                    except PluginError as e:
                        errors.append(str(e))
        return errors

    def resolve_alias(self, name: str):
        entry = self.select("model_aliases", name)
        return None if entry is None else entry.load()()


# selectors (KIND_TABLE) ----------------------------------------------------------------------
def by_name(manager: PluginManager, kind: str, name: str) -> Entry | None:
    """The winning entry for ``name``: highest priority, then override=True; raises on an
    unresolved conflict."""
    found = manager.candidates(kind, name)
    if not found:
        return None
    top = max(e.priority for e in found)
    best = [e for e in found if e.priority == top]
    if len(best) > 1:
        forced = [e for e in best if e.override]
        if len(forced) != 1:
            owners = ", ".join(sorted(e.plugin for e in best))
            raise PluginError(f"{KIND_TABLE[kind].singular} '{name}' is registered by several plugins ({owners}); "
                              f"give one a higher priority or override=True, or disable one "
                              f"with LITEVLLM_DISABLE_PLUGINS")
        best = forced
    return best[0]


def by_priority(manager: PluginManager, kind: str, name: str = "auto") -> Entry | None:
    """"auto": the highest-priority loaded entry; any other name as :func:`by_name`."""
    if name != "auto":
        return by_name(manager, kind, name)
    found = [e for e in manager.entries[kind] if manager._ok(e.plugin)]
    return max(found, key=lambda e: e.priority) if found else None


def by_detection(manager: PluginManager, kind: str, path) -> Entry:
    """The first entry, by priority, whose class's ``detect(path)`` accepts ``path``."""
    entries = sorted((e for e in manager.entries[kind] if manager._ok(e.plugin)),
                     key=lambda e: -e.priority)
    broken = []
    for entry in entries:
        try:
            cls = entry.load()
        except PluginError as e:  # one broken format must not block the others; it is
            broken.append(str(e))  # reported only when no other format takes the path
            continue
        if cls.detect(path):
            return entry
    names = ", ".join(e.name for e in entries)
    raise PluginError(f"no checkpoint format recognises '{path}' (installed formats: "
                      f"{names}{manager.not_loaded()})" + "".join(f"; {b}" for b in broken))


# quantization schemes -> the distribution that provides them (for "not installed" hints)
QUANT_PLUGINS = {"gptq": "litevllm-plugin-gptq", "awq": "litevllm-plugin-gptq",
                 "int8": "litevllm-plugin-gptq", "fp8": "litevllm-plugin-fp8",
                 "gguf": "litevllm-plugin-gguf"}


def quant_install_hint(name: str) -> str:
    dist = QUANT_PLUGINS.get(str(name).lower())
    return f"try `pip install {dist}`" if dist else "no known plugin provides it"


def _install_hint(architecture: str) -> str:
    lower = architecture.lower()
    for key in ("llama", "mistral", "qwen", "gemma", "phi"):
        if key in lower:
            return f"litevllm-plugin-{'llama' if key == 'mistral' else key}"
    return "litevllm-plugin-<name>"


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "0+unknown"


_manager: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    global _manager
    if _manager is None:
        _manager = PluginManager()
    return _manager


def reset_plugin_manager() -> None:
    """Forget loaded plugins (tests; after changing LITEVLLM_PLUGINS)."""
    global _manager
    _manager = None
