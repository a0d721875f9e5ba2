#!/usr/bin/env bash
# One call on a lent GPU machine: the whole test suite (CUDA tests included) and the GPU timings.
# Usage there: bash benchmarks/device_check.sh   (logs under $OUT when set)
set -uo pipefail
out=${OUT:-/tmp/bnlab-device}; mkdir -p "$out"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
python3 -c "import torch, numpy; print('torch', torch.__version__, 'numpy', numpy.__version__, 'cuda', torch.cuda.is_available())"
python3 -m pip install -q --no-deps --no-build-isolation -e . >"$out/pip.log" 2>&1 || { echo "pip install failed, using PYTHONPATH"; export PYTHONPATH=$PWD/src; }
export PYTHONUNBUFFERED=1
timeout 300 python3 -m pytest -q -p no:cacheprovider -n 8 2>&1 | tee "$out/pytest.log" | tail -15
timeout 60 python3 -m pytest -q -p no:cacheprovider -rA tests/test_cuda.py tests/test_inference_cuda.py 2>&1 | grep -E "PASSED|FAILED|ERROR|passed|failed" | tee "$out/cuda.log" | tail -25
timeout 150 python3 benchmarks/gpu.py 2>&1 | tee "$out/gpu.txt"
