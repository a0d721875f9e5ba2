#!/usr/bin/env bash
# One call on a lent GPU machine (≤ 9 minutes): the CUDA tests, then benchmarks/gpu.py.
# Usage there: bash benchmarks/device_check.sh   (logs under $OUT when set, else /tmp/bnlab-device)
#   pytest.log  CUDA tests (tests/test_cuda.py, test_inference_cuda.py) + kernel tests (test_kernels.py,
#               test_triton.py: the Triton interpreter in a subprocess)
#   gpu.txt     the benchmark, line by line (a timeout keeps what was printed)
set -uo pipefail
out=${OUT:-/tmp/bnlab-device}; mkdir -p "$out"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
  python3 -c "import triton; print('triton', triton.__version__)" || echo "triton: not importable (the cuda family is used)"
} 2>&1 | tee "$out/env.txt"
export PYTHONPATH=$PWD/src${PYTHONPATH:+:$PYTHONPATH} PYTHONUNBUFFERED=1
timeout 200 python3 -m pytest -q -p no:cacheprovider -rfEs \
  tests/test_cuda.py tests/test_inference_cuda.py tests/test_kernels.py tests/test_triton.py 2>&1 \
  | tee "$out/pytest.log" | tail -30
tests_rc=${PIPESTATUS[0]}
timeout 300 python3 benchmarks/gpu.py 2>&1 | tee "$out/gpu.txt"
bench_rc=${PIPESTATUS[0]}
echo "exit codes: tests $tests_rc, benchmark $bench_rc (124 = timed out); logs in $out"
