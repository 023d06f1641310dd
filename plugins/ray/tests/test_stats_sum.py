"""The ingress's /metrics over replicas: counters summed, per-position lists element-wise,
ratios computed again from the sums (no Ray cluster needed)."""
from litevllm_openai.metrics import Metrics
from litevllm_ray.remote_engine import _sum


def replica(free, drafts, drafted, per_pos):
    return {"num_running": 1, "num_waiting": 0, "num_unfinished": 1, "num_blocks": 10,
            "num_free_blocks": free, "kv_cache_usage": 1 - free / 10, "prompt_tokens": 5,
            "generation_tokens": 7, "prefix_cache_queries": 4, "prefix_cache_hits": 2,
            "spec_num_drafts": drafts, "spec_num_draft_tokens": drafted,
            "spec_num_accepted_tokens": sum(per_pos), "spec_num_accepted_tokens_per_pos": per_pos,
            "spec_acceptance_rate": sum(per_pos) / drafted,
            "spec_mean_acceptance_length": 1 + sum(per_pos) / drafts, "healthy": True}


class Engine:
    def __init__(self, stats):
        self._stats = stats

    def stats(self):
        return self._stats


def test_spec_decode_counters_sum_over_replicas():
    total = _sum([replica(5, 2, 6, [2, 1, 0]), replica(0, 4, 12, [4, 4, 3])])
    assert total["spec_num_accepted_tokens_per_pos"] == [6, 5, 3]
    assert total["spec_num_drafts"] == 6 and total["spec_num_accepted_tokens"] == 14
    assert total["spec_acceptance_rate"] == 14 / 18
    assert total["spec_mean_acceptance_length"] == 1 + 14 / 6
    assert total["kv_cache_usage"] == 0.75
    text = Metrics(Engine(total), "m").exposition().decode()
    assert 'vllm:spec_decode_num_drafts_total{model_name="m"} 6.0' in text
    assert 'vllm:spec_decode_num_accepted_tokens_total{model_name="m"} 14.0' in text
    assert 'vllm:spec_decode_num_accepted_tokens_per_pos_total{model_name="m",position="1"} 5.0' \
        in text
