export OUT
SUITE_ONLY=tinyllama,tinyllama_single_step timeout 200 bash benchmarks/run_gpu.sh suite
timeout 150 bash benchmarks/run_gpu.sh kernels
timeout 170 bash benchmarks/run_gpu.sh tests
