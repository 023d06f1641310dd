export OUT
python3 -m pip install -q --no-deps --no-build-isolation -e . -e plugins/llama -e plugins/triton > /dev/null 2>&1
for steps in 16 1; do  # default (16 steps per sync, cold Triton cache first), then single-step
  timeout 85 lite bench throughput --model benchmarks/configs/tinyllama-1.1b --load-format dummy \
    --max-model-len 4096 --num-prompts 256 --min-len 100 --max-len 1024 --num-scheduler-steps $steps \
    --json-out $OUT/cli_throughput_$steps.json 2>&1 | grep -E "output_tok|ttft|Error" | head -3
done
