__version__ = "0.1.0"
# The contract plugins are written against. Minor: additions only. Major: breaking changes.
# 1.1: fused_moe(shared=, shared_gate=, shared_experts=), fused_moe_with_shared,
# shared_expert_slots, FusedMoE(shared_experts=, shared_prefix=), AttentionBackend.forward(out=)
# 1.2: AttentionBackend.prepare_in_graph
# 1.3: AttentionBackend.varlen_in_graph
# 1.4: op positions_and_slots
# 1.5: rotary_embedding(v=, k_cache=, v_cache=, slot_mapping=, k_scale=, v_scale=),
# AttentionSpec.kv_stored, AttentionBackend.rotary_stores_kv
PLUGIN_API_VERSION = "1.5"
