#!/usr/bin/env bash
# `make slurm-test`: the SLURM launcher against a real SLURM (Debian's slurm-wlm 22.05 with munge), on this machine.
#  1. installs slurm-wlm and munge if missing (apt, as root), starts a one-node cluster (tools/slurm_cluster.sh)
#  2. runs a tiny fidelity sweep serially, then with --launcher slurm --workers 2 (sbatch job arrays):
#     the records must be the serial ones (results equal, timings aside)
#  3. a second slurm sweep into a fresh folder; one running array task is scancel-ed; the sweep ends incomplete;
#     the same command again must run only the missing runs: nothing lost, no record written twice
# About 1 minute of CPU on 2 cores (three sweeps of 4 tiny runs each), plus SLURM start-up and scheduling.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
KDNOTES="$(dirname "$PYTHON")/kdnotes"
export OMP_NUM_THREADS=1 PYTHONWARNINGS=ignore

if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
    if [ "$(id -u)" != 0 ]; then echo "slurm-test: needs root to install slurm-wlm and munge (apt)" >&2; exit 1; fi
    echo "slurm-test: installing slurm-wlm and munge"
    apt-get install -y -q slurm-wlm munge >/dev/null || { apt-get update -q >/dev/null && apt-get install -y -q slurm-wlm munge >/dev/null; }
fi
[ "$(id -u)" = 0 ] || { echo "slurm-test: slurmd must run as root" >&2; exit 1; }

source tools/slurm_cluster.sh
slurm_up
trap slurm_down EXIT
WORK="$SLURM_DIR/work"
SWEEP=(fidelity --sizes 100 300 --seeds 0 1 --steps 100 --teacher-epochs 5 --device cpu --threads 1)

echo "== serial sweep"
$KDNOTES "${SWEEP[@]}" --out "$WORK/serial" > "$WORK.serial.log" 2>&1 || { cat "$WORK.serial.log"; exit 1; }
echo "== slurm sweep: --launcher slurm --workers 2"
$KDNOTES "${SWEEP[@]}" --out "$WORK/slurm" --launcher slurm --workers 2 --ttl 30 2>&1 | tee "$WORK.slurm.log" | tr '\r' '\n' | grep -v '^fidelity: *[0-9]*%' || true
if grep -q 'Bypassing sacct' "$WORK.slurm.log"; then echo "slurm-test: submitit's sacct warnings reached the user" >&2; exit 1; fi

echo "== slurm sweep with one running array task cancelled"
$KDNOTES "${SWEEP[@]}" --out "$WORK/cancel" --launcher slurm --workers 2 --ttl 30 > "$WORK.cancel.log" 2>&1 &
SWEEP_PID=$!
task=''
for _ in $(seq 240); do  # up to 60 s for a task to be running
    task=$(squeue --noheader --array --states=RUNNING --format=%i | head -1)
    [ -n "$task" ] && break
    sleep 0.25
done
[ -n "$task" ] || { echo "slurm-test: no array task started" >&2; cat "$WORK.cancel.log"; exit 1; }
sleep 2  # inside its run
scancel "$task"
echo "scancel $task"
set +e; wait $SWEEP_PID; code=$?; set -e
tr '\r' '\n' < "$WORK.cancel.log" | grep -v '^fidelity: *[0-9]*%' | grep -v '^\s*$' | sed 's/^/  /'
echo "first attempt exit status: $code"
ls "$WORK/cancel/fidelity-runs"/fidelity-*.json | xargs -n1 basename > "$WORK.before"
$PYTHON tools/slurm_check.py snapshot "$WORK/cancel/fidelity-runs" "$WORK.snapshot.json"
echo "== the same command again"
$KDNOTES "${SWEEP[@]}" --out "$WORK/cancel" --launcher slurm --workers 2 --ttl 30 2>&1 | tr '\r' '\n' | grep -v '^fidelity: *[0-9]*%' | grep -v '^\s*$' | sed 's/^/  /'
$PYTHON tools/slurm_check.py compare "$WORK/serial/fidelity-runs" "$WORK/slurm/fidelity-runs" "$WORK/cancel/fidelity-runs" \
    --snapshot "$WORK.snapshot.json" --cancelled-exit "$code"
