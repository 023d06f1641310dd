"""The op registry: named ops resolved once per model to one implementation each."""
from __future__ import annotations

from litevllm.plugins import PluginError, get_plugin_manager


def _serves(entry, device_type: str) -> bool:
    devices = entry.options.get("devices", ("*",))
    return "*" in devices or device_type in devices


def provider(entry) -> str:
    """The ``kernels=`` name an op entry answers to: its ``provider`` option, else its plugin."""
    return entry.options.get("provider", entry.plugin)


def kernel_providers(manager) -> set[str]:
    """Every name ``kernels=`` accepts besides "auto": op providers and attention backends."""
    return {provider(e) for e in manager.entries["ops"] if manager._ok(e.plugin)} \
        | set(manager.names("attention_backends"))


def select_attention_backend(manager, kind: str, kernels: str, device_type: str):
    """The attention-backend selector (``KIND_TABLE``): "auto" takes the highest priority
    backend serving the device; a name takes that backend; a kernel provider without an
    attention backend of its own uses the torch reference; any other name is an error."""
    entries = [e for e in manager.entries[kind] if manager._ok(e.plugin)]
    if kernels == "auto":
        entries = [e for e in entries if _serves(e, device_type)]
    else:
        if kernels != "torch" and kernels not in kernel_providers(manager):
            raise PluginError(f"unknown attention backend or kernel provider '{kernels}' "
                              f"(available: auto, {', '.join(sorted(kernel_providers(manager)))})")
        entries = [e for e in entries if e.name == kernels] or \
            [e for e in entries if e.name == "torch"]
    return max(entries, key=lambda e: e.priority)


def select_op(manager, kind: str, op: str, kernels: str, device_type: str):
    """The op selector (``KIND_TABLE``): "auto" takes the highest priority implementation
    serving the device; a provider name its own, else the torch reference."""
    entries = [e for e in manager.entries[kind] if e.name == op and manager._ok(e.plugin)]
    if kernels == "auto":
        entries = [e for e in entries if _serves(e, device_type)]
    else:
        wanted = [e for e in entries if provider(e) == kernels]
        entries = wanted or [e for e in entries if provider(e) == "torch"]
    if not entries:
        raise PluginError(f"no implementation of op '{op}' for kernels='{kernels}' "
                          f"on {device_type}")
    return max(entries, key=lambda e: e.priority)


def pick_attention_backend(manager, kernels: str, device_type: str):
    """The attention backend class for ``kernels`` on ``device_type``."""
    return manager.select("attention_backends", kernels, device_type=device_type).load()


class Ops:
    """Attribute access gives the chosen implementation: ``ops.rms_norm(x, w, eps)``.

    ``kernels="auto"`` picks the highest-priority provider serving the device; ``"torch"`` the
    references; any other name that provider, falling back to torch for ops it lacks.
    """

    def __init__(self, kernels: str = "auto", device_type: str = "cpu", manager=None):
        self.kernels, self.device_type = kernels, device_type
        self.manager = manager or get_plugin_manager()
        self.chosen: dict[str, str] = {}
        providers = kernel_providers(self.manager)
        if kernels not in ("auto", "torch") and kernels not in providers:
            raise PluginError(f"unknown kernels '{kernels}' (available: auto, "
                              f"{', '.join(sorted(providers))})")
        named = [e for e in self.manager.entries["ops"] + self.manager.entries["attention_backends"]
                 if self.manager._ok(e.plugin) and kernels in (e.name, provider(e))]
        if kernels not in ("auto", "torch") and not any(
                _serves(e, device_type) or device_type in e.options.get("explicit_devices", ())
                for e in named):
            devices = sorted({d for e in named for d in e.options.get("devices", ("*",))})
            raise PluginError(f"kernels='{kernels}' does not run on {device_type} (it serves: "
                              f"{', '.join(devices)}); use kernels='auto' or 'torch'")

    def _best(self, op: str):
        return self.manager.select("ops", op, kernels=self.kernels, device_type=self.device_type)

    def _resolve(self, op: str):
        best = self._best(op)
        self.chosen[op] = provider(best)
        return best.load()

    def providers(self) -> list[str]:
        """The providers the registered ops resolve to here (what ``kernels=auto`` picked)."""
        return sorted({provider(self._best(op)) for op in self.manager.names("ops")})

    def __getattr__(self, op: str):
        if op.startswith("_"):
            raise AttributeError(op)
        fn = self._resolve(op)
        setattr(self, op, fn)
        return fn
