#!/usr/bin/env bash
# One device call: install, GPU tests, the LitevLLM suite, kernel benchmarks, baselines.
# Usage: bash benchmarks/run_gpu.sh [tests|suite|kernels|baselines|profile|startup|spec ...]
#   (default: tests suite kernels baselines)
# WHEELS=dir: wheels to install first without dependencies (e.g. xgrammar for the device)
set -uo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
parts=${*:-tests suite kernels baselines}
python3 -m pip install -q --no-deps --no-build-isolation -e . -e plugins/llama -e plugins/triton \
    -e plugins/qwen_moe -e plugins/gemma -e plugins/xgrammar > "$OUT/install.log" 2>&1 || tail "$OUT/install.log"
[ -z "${WHEELS:-}" ] || python3 -m pip install -q --no-deps "$WHEELS"/*.whl >> "$OUT/install.log" 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
for part in $parts; do
  case $part in
    tests) timeout 300 python3 -m pytest -q tests/gpu 2>&1 | tail -15 ;;
    spec) python3 benchmarks/bench_spec.py --model benchmarks/configs/tinyllama-1.1b \
              --out "$OUT/spec.jsonl" 2>&1 | grep -E '^\{|Error' | tail -12 ;;
    suite) python3 benchmarks/gpu_suite.py --out "$OUT/suite.jsonl" ${SUITE_ONLY:+--only $SUITE_ONLY} 2>&1 | grep -v Warning | tail -30 ;;
    kernels) python3 benchmarks/bench_kernels.py --out "$OUT/kernels.json" 2>&1 | tail -20
             python3 benchmarks/bench_moe.py 2>&1 | tail -12 ;;
    baselines) C=benchmarks/configs  # result lines, or the error that stopped a baseline
      hf() { timeout 200 python3 benchmarks/hf_baseline.py "$@" 2>&1 | grep -E '^\{|Error|error:' | tail -4; }
      hf $C/tinyllama-1.1b --batch-sizes 1,32 --output-len 64 --json-out "$OUT/hf_tinyllama.json"
      hf $C/gemma-2b --batch-sizes 1,32 --output-len 64 --json-out "$OUT/hf_gemma.json"
      [ -n "${SKIP_QWEN_BASELINE:-}" ] || hf $C/qwen1.5-moe-a2.7b --mode eager --batch-sizes 1,16 \
          --output-len 16 --json-out "$OUT/hf_qwen_moe.json" ;;
    profile) timeout 90 python3 benchmarks/profile_prefill.py 2>&1 | grep -v Warn | tail -28 ;;
    startup) timeout 150 python3 benchmarks/bench_startup.py --profile --latency \
        --engine '{"max_model_len": 4096}' --out "$OUT/startup.jsonl" 2> "$OUT/startup_profile.txt" ;;
  esac
done
