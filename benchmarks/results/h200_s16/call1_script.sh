set -x
export PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R
OUT=$R bash benchmarks/run_gpu.sh none
export PYTHONPATH=/tmp/site
OUT=$R TESTS_S=230 bash benchmarks/run_gpu.sh tests
mv $R/gpu_tests.log $OUT/call1_gpu_tests.log; rm -rf $R
timeout 120 python3 benchmarks/tune_decode_attention.py --splits-only --splits 1 --order auto \
  --shapes tinyllama_b1,tinyllama_b32,tinyllama_b128,tinyllama_b64,llama3_b1 \
  --split-tokens 64,128,256,1000000 --out $OUT/call1_tune.jsonl 2>&1 | grep best
B=.xfer/base; BASEPP=$B/core:$B/plugins/triton:$B/plugins/qwen_moe:$B/plugins/fp8:$B/plugins/gguf:$B/plugins/llama:/tmp/site
for t in new base new128 new64; do
  PP=/tmp/site; [ $t = base ] && PP=$BASEPP
  ST=0; [ $t = new128 ] && ST=128; [ $t = new64 ] && ST=64
  LITEVLLM_DECODE_SPLIT_TOKENS=$ST PYTHONPATH=$PP timeout 110 python3 benchmarks/gpu_suite.py --only tinyllama_latency --out $OUT/call1_lat_$t.jsonl > /dev/null 2>&1
  python3 -c "
import json
for l in list(open('$OUT/call1_lat_$t.jsonl'))[-5:]:
    d=json.loads(l)
    if 'prefill_ms' in d: print('$t', d['batch_size'], d['input_len'], round(d['prefill_ms'],3), round(d['decode_ms_per_step'],4))
    elif 'error' in d: print('$t', d)"
done
