"""What an engine start costs and says on the CPU: a KV cache sized from the model, one line."""
import logging

from litevllm import LLM


def test_cpu_kv_cache_is_sized_from_the_model(llama_dir, caplog):
    caplog.set_level(logging.INFO, logger="litevllm")
    llm = LLM(str(llama_dir), max_num_batched_tokens=1024)  # max_model_len 256 < 1024
    eng = llm.engine
    # room for one full batch (or one full-length sequence), not a fixed 2 GiB
    assert eng.num_blocks * eng.config.cache.block_size == 1024
    mib = eng.num_blocks * eng.runner.bytes_per_block() / 2**20
    lines = [r.getMessage() for r in caplog.records if r.name == "litevllm"]
    assert lines == [f"cpu float32, attention torch, kernels torch (auto), KV cache 1024 tokens "
                     f"({mib:.0f} MiB)"]
    eng = LLM(str(llama_dir), max_model_len=2048, max_num_batched_tokens=512).engine
    assert eng.num_blocks * eng.config.cache.block_size == 2048
    assert eng.max_seq_len == 2048
    eng = LLM(str(llama_dir), cpu_kv_cache_gib=1 / 1024).engine  # asked for: 1 MiB
    assert eng.num_blocks == 2**20 // eng.runner.bytes_per_block()
