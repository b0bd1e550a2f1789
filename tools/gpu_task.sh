#!/usr/bin/env bash
# The one command a lent GPU runs (see tools/GPU_TASK.md): install the carried trimmed diffusers wheel, then
# tools/gpu_task.py (the fail-fast probe, then the next unfinished unit), killed at TASK_LIMIT seconds.
#   on the device: KDNOTES_GIT_COMMIT=<sha> bash tools/gpu_task.sh   (prepare_gpu_task.sh prints the call)
#   here, on CPU:  make gpu-dry-run   (= PYTHON=.venv/bin/python bash tools/gpu_task.sh --dry-run --unit all)
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export OUT=${OUT:-$PWD/runs/gpu_task}
mkdir -p "$OUT"
SITE=$(mktemp -d /tmp/kdnotes-site.XXXXXX)
trap 'rm -rf "$SITE"' EXIT
if ls .whl/diffusers-*.whl >/dev/null 2>&1; then
  # the device has no diffusers; --no-deps: what it needs (huggingface_hub, safetensors, ...) is there
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$SITE" \
    .whl/diffusers-*.whl \
    || { echo "gpu_task.sh: could not install .whl/diffusers-*.whl" | tee -a "$OUT/log.txt"; exit 3; }
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "gpu_task.sh: no .whl/diffusers-*.whl (run tools/prepare_gpu_task.sh); using any installed diffusers"
fi
if [ -z "${KDNOTES_CIFAR10:-}" ] && [ -f .data/cifar10_jpeg.npz ]; then
  export KDNOTES_CIFAR10=$PWD/.data/cifar10_jpeg.npz
fi
export KDNOTES_CACHE=${KDNOTES_CACHE:-/tmp/kdnotes-cache} PYTHONUNBUFFERED=1
# the driver saves as it goes and plans to end inside its budget (480 s on the GPU); this is the hard stop
timeout -k 10 "${TASK_LIMIT:-530}" "$PY" tools/gpu_task.py --out "$OUT" "$@"
rc=$?
if [ $rc -eq 124 ]; then
  echo "gpu_task.sh: killed at ${TASK_LIMIT:-530} s; $OUT/results.tar holds what finished" \
    | tee -a "$OUT/log.txt"
fi
ls -la "$OUT"
exit $rc
