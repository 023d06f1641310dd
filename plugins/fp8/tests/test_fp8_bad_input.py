"""Bad FP8 checkpoints and options fail with one clear line naming the cause."""
import logging

import pytest
import torch

from litevllm import LLM

from fp8_packer import rewrite, write_fp8_checkpoint

Q = "model.layers.0.self_attn.q_proj"


@pytest.fixture(scope="module")
def block_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("fp8-block")
    write_fp8_checkpoint(path, block=(128, 128))
    return path


@pytest.fixture(scope="module")
def tensor_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("fp8-tensor")
    write_fp8_checkpoint(path)
    return path


def load(path, **kw):
    return LLM(str(path), dtype="float32", device="cpu", max_model_len=64, enforce_eager=True,
               **kw)


def load_error(src, tmp_path, edit, error=Exception, match=None, **kw) -> str:
    """The one-line message of the error loading ``src`` rewritten by ``edit`` raises."""
    with pytest.raises(error, match=match) as e:
        load(rewrite(src, tmp_path / "bad", edit), **kw)
    msg = str(e.value)
    assert "\n" not in msg and "Traceback" not in msg
    return msg


def test_wrong_block_scale_shape_names_the_tensor(block_dir, tmp_path):
    def edit(t, c):
        t[f"{Q}.weight_scale_inv"] = torch.ones(3, 2)
    msg = load_error(block_dir, tmp_path, edit)
    assert f"{Q}.weight_scale_inv" in msg and "(3, 2)" in msg and "(2, 2)" in msg


def test_per_tensor_scale_of_wrong_size_names_the_tensor(tensor_dir, tmp_path):
    def edit(t, c):
        t[f"{Q}.weight_scale"] = torch.ones(7)
    assert f"{Q}.weight_scale" in load_error(tensor_dir, tmp_path, edit)


def test_unquantized_weight_in_fp8_checkpoint(tensor_dir, tmp_path):
    def edit(t, c):
        t[f"{Q}.weight"] = t[f"{Q}.weight"].float()
    msg = load_error(tensor_dir, tmp_path, edit)
    assert f"{Q}.weight" in msg and "float8_e4m3fn" in msg


def test_missing_scale_is_named(tensor_dir, tmp_path):
    def edit(t, c):
        del t[f"{Q}.weight_scale"]
    assert f"missing tensor '{Q}.weight_scale'" in load_error(tensor_dir, tmp_path, edit)


def test_kv_cache_scales_are_ignored_but_strays_are_named(tensor_dir, tmp_path):
    def edit(t, c):
        t["model.layers.0.self_attn.k_proj.output_scale"] = torch.tensor(0.5)
    load(rewrite(tensor_dir, tmp_path / "kv", edit))  # loads: the KV cache is not fp8

    def stray(t, c):
        t[f"{Q}.weight_zero_point"] = torch.tensor(0.0)
    assert f"{Q}.weight_zero_point" in load_error(tensor_dir, tmp_path, stray)


def test_block_scales_under_a_per_tensor_config(block_dir, tmp_path):
    def edit(t, c):
        del c["quantization_config"]["weight_block_size"]
    assert "weight_scale_inv" in load_error(block_dir, tmp_path, edit)


@pytest.mark.parametrize("qc,match", [
    ({"weight_block_size": [128]}, "weight_block_size must be two positive ints"),
    ({"activation_scheme": "mixed"}, "activation_scheme"),
    ({"fmt": "e5m2"}, "only e4m3"),
    ({"weight_block_size": [128, 128], "activation_scheme": "static"}, "block-wise"),
    ({"ignored_layers": ["self_attn.q_proj"]}, "only .*q_proj is left unquantized"),
])
def test_bad_quantization_config(tensor_dir, tmp_path, qc, match):
    def edit(t, c):
        c["quantization_config"].update(qc)
    load_error(tensor_dir, tmp_path, edit, ValueError, match)


def test_fp8_option_on_another_scheme(tensor_dir, tmp_path):
    def edit(t, c):
        c["quantization_config"] = {"quant_method": "gptq", "bits": 4}
    load_error(tensor_dir, tmp_path, edit, ValueError,
               "cannot read a checkpoint quantized with 'gptq'", quantization="fp8")


def test_cpu_says_once_which_path_it_takes(caplog):
    from litevllm_fp8 import path
    path._said.clear()
    with caplog.at_level(logging.INFO, logger="litevllm"):
        assert path.pick_path(torch.device("cpu")) == path.TORCH
        assert path.pick_path(torch.device("cpu")) == path.TORCH
    lines = [r.getMessage() for r in caplog.records if "fp8" in r.getMessage()]
    assert len(lines) == 1 and "weight-only" in lines[0] and "no FP8 tensor cores" in lines[0]
