"""The op registry: named ops resolved once per model to one implementation each."""
from __future__ import annotations

from litevllm.plugins import PluginError, get_plugin_manager


def _serves(entry, device_type: str) -> bool:
    devices = entry.options.get("devices", ("*",))
    return "*" in devices or device_type in devices


class Ops:
    """Attribute access gives the chosen implementation: ``ops.rms_norm(x, w, eps)``.

    ``kernels="auto"`` picks the highest-priority provider serving the device; ``"torch"`` the
    references; any other name that provider, falling back to torch for ops it lacks.
    """

    def __init__(self, kernels: str = "auto", device_type: str = "cpu", manager=None):
        self.kernels, self.device_type = kernels, device_type
        self.manager = manager or get_plugin_manager()
        self.chosen: dict[str, str] = {}
        providers = {e.options.get("provider", e.plugin) for e in self.manager.entries["ops"]
                     if self.manager._ok(e.plugin)} | set(self.manager.names("attention_backends"))
        if kernels not in ("auto", "torch") and kernels not in providers:
            raise PluginError(f"unknown kernels '{kernels}' (available: auto, "
                              f"{', '.join(sorted(providers))})")
        named = [e for e in self.manager.entries["ops"] + self.manager.entries["attention_backends"]
                 if self.manager._ok(e.plugin) and kernels in (e.name, e.options.get("provider"))]
        if kernels not in ("auto", "torch") and not any(
                _serves(e, device_type) or device_type in e.options.get("explicit_devices", ())
                for e in named):
            devices = sorted({d for e in named for d in e.options.get("devices", ("*",))})
            raise PluginError(f"kernels='{kernels}' does not run on {device_type} (it serves: "
                              f"{', '.join(devices)}); use kernels='auto' or 'torch'")

    def _resolve(self, op: str):
        entries = [e for e in self.manager.entries["ops"] if e.name == op and self.manager._ok(e.plugin)]
        if self.kernels == "auto":
            entries = [e for e in entries if _serves(e, self.device_type)]
        else:
            wanted = [e for e in entries if e.options.get("provider") == self.kernels]
            entries = wanted or [e for e in entries if e.options.get("provider") == "torch"]
        if not entries:
            raise PluginError(f"no implementation of op '{op}' for kernels='{self.kernels}' "
                              f"on {self.device_type}")
        best = max(entries, key=lambda e: e.priority)
        self.chosen[op] = best.options.get("provider", best.plugin)
        return best.load()

    def __getattr__(self, op: str):
        if op.startswith("_"):
            raise AttributeError(op)
        fn = self._resolve(op)
        setattr(self, op, fn)
        return fn
