"""HF safetensors checkpoints: one file or shards listed in ``model.safetensors.index.json``."""
from __future__ import annotations

import json
from pathlib import Path

from litevllm.formats.base import CheckpointError, CheckpointFormat


class SafetensorsFormat(CheckpointFormat):
    name = "safetensors"

    @classmethod
    def detect(cls, path: Path) -> bool:
        path = Path(path)
        return path.is_dir() and (path / "config.json").is_file()

    def files(self) -> list[Path]:
        index = self.path / "model.safetensors.index.json"
        if index.is_file():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (ValueError, KeyError) as e:
                raise CheckpointError(f"{index}: invalid index file ({e})") from e
            files = [self.path / f for f in dict.fromkeys(weight_map.values())]
            for f in files:
                if not f.is_file():
                    raise CheckpointError(f"{index} lists {f.name}, which does not exist")
            return files
        files = sorted(self.path.glob("*.safetensors"))
        if not files:
            raise CheckpointError(f"no *.safetensors weights in {self.path} "
                                  f"(use load_format='dummy' for random weights)")
        return files

    def load_config(self):
        from transformers import AutoConfig, PretrainedConfig
        from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
        try:
            return AutoConfig.from_pretrained(self.path)
        except (ValueError, OSError, KeyError) as e:
            raw = self._raw_config()
            if raw.get("model_type") and raw["model_type"] not in CONFIG_MAPPING_NAMES:
                # a model type transformers does not know: a plugin may still provide the
                # architecture, and the engine's lookup names the plugin to install if none does
                return PretrainedConfig.from_dict(raw)
            raise CheckpointError(f"{self.path / 'config.json'}: {str(e).splitlines()[0]}") from e

    def _raw_config(self) -> dict:
        try:
            raw = json.loads((self.path / "config.json").read_text())
        except (OSError, ValueError):
            return {}
        return raw if isinstance(raw, dict) else {}

    def iter_tensors(self, dtype=None):
        from safetensors import safe_open
        for file in self.files():
            try:
                handle = safe_open(str(file), framework="pt")
            except Exception as e:  # safetensors raises its own error type for corrupt headers
                raise CheckpointError(f"{file}: corrupt or truncated safetensors file ({e})") from e
            with handle:
                for name in handle.keys():
                    try:
                        tensor = handle.get_tensor(name)
                    except Exception as e:
                        raise CheckpointError(f"{file}: cannot read tensor '{name}' ({e})") from e
                    yield name, tensor

    def load_tokenizer(self):
        from transformers import AutoTokenizer
        has_tokenizer = any((self.path / f).is_file() for f in (
            "tokenizer.json", "tokenizer.model", "tokenizer_config.json", "vocab.json"))
        if not has_tokenizer:
            return None
        return AutoTokenizer.from_pretrained(self.path)
