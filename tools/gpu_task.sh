#!/usr/bin/env bash
# The one command a lent GPU runs (see tools/GPU_TASK.md): unpack the carried CIFAR-10 file and check its
# sha256, install the carried diffusers wheel, then tools/gpu_task.py (the fail-fast probe, then the next
# unfinished unit), killed at the budget + 40 s.
#   on the device: KDNOTES_GIT_COMMIT=<sha> bash tools/gpu_task.sh --budget <s>  (prepare_gpu_task.sh says)
#   here, on CPU:  make gpu-dry-run   (= PYTHON=.venv/bin/python bash tools/gpu_task.sh --dry-run --unit all)
# --budget: seconds for the whole command from here on (default 480); the driver plans its unit to end inside
# it. Exit codes: 0 done, 1 a unit failed, 2 the probe failed or bad input, 3 setup failed, 124 killed.
set -uo pipefail
export KDNOTES_TASK_T0=$(date +%s.%N)  # the budget counts from here: unpacking and installing are in it
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export OUT=${OUT:-$PWD/runs/gpu_task}
mkdir -p "$OUT"
fail() { echo "gpu_task.sh: $*" | tee -a "$OUT/log.txt"; exit 3; }
budget=480 prev=
for a in "$@"; do [ "$prev" = --budget ] && budget=$a; prev=$a; done
case "$budget" in ''|*[!0-9.]*) fail "--budget must be a number of seconds, got '$budget'" ;; esac
LIMIT=${TASK_LIMIT:-$(awk -v b="$budget" 'BEGIN { printf "%d", b + 40 }')}
TMPD=$(mktemp -d /tmp/kdnotes-task.XXXXXX)
trap 'rm -rf "$TMPD"' EXIT
if [ -z "${KDNOTES_CIFAR10:-}" ] && [ -f .data/cifar10_jpeg.npz.gz ]; then
  want=$(sed -n "s/^CIFAR10_SHA256 = '\([0-9a-f]\{64\}\)'.*/\1/p" kdnotes/data.py)
  [ -n "$want" ] || fail "no CIFAR10_SHA256 in kdnotes/data.py to check the data against"
  gzip -dc .data/cifar10_jpeg.npz.gz > "$TMPD/cifar10_jpeg.npz" || fail "could not unpack .data/*.npz.gz"
  got=$(sha256sum "$TMPD/cifar10_jpeg.npz" | cut -d' ' -f1)
  [ "$got" = "$want" ] || fail "cifar10_jpeg.npz unpacked to sha256 $got, not $want: redo make gpu-prepare"
  export KDNOTES_CIFAR10=$TMPD/cifar10_jpeg.npz
  echo "gpu_task.sh: CIFAR-10 unpacked, sha256 ok"
elif [ -z "${KDNOTES_CIFAR10:-}" ] && [ -f .data/cifar10_jpeg.npz ]; then
  export KDNOTES_CIFAR10=$PWD/.data/cifar10_jpeg.npz  # an uncompressed copy (older prepare)
fi
if ls .whl/diffusers-*.whl >/dev/null 2>&1; then
  # the device has no diffusers; --no-deps: what it needs (huggingface_hub, safetensors, ...) is there
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$TMPD/site" \
    .whl/diffusers-*.whl || fail "could not install .whl/diffusers-*.whl"
  export PYTHONPATH="$TMPD/site${PYTHONPATH:+:$PYTHONPATH}"
else
  echo "gpu_task.sh: no .whl/diffusers-*.whl (run tools/prepare_gpu_task.sh); using any installed diffusers"
fi
export KDNOTES_CACHE=${KDNOTES_CACHE:-/tmp/kdnotes-cache} PYTHONUNBUFFERED=1
now=$(date +%s.%N)
left=$(awk -v l="$LIMIT" -v t0="$KDNOTES_TASK_T0" -v now="$now" 'BEGIN { printf "%d", l - (now - t0) }')
[ "$left" -gt 30 ] || fail "only $left s of the budget left after set-up: give a larger --budget"
timeout -k 10 "$left" "$PY" tools/gpu_task.py --out "$OUT" "$@"
rc=$?
if [ $rc -eq 124 ]; then
  echo "gpu_task.sh: killed at $LIMIT s; $OUT/results.tar holds what finished" | tee -a "$OUT/log.txt"
fi
ls -la "$OUT"
exit $rc
