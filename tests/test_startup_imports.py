"""Start-up imports: an engine start loads transformers' config, never its modelling stack."""
import json
import os
import subprocess
import sys

import pytest
from transformers import AutoConfig

# seconds of imports an engine never uses (transformers' weight conversion, FSDP, dynamo, gguf;
# sympy: torch's meta-tensor path)
HEAVY = ["torch.distributed.tensor", "torch.distributed.fsdp", "torch._dynamo", "accelerate",
         "transformers.activations", "transformers.core_model_loading",
         "transformers.models.auto.modeling_auto", "transformers.generation.utils", "gguf", "sympy",
         "torchvision"]

START = """
import sys
from litevllm import LLM
llm = LLM(sys.argv[1])
assert llm.engine.tokenizer is not None
print(" ".join(m for m in sys.argv[2:] if m in sys.modules))
"""

CONFIGS = """
import json, sys
from transformers import AutoConfig
from litevllm.formats.hf_config import config_imports
out = {}
for path in sys.argv[1:]:
    with config_imports():
        out[path] = json.loads(AutoConfig.from_pretrained(path).to_json_string())
assert "transformers.activations" not in sys.modules
from transformers.utils.type_validators import ACT2FN  # deferred: loads the real one on use
assert "silu" in ACT2FN and "no-such-act" not in ACT2FN
import transformers.activations as real
assert type(real).__name__ == "module" and real.ACT2FN is not ACT2FN
print(json.dumps(out))
"""


def run(script, *args):
    out = subprocess.run([sys.executable, "-c", script, *map(str, args)],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_engine_start_skips_modelling_imports(llama_dir):
    assert run(START, llama_dir, *HEAVY).split() == []


def test_configs_match_transformers(tmp_path):
    paths = []
    for model_type in ("llama", "mistral", "gemma2", "qwen2_moe", "qwen3", "phi3"):
        (tmp_path / model_type).mkdir()
        (tmp_path / model_type / "config.json").write_text(json.dumps(
            {"model_type": model_type, "hidden_act": "gelu_pytorch_tanh", "vocab_size": 99}))
        paths.append(str(tmp_path / model_type))
    light = json.loads(run(CONFIGS, *paths))
    for path in paths:
        assert light[path] == json.loads(AutoConfig.from_pretrained(path).to_json_string()), path


VISION = """
import sys
import transformers.utils as u
from transformers import AutoConfig
from litevllm.formats.hf_config import config_imports
assert u.is_torchvision_available()  # the fake below
with config_imports():
    print(type(AutoConfig.from_pretrained(sys.argv[1])).__name__)
assert "torchvision" not in sys.modules and "transformers.image_utils" not in sys.modules
try:  # later imports see torchvision again
    import transformers.image_utils
except ImportError as e:
    print(e)
"""


def test_config_load_skips_torchvision(tmp_path, llama_dir):
    """transformers' config validators import image_utils, which imports torchvision where it
    is installed (and torch._dynamo through it): a fake one that fails on import stays unused."""
    pytest.importorskip("PIL", reason="transformers counts torchvision only with Pillow")
    fake = tmp_path / "site"
    (fake / "torchvision").mkdir(parents=True)
    (fake / "torchvision" / "__init__.py").write_text('raise ImportError("torchvision imported")')
    (fake / "torchvision-0.99.0.dist-info").mkdir()
    (fake / "torchvision-0.99.0.dist-info" / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: torchvision\nVersion: 0.99.0\n")
    out = subprocess.run([sys.executable, "-c", VISION, str(llama_dir)], capture_output=True,
                         text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(fake)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split("\n")[:2] == ["LlamaConfig", "torchvision imported"]
