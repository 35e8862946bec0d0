#!/usr/bin/env bash
# The GPU check: one prepared script for a lent CUDA machine (an H200 here), at most 8 minutes.
#
#   OUT=/some/dir bash bench/gpu_check.sh            # on the GPU machine
#   OUT=/tmp/gpu-dry bash bench/gpu_check.sh --dry-run   # anywhere: the same steps on CPU, small
#
# 1. installs what the machine lacks: wheels carried in .whl/ (see /work/.library/device/README.md),
#    and lmzip itself from this tree (PYTHONPATH, nothing is built);
# 2. round-trips every corpus file on CUDA, compressing and decompressing there (bench/roundtrip.py);
# 3. measures compress and decompress throughput at batch sizes up to 1024 (bench/speed.py);
# 4. leaves the CSV and markdown of both in $OUT, with the machine, versions and commands.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-$(mktemp -d)}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
PY=${PYTHON:-python3}

if [[ -d .whl ]] && compgen -G ".whl/*.whl" >/dev/null; then
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}

if [[ ${1:-} == --dry-run ]]; then
    device=cpu
    roundtrip=(--max-bytes 300 --batch-size 4)
    speed=(--batches 1,4 --batch-chunk 32 --chunks 32,64 --chunk-batch 2 --ratio-chunks 32,64
           --sample-bytes 400 --path-bytes 200 --paths float32)
else
    device=cuda
    "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: use --dry-run')"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt"
    roundtrip=(--batch-size 256)
    speed=(--batches 1,16,64,256,512,1024 --batch-chunk 256 --chunks 128,512,1024 --chunk-batch 256
           --sample-bytes 8000 --path-bytes 2000 --paths bfloat16,float32)
fi

set -o pipefail
(cd bench && timeout 270 "$PY" roundtrip.py --device "$device" --out "$OUT" "${roundtrip[@]}") 2>&1 | tee "$OUT/roundtrip.log"
(cd bench && timeout 180 "$PY" speed.py --device "$device" --out "$OUT" "${speed[@]}") 2>&1 | tee "$OUT/speed.log"
echo "gpu_check: results in $OUT"
