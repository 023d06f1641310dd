"""Shared GPU-test fixtures."""
import pytest
import torch


@pytest.fixture(scope="module")
def random_hf_checkpoint(tmp_path_factory):
    """``make(name, config, norm=(mean, std), std=0.05, **from_config)``: a bf16 HF model with
    normal random weights (norm weights drawn separately), saved under a fresh directory;
    returns ``(path, model on CUDA)``."""
    from transformers import AutoModelForCausalLM

    def make(name, config, norm=(1.0, 0.1), std=0.05, **from_config):
        path = tmp_path_factory.mktemp(name)
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16, **from_config)
        with torch.no_grad():
            for pname, p in model.named_parameters():
                p.normal_(*(norm if "norm" in pname else (0.0, std)))
        model.save_pretrained(path)
        return path, model.cuda().eval()
    return make
