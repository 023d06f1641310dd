"""Start-up imports: an engine start loads transformers' config, never its modelling stack."""
import json
import os
import subprocess
import sys

import pytest
from transformers import AutoConfig

# seconds of imports an engine never uses (transformers' weight conversion, FSDP, dynamo, gguf;
# sympy: torch's meta-tensor path; image/video utils: all of torchvision where it is installed)
HEAVY = ["torch.distributed.tensor", "torch.distributed.fsdp", "torch._dynamo", "accelerate",
         "transformers.activations", "transformers.core_model_loading",
         "transformers.models.auto.modeling_auto", "transformers.generation.utils", "gguf", "sympy",
         "transformers.image_utils", "transformers.video_utils", "torchvision"]

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
for name in ("transformers.activations", "transformers.image_utils", "transformers.video_utils"):
    assert name not in sys.modules, name
from transformers.utils import type_validators as tv
from transformers.utils.type_validators import ACT2FN  # deferred: loads the real one on use
assert "silu" in ACT2FN and "no-such-act" not in ACT2FN
import transformers.activations as real
assert type(real).__name__ == "module" and real.ACT2FN is not ACT2FN
import transformers.image_utils as image_utils  # the real module: the same enum as the stand-in's
assert getattr(tv, "PILImageResampling", None) is getattr(image_utils, "PILImageResampling", None)
print(json.dumps(out))
"""

GENERATION = """
import sys, torch
from litevllm.formats.hf_config import config_imports
with config_imports():  # as transformers 5.1x's auto_factory takes it
    from transformers.generation import GenerationMixin as stand_in
assert "transformers.generation.utils" not in sys.modules
import transformers
from transformers.generation import GenerationMixin as real  # the lazy package dropped it
assert real is not stand_in and type(real) is type and transformers.GenerationMixin is real

class Model(torch.nn.Module):
    def generate(self):
        pass

made = type("Made", (Model, stand_in), {**Model.__dict__})  # the remote-code loader's way

class Sub(Model, stand_in):
    pass

for cls in (made, Sub):
    assert cls.__bases__ == (Model, real) and type(cls) is type
assert isinstance(Sub(), stand_in) and issubclass(Sub, stand_in) and not isinstance(Model(), stand_in)
assert stand_in.prepare_inputs_for_generation is real.prepare_inputs_for_generation
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


def test_generation_mixin_stand_in_acts_as_the_real_class():
    run(GENERATION)
