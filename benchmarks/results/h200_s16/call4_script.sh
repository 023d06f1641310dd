export PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R
OUT=$R bash benchmarks/run_gpu.sh none > /dev/null 2>&1; rm -rf $R
export PYTHONPATH=/tmp/site
B=.xfer/base; BASEPP=$B/core:$B/plugins/triton:$B/plugins/qwen_moe:$B/plugins/fp8:$B/plugins/gguf:$B/plugins/llama:/tmp/site
C=benchmarks/configs
timeout 60 python3 -m pytest -q -n 8 -p no:cacheprovider tests/gpu/test_triton_kernels_gpu.py tests/gpu/test_kv_cache_fp8_gpu.py tests/gpu/test_odd_head_dims_gpu.py > $OUT/call4_gpu_tests.log 2>&1
grep -E "FAILED|passed|failed" $OUT/call4_gpu_tests.log | tail -8
for t in new base new base; do
  PP=/tmp/site; [ $t = base ] && PP=$BASEPP
  PYTHONPATH=$PP timeout 50 python3 benchmarks/gpu_suite.py --only tinyllama_latency --out $OUT/call4_lat_$t.jsonl > /dev/null 2>&1
  python3 -c "
import json
for l in list(open('$OUT/call4_lat_$t.jsonl'))[-4:]:
    d=json.loads(l)
    if 'prefill_ms' in d: print('$t', d['batch_size'], d['input_len'], round(d['prefill_ms'],3), round(d['decode_ms_per_step'],4))
    elif 'error' in d: print('$t', d)"
done
tp() {  # tree model tag [args]
  local t=$1 m=$2 tag=$3; shift 3
  PP=/tmp/site; [ $t = base ] && PP=$BASEPP
  rm -f /tmp/tp.json
  PYTHONPATH=$PP timeout 45 lite bench throughput --model $C/$m --load-format dummy --max-model-len 4096 \
      --num-prompts 256 --min-len 100 --max-len 1024 --no-progress "$@" --json-out /tmp/tp.json > /tmp/tp.log 2>&1 || { echo "$t $m failed"; tail -3 /tmp/tp.log; return; }
  python3 -c "
import json; d=json.load(open('/tmp/tp.json')); d['run']='$t $m $tag'; open('$OUT/call4_tput.jsonl','a').write(json.dumps(d)+'\n')
print(d['run'], round(d['output_tok_per_s']), 'tok/s TTFT median', round(d['ttft_ms_median']), 'ms', round(d['elapsed_s'],2), 's')"
}
tp new qwen3-0.6b warm --num-prompts 96 > /dev/null
for t in new base; do tp $t qwen3-0.6b timed; done
PYTHONPATH=$BASEPP timeout 60 python3 $B/benchmarks/tune_decode_attention.py --tiles 64:4:3,128:4:3 --splits 2,4,16 \
  --shapes tinyllama_b1,tinyllama_b32,tinyllama_b64,llama3_b1,llama3_b64 --out $OUT/call4_tune_base.jsonl 2>&1 | grep best | cut -c1-260
