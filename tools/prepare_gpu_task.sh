#!/usr/bin/env bash
# Prepare what a lent-GPU command carries and print the exact `run` call (tools/GPU_TASK.md):
#   .data/cifar10_jpeg.npz.gz  the CIFAR-10 JPEG q75 copy, gzip'd (55.8 -> 18.6 MB; ../shared does not travel;
#                              tools/gpu_task.sh unpacks it on the device and checks its sha256 there)
#   .whl/diffusers-*.whl       the full diffusers wheel (tools/pack_diffusers.py; none on the device)
# then check that tracked + untracked files + the carried folders fit the 64 MiB the device accepts
# (tools/gpu_size.py). Everything it writes is in ignored folders.
#   bash tools/prepare_gpu_task.sh [--spare MB] [--left SECONDS]
#     --spare MB       fail unless MB stay free under the limit (CI: `make test` runs it with --spare 10)
#     --left SECONDS   device time left (the `status` tool's budget_left_s): the printed call's budget fits it
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
spare=0 left=900
while [ $# -gt 0 ]; do
  case "$1" in
    --spare) spare=$2; shift 2 ;;
    --left) left=$2; shift 2 ;;
    *) echo "prepare_gpu_task.sh: unknown option $1 (use --spare MB, --left SECONDS)" >&2; exit 2 ;;
  esac
done
src=$("$PY" -c 'from kdnotes.data import cifar10_path; print(cifar10_path())')  # says how to fix if absent
mkdir -p .data
rm -f .data/cifar10_jpeg.npz  # the old uncompressed copy: 55.8 MB would travel
if [ ! -s .data/cifar10_jpeg.npz.gz ] || [ "$src" -nt .data/cifar10_jpeg.npz.gz ]; then
  gzip -6 -n -c "$src" > .data/cifar10_jpeg.npz.gz.tmp  # -n: no name or time inside, the same bytes each time
  mv .data/cifar10_jpeg.npz.gz.tmp .data/cifar10_jpeg.npz.gz
fi
echo ".data/cifar10_jpeg.npz.gz: $(( $(stat -c %s .data/cifar10_jpeg.npz.gz) / 1000 )) kB (from $src)"
"$PY" tools/pack_diffusers.py
"$PY" tools/gpu_size.py --carry .data .whl --spare "$spare"
sha=$(git rev-parse HEAD)
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  sha="$sha+dirty"
  echo "note: uncommitted changes travel too; the records will say $sha (commit first for clean provenance)"
fi
# the command's own budget: device time left, less a cold start (up to 3 min) and a margin for the transfers;
# gpu_task.sh kills at budget + 40 s, so the call's timeout is budget + 60 s
budget=$(( left - 240 < 480 ? left - 240 : 480 ))
if [ "$budget" -lt 200 ]; then
  echo "only $left s of device time left: under 200 s for the command, too little for the probe and a unit"
  exit 2
fi
echo
echo "device run parameters (device time left: $left s; pass --left with status's budget_left_s):"
echo "  command:   KDNOTES_GIT_COMMIT=$sha bash tools/gpu_task.sh --budget $budget"
echo '  carry:     [".data", ".whl"]'
echo "  timeout_s: $(( budget + 60 ))"
echo "afterwards, here: tar -xf <files_at>/results.tar   (adds nbs/results/gpu/*.json), then commit them"
