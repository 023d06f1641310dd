#!/usr/bin/env bash
# One device call: install, GPU tests, the LitevLLM suite, kernel benchmarks, baselines.
# Usage: bash benchmarks/run_gpu.sh [tests|suite|kernels|baselines|profile|startup|quant|fp8|
#                                    throughput|tput|models|moetune|attn|kprof|decode|serve|ray|rayserve|spec|sweep|tprofile|gemv|
#                                    sampling|kvfp8|moelat|ab ...]
#   (default: tests suite kernels baselines)
# ab: the working tree against a baseline tree in alternating processes, same machine (make the
#   baseline with `git archive COMMIT | tar -x -C .xfer/base` and carry .xfer): AB_SUITES
#   (gpu_suite.py names, default tinyllama_latency), AB_TPUT (models for `lite bench
#   throughput`, default none), AB_PAIRS (default 2), AB_BASE (default .xfer/base) -> ab.jsonl
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
parts=${*:-tests suite kernels baselines}
if [ -d .whl ]; then  # wheels the device lacks (server: fastapi, uvicorn, pydantic; ray[serve])
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site \
      .whl/*.whl $(ls .whlray/*.whl 2>/dev/null) > "$OUT/wheels.log" 2>&1 || tail -3 "$OUT/wheels.log"
  export PYTHONPATH=${PYTHONPATH:+$PYTHONPATH:}/tmp/site
fi
python3 -m pip install -q --no-deps --no-build-isolation -e . -e plugins/llama -e plugins/triton \
    -e plugins/qwen_moe -e plugins/gemma -e plugins/gguf -e plugins/gptq -e plugins/fp8 \
    -e plugins/openai -e plugins/ray -e plugins/xgrammar -e examples/litevllm-plugin-phi3 > "$OUT/install.log" 2>&1 || tail "$OUT/install.log"
C=benchmarks/configs
tp() {  # one `lite bench throughput` run on the 256-prompt U[100,1024] workload -> $OUT/tput.jsonl
  local m=$1; shift
  rm -f /tmp/tp.json
  timeout ${TP_S:-120} lite bench throughput --model $C/$m --load-format dummy --max-model-len 4096 \
      --num-prompts 256 --min-len 100 --max-len 1024 --no-progress "$@" --json-out /tmp/tp.json \
      > /tmp/tp.log 2>&1 || { echo "$m $*: failed"; grep -v -i warn /tmp/tp.log | tail -3; return; }
  python3 - "$m ${*:-defaults}${TP_TAG:+ $TP_TAG}" >> "$OUT/tput.jsonl" <<'PY'
import json, sys
d = json.load(open("/tmp/tp.json")); d["run"] = sys.argv[1]; print(json.dumps(d))
print(f"{d['run']}: {d['output_tok_per_s']:.0f} out tok/s, TTFT median {d['ttft_ms_median']:.0f} ms,"
      f" {d['elapsed_s']:.2f} s", file=sys.stderr)
PY
}
warm() {  # an untimed tp run (compiles the run's kernel variants); its line is dropped
  local n; n=$(cat "$OUT/tput.jsonl" 2>/dev/null | wc -l)
  tp "$@" --num-prompts 96 > /dev/null 2>&1
  [ "$(cat "$OUT/tput.jsonl" 2>/dev/null | wc -l)" -gt "$n" ] && sed -i '$d' "$OUT/tput.jsonl"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
for part in $parts; do
  case $part in
    tests)  # -v names each failure as it happens (a run cut by the limit prints no summary)
      timeout ${TESTS_S:-300} python3 -m pytest -v -n ${TESTS_N:-8} -p no:cacheprovider --continue-on-collection-errors \
          ${TESTS_ARGS:-tests/gpu} > "$OUT/gpu_tests.log" 2>&1
      grep -E " (FAILED|ERROR) |^(FAILED|ERROR) |passed|failed" "$OUT/gpu_tests.log" | grep -v PASSED | tail -30
      echo "tests done: $(grep -c ' PASSED ' "$OUT/gpu_tests.log") passed lines" ;;
    quant) timeout ${QUANT_S:-250} python3 benchmarks/bench_quant.py ${QUANT_ARGS:-} --out "$OUT/quant" 2>&1 \
        | grep -v -i warn | grep -v '"kind": "cand"' | cut -c1-330 | tail -30 ;;
    fp8) timeout 200 python3 benchmarks/bench_fp8.py --pick --runs decode_b1,decode_b64 --iters 2 \
        --out "$OUT/fp8_pick.jsonl" 2>&1 | grep -v -i warn | tail -20 ;;
    throughput) timeout 120 lite bench throughput --model $C/tinyllama-1.1b --load-format dummy \
        --max-model-len 4096 --num-prompts 256 --min-len 100 --max-len 1024 --no-progress \
        --json-out "$OUT/cli_throughput.json" 2>&1 | tail -4 ;;
    serve) timeout 200 python3 benchmarks/bench_serve.py --model $C/tinyllama-1.1b \
        --serve-args "--load-format dummy --max-model-len 4096" --concurrency ${SERVE_C:-16,256} \
        --full --json-out "$OUT/serve.json" 2>&1 | grep -v -i warn | tail -12 ;;
    ray) RAY_AUTH_MODE=disabled timeout 240 python3 benchmarks/bench_routing.py --replicas 2 \
        --gpus-per-replica 0.5 --conversations 32 --turns 4 --json-out "$OUT/routing.json" -- \
        --model $C/tinyllama-1.1b --load-format dummy --max-model-len 4096 2>&1 \
        | grep -E '^\{|Error|error' | tail -8 ;;
    rayserve)  # issue 14: one replica alone, then two sharing the GPU (half the memory each)
      for r in 1 2; do
        g=$([ $r = 2 ] && echo "--gpus-per-replica 0.5" || true)
        RAY_AUTH_MODE=disabled timeout 240 python3 benchmarks/bench_serve.py --model $C/tinyllama-1.1b \
            --serve-args "--load-format dummy --max-model-len 4096 --replicas $r $g" \
            --concurrency ${SERVE_C:-256} --full --json-out "$OUT/rayserve_$r.json" \
            2> "$OUT/rayserve_$r.log" | tail -3
        pgrep -f "ray::|raylet|gcs_server" > /dev/null && echo "ray processes left after $r" || true
      done ;;
    sweep)  # issue 16: scaling curves (JSON + PNG plots under $OUT/plots)
      timeout ${SWEEP_S:-300} python3 benchmarks/bench_scaling.py --model $C/tinyllama-1.1b \
          --load-format dummy --max-model-len 16384 ${SWEEP_ARGS:-} --out "$OUT/scaling.json" \
          2>&1 | grep -v -i warn | tail -12
      python3 benchmarks/plot_scaling.py "$OUT/scaling.json" --out-dir "$OUT/plots" 2>&1 | tail -3 ;;
    tprofile) timeout 150 python3 benchmarks/profile_throughput.py --json-out "$OUT/tprofile.json" \
        2>&1 | grep -v -i warn | tail -40 ;;
    decode)  # issue 15: batch 1 / 32 decode with the skinny GEMM and PDL off / GEMV on / both on
      for env in ${DECODE_ENVS:-"LITEVLLM_GEMV=0,LITEVLLM_PDL=0" "LITEVLLM_GEMV=1,LITEVLLM_PDL=0" \
                 "LITEVLLM_GEMV=1,LITEVLLM_PDL=1"}; do
        env ${env//,/ } timeout 90 python3 benchmarks/bench_gemv.py --engine ${ENGINE:-tinyllama-1.1b} \
            --out "$OUT/decode.jsonl" 2>&1 | grep '^{' | cut -c1-300
      done ;;
    tput)  # issue 16: CLI throughput: defaults (async), + piecewise graphs, sync, sampled
      runs=("" "--max-piecewise-graph-tokens 2048" "--no-async-scheduling" \
            "--temperature 0.6 --top-p 0.9")
      [ -n "${TPUT_SHORT:-}" ] && runs=("" "--temperature 0.6 --top-p 0.9")
      [ -n "${TPUT_RUNS:-}" ] && IFS=';' read -ra runs <<< "$TPUT_RUNS"  # flag sets split by ';'
      # untimed: compiles the workload's kernel variants into the Triton cache of a fresh machine
      tp tinyllama-1.1b --num-prompts 96 2>/dev/null; [ -f "$OUT/tput.jsonl" ] && sed -i '$d' "$OUT/tput.jsonl"
      for flags in "${runs[@]}"; do tp tinyllama-1.1b $flags ${TPUT_ARGS:-}; done ;;
    kvfp8)  # issue 16: the fp8 KV cache's GPU tests, then throughput with and without it
      timeout ${KVFP8_TESTS_S:-240} python3 -m pytest -v -p no:cacheprovider \
          tests/gpu/test_kv_cache_fp8_gpu.py > "$OUT/kvfp8_tests.log" 2>&1
      grep -E " (FAILED|ERROR) |^(FAILED|ERROR) |passed|failed" "$OUT/kvfp8_tests.log" | tail -20
      for m in ${KVFP8_MODELS:-qwen3-0.6b tinyllama-1.1b}; do
        for kv in ${KVFP8_DTYPES:-auto fp8}; do
          warm $m --kv-cache-dtype $kv
          tp $m --kv-cache-dtype $kv ${TPUT_ARGS:-}
        done
      done ;;
    sampling)  # issue 16: the sample op, torch reference vs fused, then greedy vs sampled
               # (fused, and LITEVLLM_FUSED_SAMPLING=0) end to end
      timeout ${SAMPLING_S:-150} python3 benchmarks/bench_sampling.py ${SAMPLING_ARGS:-} \
          --out "$OUT/sampling.jsonl" 2>&1 | grep -v -i warn | cut -c1-330 | tail -30
      # untimed: compiles the workload's kernel variants (the sample op's too)
      tp tinyllama-1.1b --num-prompts 96 --temperature 0.6 --top-p 0.9 2>/dev/null
      [ -f "$OUT/tput.jsonl" ] && sed -i '$d' "$OUT/tput.jsonl"
      tp tinyllama-1.1b ${TPUT_ARGS:-}
      tp tinyllama-1.1b --temperature 0.6 --top-p 0.9 ${TPUT_ARGS:-}
      LITEVLLM_FUSED_SAMPLING=0 TP_TAG=unfused tp tinyllama-1.1b --temperature 0.6 --top-p 0.9 ${TPUT_ARGS:-}
      tp tinyllama-1.1b --temperature 0.6 ${TPUT_ARGS:-} ;;
    moetune)  # issue 16: MoE throughput on the default tiles (the H200 has no tuned table),
              # the table tuned for this GPU, then the throughput with it
      TP_TAG=default-tiles tp qwen1.5-moe-a2.7b ${TPUT_ARGS:-}
      timeout ${MOETUNE_S:-300} python3 benchmarks/tune_fused_moe.py \
          --config $C/qwen1.5-moe-a2.7b/config.json --quick --out-dir "$OUT/fused_moe_configs" \
          2>&1 | grep -v -i warn | tail -6
      cp "$OUT"/fused_moe_configs/*.json plugins/triton/litevllm_triton/fused_moe_configs/ \
          && TP_TAG=tuned-tiles tp qwen1.5-moe-a2.7b ${TPUT_ARGS:-} ;;
    moelat)  # issue 15: fused-MoE tiles tuned for this GPU (register tiles for 1-8 rows too),
             # then MoE batch 1 / 16 decode with the default tiles and the tuned ones
      timeout ${MOETUNE_S:-200} python3 benchmarks/tune_fused_moe.py \
          --config $C/qwen1.5-moe-a2.7b/config.json --quick --tokens ${MOE_TOKENS:-1,16,4,2,8,32,64,256} \
          --out-dir "$OUT/fused_moe_configs" > "$OUT/moe_tune.log" 2>&1
      grep "M=" "$OUT/moe_tune.log" | cut -c1-200
      for t in default tuned; do
        [ $t = tuned ] && cp "$OUT"/fused_moe_configs/*.json plugins/triton/litevllm_triton/fused_moe_configs/
        timeout 90 python3 benchmarks/gpu_suite.py --out "$OUT/moelat_$t.jsonl" --only qwen_moe_latency \
            2>&1 | grep '"kind"' | cut -c1-250
      done ;;
    models)  # issue 16: the same workload on the other models of the issue
      for m in ${TPUT_MODELS:-qwen3-0.6b qwen1.5-moe-a2.7b llama-3-8b}; do tp $m ${TPUT_ARGS:-}; done ;;
    attn)  # decode-attention tile / split sweep (issues 15, 16)
      timeout ${ATTN_S:-150} python3 benchmarks/tune_decode_attention.py ${ATTN_ARGS:---quick} \
          --out "$OUT/attn_sweep.jsonl" 2>&1 | grep -E '"best"|Error|error' | cut -c1-330 | tail -12 ;;
    kprof)  # issue 15: per-kernel GPU time of one eager decode step, batch 1
      timeout 90 python3 benchmarks/profile_kernels.py ${KPROF_ARGS:-} > "$OUT/kprof.txt" 2>&1
      grep -v -i warn "$OUT/kprof.txt" | tail -32 | cut -c1-160 ;;
    spec) python3 benchmarks/bench_spec.py --model $C/tinyllama-1.1b --only ${SPEC_ONLY:-ngram,structured} \
              --out "$OUT/spec.jsonl" 2>&1 | grep -E '^\{|Error' | tail -12 ;;
    suite) python3 benchmarks/gpu_suite.py --out "$OUT/suite.jsonl" ${SUITE_ONLY:+--only $SUITE_ONLY} 2>&1 | grep -v Warning | tail -30 ;;
    kernels) python3 benchmarks/bench_kernels.py --out "$OUT/kernels.json" 2>&1 | tail -20
             python3 benchmarks/bench_moe.py 2>&1 | tail -12 ;;
    baselines)  # result lines, or the error that stopped a baseline
      hf() { timeout 200 python3 benchmarks/hf_baseline.py "$@" 2>&1 | grep -E '^\{|Error|error:' | tail -4; }
      hf $C/tinyllama-1.1b --batch-sizes 1,32 --output-len 64 --json-out "$OUT/hf_tinyllama.json"
      hf $C/gemma-2b --batch-sizes 1,32 --output-len 64 --json-out "$OUT/hf_gemma.json"
      [ -n "${SKIP_QWEN_BASELINE:-}" ] || hf $C/qwen1.5-moe-a2.7b --mode eager --batch-sizes 1,16 \
          --output-len 16 --json-out "$OUT/hf_qwen_moe.json" ;;
    gemv)  # the skinny-GEMM sweep (merged into the plugin's table), then decode with the GEMV
           # and PDL off / GEMV on / both on, each in its own process
      G=${GEMV_MODELS:-tinyllama}
      timeout ${SWEEP_S:-200} python3 benchmarks/bench_gemv.py --models $G --m ${GEMV_M:-1,2,4,8,16} --out "$OUT/gemv_sweep.jsonl" \
          --table plugins/triton/litevllm_triton/gemv_configs/NVIDIA_H200.json > "$OUT/gemv_sweep.log" 2>&1
      grep -v "^  skip" "$OUT/gemv_sweep.log" | cut -c1-250 | tail -40
      cp plugins/triton/litevllm_triton/gemv_configs/NVIDIA_H200.json "$OUT/gemv_table.json"
      for env in "LITEVLLM_GEMV=0 LITEVLLM_PDL=0" "LITEVLLM_GEMV=1 LITEVLLM_PDL=0" \
                 "LITEVLLM_GEMV=1 LITEVLLM_PDL=1"; do
        env $env timeout 120 python3 benchmarks/bench_gemv.py --engine ${ENGINE:-tinyllama-1.1b} \
            --out "$OUT/gemv_engine.jsonl" 2>&1 | grep '^{' | cut -c1-300
      done ;;
    ab)  # new/base pairs, each run a fresh process with its tree first on PYTHONPATH
      B=${AB_BASE:-.xfer/base}
      [ -d "$B/core" ] || { echo "ab: no baseline tree at $B"; continue; }
      touch "$OUT/ab.jsonl"
      BASEPP=$B/core:$B/plugins/triton:$B/plugins/llama:$B/plugins/qwen_moe:$B/plugins/gemma
      BASEPP=$BASEPP:$B/plugins/gguf:$B/plugins/fp8:$B/plugins/gptq:${PYTHONPATH:-}
      for i in $(seq ${AB_PAIRS:-2}); do
        for tree in new base; do
          PP=${PYTHONPATH:-}; [ $tree = base ] && PP=$BASEPP
          for s in ${AB_SUITES-tinyllama_latency}; do
            rm -f /tmp/ab.jsonl
            PYTHONPATH=$PP timeout ${AB_S:-150} python3 benchmarks/gpu_suite.py --only $s \
                --out /tmp/ab.jsonl > /dev/null 2>&1 || echo "ab: $tree $s failed"
            python3 benchmarks/ab_lines.py /tmp/ab.jsonl "$tree" "$i" >> "$OUT/ab.jsonl"
          done
          for m in ${AB_TPUT:-}; do
            [ $i = 1 ] && [ $tree = new ] && warm $m
            PYTHONPATH=$PP TP_TAG="$tree $i" tp $m
          done
        done
      done
      python3 benchmarks/ab_lines.py --table "$OUT/ab.jsonl" $(ls "$OUT/tput.jsonl" 2>/dev/null) ;;
    profile) timeout 90 python3 benchmarks/profile_prefill.py 2>&1 | grep -v Warn | tail -28 ;;
    startup) timeout 150 python3 benchmarks/bench_startup.py --profile --latency ${STARTUP_ARGS:-} \
        --engine '{"max_model_len": 4096}' --out "$OUT/startup.jsonl" 2> "$OUT/startup_profile.txt" ;;
  esac
done
