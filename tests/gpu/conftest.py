"""Shared GPU-test fixtures."""
import gc
import os

import pytest
import torch

# Eight xdist workers each spawning a compile pool per engine start starve the CPU; the
# precompile test sets its own value.
os.environ.setdefault("LITEVLLM_PRECOMPILE", "0")


@pytest.fixture(autouse=True)
def compiled_triton():
    """Triton's interpreter (TRITON_INTERPRET=1, set by plugins/triton/tests/conftest.py when
    collected in the same run) would stand in for the GPU kernels: fail rather than test it."""
    if os.environ.get("TRITON_INTERPRET") == "1":
        pytest.fail("TRITON_INTERPRET=1 in this process: run tests/gpu in its own pytest run "
                    "(without plugins/triton/tests)")


@pytest.fixture(autouse=True)
def release_gpu_memory():
    """Eight workers share the GPU and an engine sizes its KV cache from what the others leave
    free: each test hands its cached blocks back when it ends."""
    yield
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


@pytest.fixture(scope="module")
def random_hf_checkpoint(tmp_path_factory):
    """``make(name, config, norm=(mean, std), std=0.05, logit_scale=1.0, norm_offset=0.0,
    **from_config)``: a float32 HF model with normal random weights (norm weights drawn
    separately), saved under a fresh directory; returns ``(path, {"float32": model,
    "bfloat16": model})``, both eval models on CUDA.

    ``logit_scale`` multiplies the final norm's scale (``norm_offset + weight``; Gemma's is
    ``1 + weight``), so the logits spread by that factor without changing anything upstream
    (tied embeddings included): top-2 gaps grow, and logprobs tell tokens apart."""
    from transformers import AutoModelForCausalLM

    def make(name, config, norm=(1.0, 0.1), std=0.05, logit_scale=1.0, norm_offset=0.0,
             **from_config):
        path = tmp_path_factory.mktemp(name)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32, **from_config)
        with torch.no_grad():
            for pname, p in model.named_parameters():
                p.normal_(*(norm if "norm" in pname else (0.0, std)))
            final = model.model.norm.weight
            final.copy_((norm_offset + final) * logit_scale - norm_offset)
        model.save_pretrained(path)
        hf32 = model.cuda().eval()
        hf16 = AutoModelForCausalLM.from_pretrained(path, dtype=torch.bfloat16,
                                                    **from_config).cuda().eval()
        return path, {"float32": hf32, "bfloat16": hf16}
    return make
