#!/usr/bin/env bash
# The GPU checks, on a machine with one CUDA device and a Python that has torch (README "GPU figures").
#
#   bash bench/gpu.sh [paths] [models] [infer] [train]     (no argument: all four, in that order)
#
# paths:  tests/test_gpu_paths.py (one GPU Ray Train worker with bf16 autocast; --use-gpu inference actors)
# models: bench/models.py --device cuda (every registered model against a bare nn.LSTM)
# infer:  bench/infer.py --use-gpu --years 4 (plain GPU loop against xmw infer with one GPU actor; 1 deg and 0.5 deg)
# train:  bench/train.py --use-gpu --runs 3 --epochs 6 (plain GPU loop against one Ray Train GPU worker)
# train-mem, train-b512: one run each with the worker's shard kept on the GPU (data.in_memory), and with batch 512
# infer-startup: bench/infer.py --use-gpu --startup-profile (where the inference start-up goes, 3 runs)
#
# Packages: where the machine's Python lacks Ray and the rest, a tarball of them built for it (.gpu/site.txz, made by
# bench/gpu_site.sh, unpacked once into $XMW_GPU_SITE) goes first on PYTHONPATH. Each step has its own time limit so that one slow
# step cannot take the others' time; logs go to $OUT (or /tmp/xmw-gpu-out).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/xmw-gpu-out}
SITE=${XMW_GPU_SITE:-/tmp/xmw-gpu-site}
PY=${PYTHON:-python3}
mkdir -p "$OUT"
if [ -f .gpu/site.txz ] && [ ! -d "$SITE/ray" ]; then
  mkdir -p "$SITE" && tar xJf .gpu/site.txz -C "$SITE" || exit 1
fi
[ -d "$SITE" ] && export PYTHONPATH="$SITE:$PWD" || export PYTHONPATH="$PWD"
export PYTHONUNBUFFERED=1 RAY_DEDUP_LOGS=0
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
$PY -c "import torch, ray, zarr; print('torch', torch.__version__, 'ray', ray.__version__, 'zarr', zarr.__version__,
'cuda', torch.cuda.is_available(), torch.cuda.get_device_name(0))" 2>&1 | tee -a "$OUT/device.txt" || exit 1

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(paths models infer train)
for step in "${steps[@]}"; do
  echo "=== $step $(date -u +%T)"
  t0=$(date +%s)
  case $step in
    paths)  timeout 240 $PY -m pytest -q -p no:xdist -p no:cacheprovider tests/test_gpu_paths.py 2>&1 | tee "$OUT/paths.log" ;;
    models) timeout 90 $PY bench/models.py --device cuda --batch 256 --rounds 3 2>&1 | tee "$OUT/models.log" ;;
    infer)  timeout 300 $PY bench/infer.py --use-gpu --years 4 2>&1 | grep -v "^\s*warnings.warn\|Warning:" | tee "$OUT/infer.log" ;;
    train)  timeout 420 $PY bench/train.py --use-gpu --runs 3 --epochs 6 2>&1 | grep -v "^\s*warnings.warn\|Warning:" | tee "$OUT/train.log" ;;
    infer-startup) timeout 200 $PY bench/infer.py --use-gpu --startup-profile --years 2 2>&1 | grep -v "^\s*warnings.warn\|Warning:" | tee "$OUT/infer-startup.log" ;;
    train-mem)  timeout 200 $PY bench/train.py --use-gpu --runs 1 --epochs 6 --in-memory --no-extras 2>&1 | grep -v "^\s*warnings.warn\|Warning:" | tee "$OUT/train-mem.log" ;;
    train-b512) timeout 200 $PY bench/train.py --use-gpu --runs 1 --epochs 6 --batch-size 512 --no-extras 2>&1 | grep -v "^\s*warnings.warn\|Warning:" | tee "$OUT/train-b512.log" ;;
    *) echo "unknown step $step (paths, models, infer, infer-startup, train, train-mem, train-b512)"; exit 2 ;;
  esac
  echo "=== $step rc=${PIPESTATUS[0]} $(( $(date +%s) - t0 )) s"
done
