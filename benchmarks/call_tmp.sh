export OUT
SUITE_ONLY=tinyllama,tinyllama_single_step,tinyllama_16_steps,llama3,gemma,qwen_moe timeout 270 bash benchmarks/run_gpu.sh suite profile
python3 -c "
import time; t=time.perf_counter()
from litevllm import LLM
llm = LLM('benchmarks/configs/tinyllama-1.1b', load_format='dummy')
print('startup, fresh process, warm Triton cache: %.1f s' % (time.perf_counter()-t))" 2>&1 | tail -1
SKIP_QWEN_BASELINE=1 bash benchmarks/run_gpu.sh baselines
