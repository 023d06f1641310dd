export PYTHONUNBUFFERED=1
R=$OUT/r; mkdir -p $R
OUT=$R bash benchmarks/run_gpu.sh none > /dev/null 2>&1
export PYTHONPATH=/tmp/site
OUT=$R TESTS_S=200 bash benchmarks/run_gpu.sh tests
mv $R/gpu_tests.log $OUT/call3_gpu_tests.log; rm -rf $R
B=.xfer/base; BASEPP=$B/core:$B/plugins/triton:$B/plugins/qwen_moe:$B/plugins/fp8:$B/plugins/gguf:$B/plugins/llama:/tmp/site
C=benchmarks/configs
tp() {  # tree model tag [args]
  local t=$1 m=$2 tag=$3; shift 3
  PP=/tmp/site; [ $t = base ] && PP=$BASEPP
  rm -f /tmp/tp.json
  PYTHONPATH=$PP timeout 80 lite bench throughput --model $C/$m --load-format dummy --max-model-len 4096 \
      --num-prompts 256 --min-len 100 --max-len 1024 --no-progress "$@" --json-out /tmp/tp.json > /tmp/tp.log 2>&1 || { echo "$t $m failed"; tail -3 /tmp/tp.log; return; }
  python3 -c "
import json; d=json.load(open('/tmp/tp.json')); d['run']='$t $m $tag'; open('$OUT/call3_tput.jsonl','a').write(json.dumps(d)+'\n')
print(d['run'], round(d['output_tok_per_s']), 'tok/s TTFT median', round(d['ttft_ms_median']), 'ms', round(d['elapsed_s'],2), 's')"
}
tp new tinyllama-1.1b warm --num-prompts 96 > /dev/null
for t in new base new base; do tp $t tinyllama-1.1b timed; done
tp new qwen3-0.6b warm --num-prompts 96 > /dev/null
for t in new base; do tp $t qwen3-0.6b timed; done
for t in new base; do
  PP=/tmp/site; [ $t = base ] && PP=$BASEPP
  PYTHONPATH=$PP timeout 120 python3 benchmarks/gpu_suite.py --only gemma2,llama3 --out $OUT/call3_lat_$t.jsonl > /dev/null 2>&1
  python3 -c "
import json
for l in open('$OUT/call3_lat_$t.jsonl'):
    d=json.loads(l)
    if 'prefill_ms' in d: print('$t', d.get('model', d.get('suite')), d['batch_size'], d['input_len'], round(d['decode_ms_per_step'],4))
    elif 'error' in d: print('$t', d)"
done
