set -x
export PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R
OUT=$R bash benchmarks/run_gpu.sh none
export PYTHONPATH=/tmp/site
OUT=$R TESTS_S=230 bash benchmarks/run_gpu.sh tests
mv $R/gpu_tests.log $OUT/call2_gpu_tests.log; rm -rf $R
B=.xfer/base; BASEPP=$B/core:$B/plugins/triton:$B/plugins/qwen_moe:$B/plugins/fp8:$B/plugins/gguf:$B/plugins/llama:/tmp/site
for t in new base new base; do
  PP=/tmp/site; [ $t = base ] && PP=$BASEPP
  PYTHONPATH=$PP timeout 100 python3 benchmarks/gpu_suite.py --only tinyllama_latency --out $OUT/call2_lat_$t.jsonl > /dev/null 2>&1
  python3 -c "
import json
for l in list(open('$OUT/call2_lat_$t.jsonl'))[-4:]:
    d=json.loads(l)
    if 'prefill_ms' in d: print('$t', d['batch_size'], d['input_len'], round(d['prefill_ms'],3), round(d['decode_ms_per_step'],4))
    elif 'error' in d: print('$t', d)"
done
