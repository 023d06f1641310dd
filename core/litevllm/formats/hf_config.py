"""transformers' config and tokenizer classes, imported without its modelling stack.

A transformers configuration module (``configuration_llama``, ...) pulls in, through shared
utilities, modules that only modelling or image/video processing need: its type validators
import ``activations`` and so hub kernels, weight conversion, accelerate,
``torch.distributed.tensor`` and FSDP (transformers 5.2x), and ``video_utils`` / ``image_utils``
and so all of torchvision, which imports ``torch._dynamo`` (seconds, where torchvision is
installed); its docstring decorator imports the auto model classes, generation and
``torch._dynamo`` (5.1x); ``AutoTokenizer``'s module imports ``GenerationMixin`` and so
generation, masking and ``torch._dynamo`` (5.1x). Inside ``config_imports()`` those modules are
stand-ins that give the few names these imports take: ``ACT2FN`` is a mapping that imports the
real module on first use (only configs that validate an activation name touch it);
``PILImageResampling`` is PIL's enum, as ``image_utils`` defines it; ``VideoMetadataType`` only
annotates a video validator (``typing.Any``); ``GenerationMixin`` is a class stand-in that
imports the real class when used (attributes, ``isinstance``, or as a base class); the
docstring decorator's model-class lookup raises ImportError, which transformers skips; any other
name imports the real module. The stand-ins, and what lazy packages kept of them, leave on exit,
so later imports (transformers' models, in tests) get the real modules. Config semantics stay
transformers': same classes, defaults, validation, loading.
"""
from __future__ import annotations

import importlib
import sys
import types
import typing
from collections.abc import Mapping
from contextlib import contextmanager


def _real_module(name: str):
    if isinstance(sys.modules.get(name), _StandIn):
        del sys.modules[name]
    return importlib.import_module(name)


class _DeferredMapping(Mapping):
    """A module-level mapping that imports its module on first use."""

    def __init__(self, module: str, attr: str):
        self._where = (module, attr)

    def _real(self):
        module, attr = self._where
        return getattr(_real_module(module), attr)

    def __getitem__(self, key):
        return self._real()[key]

    def __iter__(self):
        return iter(self._real())

    def __len__(self):
        return len(self._real())


class _DeferredClass(type):
    """The type of a stand-in for a class that imports its module on first use: attribute
    look-ups, ``isinstance`` and ``issubclass`` go to the real class, and a class made with the
    stand-in as a base (``type(name, (cls, GenerationMixin), ns)``, as transformers 5.1x's
    remote-code loader does) gets the real class as that base."""

    @classmethod
    def make(mcls, module: str, attr: str):
        return type.__new__(mcls, attr, (), {"_where": (module, attr), "__module__": module})

    def _real(cls):
        module, attr = type.__getattribute__(cls, "_where")
        return getattr(_real_module(module), attr)

    def __new__(mcls, name, bases, namespace, **kwargs):
        bases = tuple(b._real() if isinstance(b, _DeferredClass) else b for b in bases)
        return type(name, bases, namespace, **kwargs)

    def __getattr__(cls, attr):
        return getattr(cls._real(), attr)

    def __instancecheck__(cls, obj):
        return isinstance(obj, cls._real())

    def __subclasscheck__(cls, sub):
        return issubclass(sub, cls._real())


class _StandIn(types.ModuleType):
    """Names in ``light`` come from their function, names in ``absent`` raise ImportError
    (which transformers skips); any other name imports the real module."""

    def __init__(self, name: str, light: dict, absent: frozenset = frozenset()):
        super().__init__(name)
        self._light, self._absent = light, absent

    def __getattr__(self, attr):
        if attr.startswith("__") or attr in ("_light", "_absent"):
            raise AttributeError(attr)
        if attr in self._light:
            value = self._light[attr]()
            setattr(self, attr, value)
            return value
        if attr in self._absent:
            raise ImportError(f"{self.__name__}.{attr} is not loaded while a config loads")
        return getattr(_real_module(self.__name__), attr)


def _pil_resampling():
    import PIL.Image  # transformers.image_utils: PILImageResampling = PIL.Image.Resampling
    return PIL.Image.Resampling


_STAND_INS = {  # name: (light names and their functions, absent names)
    "transformers.activations": (
        {"ACT2FN": lambda: _DeferredMapping("transformers.activations", "ACT2FN")}, frozenset()),
    "transformers.models.auto.modeling_auto": ({}, frozenset({"MODEL_MAPPING_NAMES"})),
    "transformers.video_utils": ({"VideoMetadataType": lambda: typing.Any}, frozenset()),
    "transformers.image_utils": ({"PILImageResampling": _pil_resampling}, frozenset()),
    "transformers.generation.utils": ({"GenerationMixin": lambda: _DeferredClass.make(
        "transformers.generation.utils", "GenerationMixin")}, frozenset()),
}


@contextmanager
def config_imports():
    """Wrap loading a config or tokenizer with transformers (``AutoConfig``, ``AutoTokenizer``)."""
    added = {}
    for name, (light, absent) in _STAND_INS.items():
        if name not in sys.modules:
            added[name] = sys.modules[name] = _StandIn(name, light, absent)
    try:
        yield
    finally:
        for name, stand_in in added.items():
            if sys.modules.get(name) is stand_in:
                del sys.modules[name]
            given = {k: v for k, v in vars(stand_in).items() if k in stand_in._light}
            parent, _, child = name.rpartition(".")
            given[child] = stand_in
            while parent:  # lazy packages keep what they imported: drop what the stand-in gave
                module = sys.modules.get(parent)
                for attr, value in given.items():
                    if module is not None and vars(module).get(attr) is value:
                        delattr(module, attr)
                parent = parent.rpartition(".")[0]
