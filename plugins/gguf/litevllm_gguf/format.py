"""`GGUFFormat`: a llama.cpp GGUF file as an HF config, HF-named tensors and a tokenizer."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Iterator

import torch

from litevllm.plugin_api import CheckpointError, CheckpointFormat, config_imports

from .arch import (ARCHITECTURES, CONFIG_KEYS, CONFIG_TENSORS, EXPERT_TENSORS, LINEAR_TENSORS,
                   TOKEN_ID_KEYS, hf_tensor_name, llama3_rope_scaling, split_name, unpermute_rows)

if TYPE_CHECKING:  # the gguf library loads on use: detecting a format must stay cheap
    from .dequant import GGUFBlocks
    from .reader import TensorInfo


def _find_gguf_file(path: Path) -> Path:
    if path.is_dir():
        files = sorted(path.glob("*.gguf"))
        if len(files) != 1:
            names = ", ".join(f.name for f in files) or "none"
            raise CheckpointError(f"{path} must hold exactly one .gguf file (found: {names}); pass the file itself")
        return files[0]
    if not path.is_file():
        raise CheckpointError(f"GGUF checkpoint {path} does not exist")
    return path


def _starts_with_magic(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"GGUF"
    except OSError:
        return False


class GGUFFormat(CheckpointFormat):
    name = "gguf"
    dequantizes = True  # quantization="none" gets dequantized values

    def __init__(self, path: Path):
        from .reader import GGUFFile
        super().__init__(path)
        self.file = GGUFFile(_find_gguf_file(self.path))
        self.arch_name = self.file.architecture
        if not self.arch_name:
            raise CheckpointError(f"{self.file.path} has no general.architecture in its metadata")
        self.arch = ARCHITECTURES.get(self.arch_name)  # None: no HF mapping known
        self.quant = None  # the engine's QuantConfig (set_quantization)

    @classmethod
    def detect(cls, path: Path) -> bool:
        path = Path(path)
        if path.is_file():
            return path.suffix == ".gguf" or _starts_with_magic(path)
        # a directory that also has safetensors is left to the safetensors format
        return path.is_dir() and any(path.glob("*.gguf")) and not any(path.glob("*.safetensors"))

    def _arch_meta(self, key: str, default=None):
        return self.file.metadata.get(f"{self.arch_name}.{key}", default)

    # -- config ---------------------------------------------------------------------------------

    def load_config(self):
        from transformers import AutoConfig, PretrainedConfig

        meta, tensors = self.file.metadata, self.file.tensors
        fields = {hf: v for key, hf in CONFIG_KEYS.items() if (v := self._arch_meta(key)) is not None}
        fields.update({hf: meta[key] for key, hf in TOKEN_ID_KEYS.items() if key in meta})
        if isinstance(fields.get("num_key_value_heads"), list):  # per-layer counts: keep the largest
            fields["num_key_value_heads"] = max(fields["num_key_value_heads"])
        if "token_embd.weight" in tensors:
            fields["vocab_size"] = tensors["token_embd.weight"].shape[0]
        elif self._arch_meta("vocab_size") or "tokenizer.ggml.tokens" in meta:
            fields["vocab_size"] = self._arch_meta("vocab_size") or len(meta["tokenizer.ggml.tokens"])
        fields["tie_word_embeddings"] = "output.weight" not in tensors

        if self.arch is None:  # still describe it, so the engine can name what is missing
            return PretrainedConfig(architectures=[self.arch_name], model_type=self.arch_name, **fields)

        if self.arch_name == "llama" and fields.get("num_experts"):
            raise CheckpointError(f"{self.file.path} is a Mixtral-style llama GGUF with {fields['num_experts']} "
                                  "experts, which litevllm-plugin-gguf does not support yet")
        if self.arch.permute_qk and "head_dim" not in fields and self._arch_meta("rope.dimension_count"):
            fields["head_dim"] = self._arch_meta("rope.dimension_count")
        if self.arch_name == "gemma2":
            # llama.cpp scales queries by hidden/heads for the 27B (46 layers), by head_dim otherwise
            big = fields.get("num_hidden_layers") == 46
            fields["query_pre_attn_scalar"] = (fields["hidden_size"] // fields["num_attention_heads"]
                                               if big else fields.get("head_dim", 256))
        rope_scaling = self._rope_scaling(fields)
        if rope_scaling:
            fields["rope_scaling"] = rope_scaling
        with config_imports():
            config = AutoConfig.for_model(self.arch.model_type, **{**self.arch.config_defaults, **fields})
        config.architectures = [self.arch.hf_class]
        config.quantization_config = {"quant_method": "gguf"}  # GGUFQuantConfig; "none" dequantizes
        return config

    def _rope_scaling(self, fields: dict) -> dict | None:
        scaling_type = self._arch_meta("rope.scaling.type")
        if scaling_type in ("linear", "yarn"):
            scaling = {"rope_type": scaling_type, "factor": self._arch_meta("rope.scaling.factor")}
            if self._arch_meta("rope.scaling.original_context_length"):
                scaling["original_max_position_embeddings"] = self._arch_meta("rope.scaling.original_context_length")
            return scaling
        extra = sorted(n for n in self.file.tensors if n.split(".")[0] in CONFIG_TENSORS)
        if extra == ["rope_freqs.weight"] and self.arch.permute_qk:
            factors = self._decode(self.file.tensors["rope_freqs.weight"], torch.float32)
            head_dim = fields.get("head_dim") or fields["hidden_size"] // fields["num_attention_heads"]
            scaling = llama3_rope_scaling(factors, fields.get("rope_theta", 10000.0), head_dim)
            if scaling:
                return scaling
        if extra:
            raise CheckpointError(f"{self.file.path}: rope frequency tensors {extra} use a rope scaling "
                                  "that litevllm-plugin-gguf cannot express as an HF config")
        return None

    # -- tensors --------------------------------------------------------------------------------

    def set_quantization(self, quant) -> None:
        self.quant = quant

    def _blocks(self, info: TensorInfo, row_order: torch.Tensor | None = None) -> GGUFBlocks:
        from .dequant import GGUFBlocks
        raw = self.file.raw(info)
        if row_order is not None:  # rows are whole blocks, so reorder the bytes before decoding
            raw = raw.view(info.shape[0], -1)[row_order].reshape(-1)
        return GGUFBlocks(raw, info.ggml_type, info.shape, info.name)

    def _decode(self, info: TensorInfo, dtype: torch.dtype | None, row_order: torch.Tensor | None = None):
        return self._blocks(info, row_order).dequantize(dtype)

    def iter_tensors(self, dtype: torch.dtype | None = None) -> Iterator[tuple[str, torch.Tensor]]:
        from .dequant import is_supported, unsupported_type_error
        from .quant import GGUFQuantConfig
        for info in self.file.tensors.values():  # fail before any weight is loaded
            if not is_supported(info.ggml_type):
                raise unsupported_type_error(info.name, info.ggml_type)
        keep_packed = isinstance(self.quant, GGUFQuantConfig)
        heads = {"attn_q": self._arch_meta("attention.head_count"),
                 "attn_k": self._arch_meta("attention.head_count_kv")}

        for info in self.file.tensors.values():
            parts = split_name(info.name)
            if parts is None:  # unknown layout: pass through, the model loader reports it
                yield info.name, self._decode(info, dtype)
                continue
            layer, base, kind = parts
            if base in CONFIG_TENSORS:
                continue
            if base in EXPERT_TENSORS and layer is not None:  # (experts, out, in): one tensor each
                for expert, values in enumerate(self._decode(info, dtype)):
                    yield f"model.layers.{layer}.mlp.experts.{expert}.{EXPERT_TENSORS[base]}.{kind}", values
                continue
            row_order = (unpermute_rows(info.shape[0], heads[base])
                         if self.arch and self.arch.permute_qk and heads.get(base) else None)
            if keep_packed and kind == "weight" and base in LINEAR_TENSORS:
                values = self._blocks(info, row_order)  # as stored: GGUFLinearMethod takes it
            elif row_order is not None:
                values = self._decode(info, dtype, row_order)
            elif self.arch and self.arch.norm_offset and base.endswith("norm"):  # subtract, then round
                values = (self._decode(info, torch.float32) - self.arch.norm_offset).to(dtype or torch.float32)
            else:
                values = self._decode(info, dtype)
            if base == "ffn_gate_inp_shexp":
                values = values.reshape(1, -1)  # HF's shared_expert_gate is a Linear(hidden, 1)
            yield hf_tensor_name(self.arch, layer, base, kind) or info.name, values

    # -- tokenizer ------------------------------------------------------------------------------

    def load_tokenizer(self):
        if "tokenizer.ggml.model" not in self.file.metadata:
            return None
        from transformers import PreTrainedTokenizerFast

        try:  # transformers converts GGUF vocabularies (BPE and SentencePiece) and the chat template
            return PreTrainedTokenizerFast.from_pretrained(
                str(self.file.path.parent), gguf_file=self.file.path.name, local_files_only=True)
        except Exception as exc:  # noqa: BLE001 — any conversion failure is a checkpoint problem
            raise CheckpointError(f"cannot build a tokenizer from {self.file.path}: {exc}") from exc
