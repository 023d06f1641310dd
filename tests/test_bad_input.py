"""Bad input gives a clear error naming the cause, and the engine keeps serving."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from litevllm import LLM, SamplingParams
from litevllm.formats.base import CheckpointError
from litevllm.plugins import PluginError


def greedy(n=4):
    return SamplingParams(temperature=0, max_tokens=n, ignore_eos=True)


def copy_ckpt(src, dst, files=("config.json", "model.safetensors")):
    dst.mkdir(exist_ok=True)
    for f in files:
        shutil.copy(src / f, dst / f)
    return dst


# loading ------------------------------------------------------------------------------------
def test_missing_model_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="does-not-exist.*does not exist"):
        LLM(str(tmp_path / "does-not-exist"))


@pytest.mark.parametrize("arch, hint", [("PhiForCausalLM", "litevllm-plugin-phi"),
                                        ("FrobnicatorForCausalLM", "litevllm-plugin-<name>")])
def test_unknown_architecture(tmp_path, llama_notok_dir, arch, hint):
    path = copy_ckpt(llama_notok_dir, tmp_path / "m")
    cfg = json.loads((path / "config.json").read_text())
    cfg["architectures"] = [arch]
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PluginError) as err:
        LLM(str(path))
    msg = str(err.value)
    assert arch in msg and "installed plugins" in msg and "litevllm-plugin-llama" in msg
    assert f"pip install {hint}" in msg


def test_unknown_model_type_gets_the_plugin_hint(tmp_path, llama_notok_dir):
    """Not transformers' "your Transformers is out of date": the plugin to install."""
    path = copy_ckpt(llama_notok_dir, tmp_path / "m")
    cfg = json.loads((path / "config.json").read_text())
    cfg.update(model_type="frobnicator", architectures=["FrobnicatorForCausalLM"])
    (path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(PluginError) as err:
        LLM(str(path))
    msg = str(err.value)
    assert "architecture 'FrobnicatorForCausalLM'" in msg and "Transformers" not in msg
    assert "pip install litevllm-plugin-<name>" in msg

@pytest.mark.parametrize("scheme, hint", [("fp8", "pip install litevllm-plugin-fp8"),
                                           ("bitsandbytes", "no known plugin provides it")])
def test_unknown_quantization_names_schemes_and_plugin(tmp_path, llama_notok_dir, scheme, hint):
    from litevllm.plugins import get_plugin_manager
    if scheme in get_plugin_manager().names("quant_methods"):
        pytest.skip(f"{scheme} is installed")
    path = copy_ckpt(llama_notok_dir, tmp_path / "m")
    cfg = json.loads((path / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": scheme}
    (path / "config.json").write_text(json.dumps(cfg))
    for kwargs in ({}, {"quantization": scheme}):  # from the checkpoint, or asked for
        with pytest.raises(PluginError) as err:
            LLM(str(path if not kwargs else llama_notok_dir), **kwargs)
        msg = str(err.value)
        assert f"quantization '{scheme}'" in msg and "installed schemes: " in msg and "none" in msg
        assert hint in msg


def test_no_weights_suggests_dummy(tmp_path, llama_notok_dir):
    path = copy_ckpt(llama_notok_dir, tmp_path / "m", files=("config.json",))
    with pytest.raises(CheckpointError, match="load_format='dummy'"):
        LLM(str(path))


@pytest.mark.parametrize("damage", ["truncate", "garbage"])
def test_corrupt_safetensors(tmp_path, llama_notok_dir, damage):
    path = copy_ckpt(llama_notok_dir, tmp_path / "m")
    weights = path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[:len(data) // 2] if damage == "truncate" else b"\x07" * 64)
    with pytest.raises(CheckpointError, match="model.safetensors"):
        LLM(str(path))


def test_missing_tensor_is_named(tmp_path, llama_notok_dir):
    path = copy_ckpt(llama_notok_dir, tmp_path / "m", files=("config.json",))
    tensors = load_file(llama_notok_dir / "model.safetensors")
    del tensors["model.layers.1.mlp.down_proj.weight"]
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="model.layers.1.mlp.down_proj.weight"):
        LLM(str(path))


def test_wrong_tensor_shape_is_named(tmp_path, llama_notok_dir):
    path = copy_ckpt(llama_notok_dir, tmp_path / "m", files=("config.json",))
    tensors = load_file(llama_notok_dir / "model.safetensors")
    tensors["model.norm.weight"] = torch.ones(3)
    save_file(tensors, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match="model.norm.weight"):
        LLM(str(path))


def test_text_prompt_without_tokenizer(llama_notok_dir):
    llm = LLM(str(llama_notok_dir), block_size=8)
    with pytest.raises(ValueError, match="^prompt 0: .*no tokenizer"):
        llm.generate(["hello", {"prompt_token_ids": [3, 4, 5]}], greedy())
    text, ids = llm.generate(["hello", {"prompt_token_ids": [3, 4, 5]}], greedy(),
                             return_errors=True)
    assert text.outputs[0].finish_reason == "error" and "no tokenizer" in text.error
    assert len(ids.outputs[0].token_ids) == 4 and ids.error is None
    with pytest.raises(ValueError, match="no tokenizer"):
        llm.chat([{"role": "user", "content": "hi"}])


# requests -----------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, field", [
    (dict(n=0), "n"), (dict(n=1.5), "n"), (dict(temperature=-0.1), "temperature"),
    (dict(top_p=0.0), "top_p"), (dict(top_p=1.01), "top_p"), (dict(top_k=-3), "top_k"),
    (dict(min_p=1.5), "min_p"), (dict(max_tokens=-1), "max_tokens"), (dict(max_tokens=0), "max_tokens"),
    (dict(min_tokens=5, max_tokens=2), "min_tokens"), (dict(stop=[1, 2]), "stop"),
    (dict(stop=5), "stop"), (dict(stop=[""]), "stop"), (dict(stop_token_ids=["a"]), "stop_token_ids"),
    (dict(repetition_penalty=0), "repetition_penalty"), (dict(presence_penalty=3), "presence_penalty"),
    (dict(frequency_penalty=-2.5), "frequency_penalty"), (dict(logprobs=-1), "logprobs"),
    (dict(prompt_logprobs=-1), "prompt_logprobs"), (dict(seed=1.5), "seed"),
    (dict(temperature="hot"), "temperature"), (dict(top_p=float("nan")), "top_p"),
    (dict(n=True), "n"),
])
def test_invalid_sampling_params_name_the_field(kwargs, field):
    with pytest.raises(ValueError, match=rf"SamplingParams\.{field}\b"):
        SamplingParams(**kwargs)


@pytest.fixture(scope="module")
def small(llama_dir):
    return LLM(str(llama_dir), block_size=8, max_model_len=32)


@pytest.mark.parametrize("prompt, params, message", [
    ("", None, "prompt is empty"),
    ({"prompt_token_ids": []}, None, "prompt is empty"),
    ({"prompt_token_ids": list(range(3, 40))}, None, "max_model_len is 32"),
    ({"prompt_token_ids": [1, 10**6]}, None, "prompt token ids must be in"),
    ({"prompt_token_ids": ["a"]}, None, "list of integers"),
    (12, None, "must be a string"),
    ("hi", SamplingParams(stop_token_ids=[10**6]), "stop_token_ids"),
    ("hi", SamplingParams(logprobs=10**6), "logprobs"),
    ("hi", SamplingParams(n=1000), "max_num_seqs"),
    ("hi", {"temperature": 0}, "SamplingParams"),
])
def test_bad_request_leaves_engine_serving(small, prompt, params, message):
    eng = small.engine
    eng.add_request("good", {"prompt_token_ids": [5, 6, 7]}, greedy(5))
    eng.step()
    with pytest.raises(ValueError, match=message):
        eng.add_request("bad", prompt, params)
    assert "bad" not in eng.requests
    outs = []
    while eng.has_unfinished_requests():
        outs += eng.step()
    assert [(o.request_id, len(o.outputs[0].token_ids)) for o in outs if o.finished] == [("good", 5)]
    assert eng.block_manager.num_free_blocks == eng.num_blocks


@pytest.mark.parametrize("ids, params", [
    ([], greedy()), (list(range(3, 40)), greedy()), ([1, 10**6], greedy()),
    ([5], SamplingParams(stop_token_ids=[10**6])), ([5], SamplingParams(top_k=10**6)),
    ([5], SamplingParams(max_tokens=33)), ([5], {"temperature": 0}),
])
def test_public_request_check_is_the_engines(small, ids, params):
    """plugin_api.check_request (the Ray ingress's check) raises the engine's own message."""
    from litevllm.plugin_api import check_request
    with pytest.raises(ValueError) as engine_error:
        small.engine.add_request("bad", {"prompt_token_ids": ids}, params)
    with pytest.raises(ValueError) as public_error:
        check_request(ids, params, small.hf_config.vocab_size, 32)
    assert str(public_error.value) == str(engine_error.value)


def test_engine_errors_abort_and_duplicates(small):
    eng = small.engine
    eng.add_request("x", "hello", greedy(3))
    with pytest.raises(ValueError, match="unknown request id 'nope'"):
        eng.abort_request("nope")
    with pytest.raises(ValueError, match="already in use"):
        eng.add_request("x", "again", greedy(3))
    outs = []
    while eng.has_unfinished_requests():
        outs += eng.step()
    assert outs[-1].finished and len(outs[-1].outputs[0].token_ids) == 3
    with pytest.raises(ValueError, match="unknown request id 'x'"):
        eng.abort_request("x")  # finished requests are gone


@pytest.mark.parametrize("prompts, message", [
    (["Hello", ""], "prompt 1: prompt is empty"),
    (["Hello", "world", "hello " * 100], "prompt 2: .*max_model_len is 32"),
    ([{"prompt_token_ids": [3]}, {"prompt_token_ids": [1, 10**6]}], "prompt 1: prompt token ids"),
])
def test_generate_raises_naming_the_prompt(small, prompts, message):
    """vLLM's behaviour: a bad prompt raises before any request runs; none is left queued."""
    with pytest.raises(ValueError, match=message):
        small.generate(prompts, greedy(3))
    with pytest.raises(ValueError, match=message):
        small.generate(prompts, greedy(3), stream=True)
    assert not small.engine.has_unfinished_requests()
    assert small.engine.block_manager.num_free_blocks == small.engine.num_blocks


def test_generate_batch_with_bad_prompts(small):
    outs = small.generate(["Hello", "", {"prompt_token_ids": list(range(3, 50))}, "world"],
                          greedy(3), return_errors=True)
    assert [o.outputs[0].finish_reason for o in outs] == ["length", "error", "error", "length"]
    assert "empty" in outs[1].error and "max_model_len" in outs[2].error
    assert outs[0].error is None and len(outs[3].outputs[0].token_ids) == 3
    with pytest.raises(ValueError, match="2 SamplingParams for 3 prompts"):
        small.generate(["a", "b", "c"], [greedy(), greedy()])


def test_unknown_llm_option(llama_dir):
    with pytest.raises(ValueError, match="'max_num_seq'; did you mean 'max_num_seqs'"):
        LLM(str(llama_dir), max_num_seq=4)
    with pytest.raises(ValueError, match="block_size"):
        LLM(str(llama_dir), block_size=7)


@pytest.mark.parametrize("field", ["num_scheduler_steps", "max_num_seqs"])
def test_non_positive_engine_option_names_the_field(llama_dir, field):
    with pytest.raises(ValueError, match=f"{field} must be > 0"):
        LLM(str(llama_dir), **{field: 0})
