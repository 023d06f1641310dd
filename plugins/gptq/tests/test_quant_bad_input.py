"""Bad quantized checkpoints and options: one-line errors naming the tensor or setting."""
import json
import re
import subprocess
import sys

import pytest

from litevllm import LLM
from litevllm.plugin_api import CheckpointError
from quant_ckpt import VOCAB, make_quant_llama


@pytest.fixture(scope="module")
def gptq_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("bad") / "gptq-g64"
    make_quant_llama(path, VOCAB, "gptq", group_size=64, sym=False)
    return path


def with_config(src, dst, **changes):
    dst.mkdir()
    (dst / "model.safetensors").symlink_to(src / "model.safetensors")
    cfg = json.loads((src / "config.json").read_text())
    cfg["quantization_config"].update(changes)
    (dst / "config.json").write_text(json.dumps(cfg))
    return dst


def test_wrong_group_size_names_tensor(gptq_dir, tmp_path):
    path = with_config(gptq_dir, tmp_path / "m", group_size=32)
    with pytest.raises(CheckpointError) as err:
        LLM(str(path))
    assert re.search(r"cannot load 'model\.layers\.0\.[a-z_.]+\.(qzeros|scales)'.* has \d+ rows, "
                     r"expected \d+ \(group_size=32 with input size", str(err.value))


def test_group_size_not_dividing_input(gptq_dir, tmp_path):
    path = with_config(gptq_dir, tmp_path / "m", group_size=48)
    with pytest.raises(ValueError, match="group_size=48 does not divide the input size 128"):
        LLM(str(path))


@pytest.mark.parametrize("change, message", [
    (dict(bits=3), "bits=3 is not supported"),
    (dict(checkpoint_format="marlin"), "checkpoint_format 'marlin' is not supported"),
    (dict(group_size="x"), "group_size='x'"),
])
def test_bad_gptq_config(gptq_dir, tmp_path, change, message):
    with pytest.raises(ValueError, match=message):
        LLM(str(with_config(gptq_dir, tmp_path / "m", **change)))


def test_scheme_mismatch(gptq_dir):
    with pytest.raises(ValueError, match="'awq' was asked for, but the checkpoint is 'gptq'"):
        LLM(str(gptq_dir), quantization="awq")
    with pytest.raises(ValueError, match="already 'gptq'-quantized"):
        LLM(str(gptq_dir), quantization="int8")


def test_float_tensor_in_quantized_layer_is_named(gptq_dir, tmp_path):
    path = with_config(gptq_dir, tmp_path / "m")
    from safetensors.torch import load_file, save_file
    tensors = load_file(str(gptq_dir / "model.safetensors"))
    tensors["model.layers.1.mlp.down_proj.weight"] = tensors["lm_head.weight"][:128, :256].clone()
    (path / "model.safetensors").unlink()
    save_file(tensors, str(path / "model.safetensors"))
    with pytest.raises(CheckpointError, match="unexpected tensor 'model.layers.1.mlp.down_proj.weight'"):
        LLM(str(path))


def test_cli_unknown_quantization_is_one_line(gptq_dir):
    run = subprocess.run([sys.executable, "-m", "litevllm.cli", "run", "-m", str(gptq_dir),
                          "-q", "nf4", "--max-tokens", "2", "-p", "hi"], capture_output=True, text=True)
    assert run.returncode != 0
    assert "quantization 'nf4' is not provided" in run.stderr and "installed schemes" in run.stderr
    assert "Traceback" not in run.stderr


def test_other_scheme_on_a_quantized_checkpoint_is_named(gptq_dir):
    with pytest.raises(ValueError, match="quantized with 'gptq'; quantization='none' cannot load it"):
        LLM(str(gptq_dir), quantization="none")
