#!/usr/bin/env bash
# Prepare what a lent-GPU command carries and print the exact `run` call (tools/GPU_TASK.md):
#   .data/cifar10_jpeg.npz   the CIFAR-10 JPEG q75 copy (55.8 MB; ../shared does not travel)
#   .whl/diffusers-*.whl     diffusers without pipelines/ etc. (tools/trim_diffusers.py; none on the device)
# and check that tracked + untracked files + the carried folders stay under the 64 MiB the device accepts.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
src=$("$PY" -c 'from kdnotes.data import cifar10_path; print(cifar10_path())')
mkdir -p .data
if ! cmp -s "$src" .data/cifar10_jpeg.npz 2>/dev/null; then cp "$src" .data/cifar10_jpeg.npz; fi
"$PY" tools/trim_diffusers.py
"$PY" - <<'PYEOF'
import subprocess
from pathlib import Path
def files(*args):
    out = subprocess.run(['git', *args, '-z'], capture_output=True, text=True, check=True).stdout
    return [Path(p) for p in out.split('\0') if p]
tracked = sum(p.stat().st_size for p in files('ls-files') if p.is_file())
untracked = sum(p.stat().st_size for p in files('ls-files', '--others', '--exclude-standard') if p.is_file())
carried = {d: sum(p.stat().st_size for p in Path(d).rglob('*') if p.is_file()) for d in ('.data', '.whl')}
total, limit = tracked + untracked + sum(carried.values()), 64 * 2**20
parts = [f'tracked {tracked / 1e6:.1f} MB', f'untracked {untracked / 1e6:.1f} MB']
parts += [f'{d} {b / 1e6:.1f} MB' for d, b in carried.items()]
verdict = 'fits' if total < limit else 'TOO LARGE'
print(' + '.join(parts) + f' = {total / 1e6:.1f} MB of {limit / 1e6:.1f} MB ({verdict})')
if total >= limit: raise SystemExit('over the 64 MiB limit: remove untracked files or large results first')
PYEOF
sha=$(git rev-parse HEAD)
if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
  sha="$sha+dirty"
  echo "note: uncommitted changes travel too; the records will say $sha (commit first for clean provenance)"
fi
echo
echo "device run parameters:"
echo "  command:   KDNOTES_GIT_COMMIT=$sha bash tools/gpu_task.sh"
echo '  carry:     [".data", ".whl"]'
echo "  timeout_s: 600"
echo "afterwards, here: tar -xf <files_at>/results.tar   (adds nbs/results/gpu/*.json), then commit them"
