"""Shared fixtures: tiny random HF checkpoints (safetensors) and a small byte-level BPE tokenizer,
built once per session in a temporary directory."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import torch

from litevllm.testing import tiny_tokenizer

SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.3,
             rms_norm_eps=1e-6, tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)


def save_model(path, arch: str, vocab_size: int, seed: int = 0, **overrides):
    """A tiny random checkpoint saved as safetensors (float32)."""
    import transformers
    cfg_cls = {"llama": transformers.LlamaConfig, "mistral": transformers.MistralConfig}[arch]
    cfg = cfg_cls(vocab_size=vocab_size, **{**SMALL, **overrides})
    torch.manual_seed(seed)
    model_cls = {"llama": transformers.LlamaForCausalLM,
                 "mistral": transformers.MistralForCausalLM}[arch]
    model = model_cls(cfg).float()
    model.save_pretrained(path, safe_serialization=True)
    return path


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tokenizer(models_dir):
    return tiny_tokenizer(models_dir / "tokenizer")


@pytest.fixture(scope="session")
def vocab_size(tokenizer):
    return len(tokenizer)


@pytest.fixture(scope="session")
def llama_dir(models_dir, tokenizer, vocab_size):
    """Llama with a tokenizer (and chat template)."""
    path = save_model(models_dir / "llama", "llama", vocab_size)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def llama_notok_dir(models_dir, llama_dir):
    """The same weights without any tokenizer files."""
    path = models_dir / "llama-notok"
    path.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(llama_dir / f, path / f)
    return path


@pytest.fixture(scope="session")
def notemplate_dir(models_dir, llama_dir, tokenizer):
    """The same weights with a tokenizer that has no chat template."""
    path = models_dir / "llama-notemplate"
    path.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(llama_dir / f, path / f)
    tok = tokenizer.__class__.from_pretrained(llama_dir)
    tok.chat_template = None
    tok.save_pretrained(path)
    cfg = path / "tokenizer_config.json"
    import json
    data = json.loads(cfg.read_text())
    data.pop("chat_template", None)
    cfg.write_text(json.dumps(data))
    (path / "chat_template.jinja").unlink(missing_ok=True)
    return path


@pytest.fixture(scope="session")
def make_model(models_dir, vocab_size):
    """Factory for extra tiny checkpoints (no tokenizer), cached by name."""
    made = {}

    def make(name: str, arch: str = "llama", **overrides):
        if name not in made:
            made[name] = save_model(models_dir / name, arch, vocab_size, **overrides)
        return made[name]
    return make


@pytest.fixture(scope="session")
def hf_model():
    """Load a checkpoint with transformers (float32, eager attention), cached by path."""
    cache = {}

    def load(path):
        if path not in cache:
            from transformers import AutoModelForCausalLM
            cache[path] = AutoModelForCausalLM.from_pretrained(
                path, dtype=torch.float32, attn_implementation="eager").eval()
        return cache[path]
    return load


@pytest.fixture(scope="session")
def llm(llama_dir):
    """A shared engine on the tokenized Llama (small block size so prefixes span blocks)."""
    from litevllm import LLM
    return LLM(str(llama_dir), block_size=8, max_num_seqs=16, seed=0)


@pytest.fixture(scope="session")
def private_install(tmp_path_factory):
    """``private_install(src)`` pip-installs a package directory into a temporary ``--target``
    (never into the running environment) and returns an ``env`` for subprocesses that see it."""
    done = {}

    def install(src) -> dict:
        if src not in done:
            tmp = tmp_path_factory.mktemp("private-install")
            copy, site = tmp / "src", tmp / "site"  # a copy: the build writes next to the sources
            shutil.copytree(src, copy, ignore=shutil.ignore_patterns("build", "*.egg-info"))
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                            "--no-build-isolation", "--no-compile", "--target", str(site),
                            str(copy)], check=True, capture_output=True)
            done[src] = site
        path = [str(done[src]), *filter(None, [os.environ.get("PYTHONPATH")])]
        return {**os.environ, "PYTHONPATH": os.pathsep.join(path)}
    return install
