"""Checks of `make slurm-test` (tools/slurm_test.sh) on the record folders of its sweeps.

  slurm_check.py snapshot STORE FILE       the records of STORE now: name -> (mtime, provenance time)
  slurm_check.py compare SERIAL SLURM CANCELLED --snapshot FILE --cancelled-exit N
      SLURM's and CANCELLED's records equal SERIAL's (results without timings); every record in the snapshot
      is unchanged (not run twice); the cancelled sweep had exited incomplete or complete (N = 2 or 0).
"""
import argparse, json, sys
from pathlib import Path

from kdnotes.experiments import ResultStore


def _records(store: str) -> dict:
    return {r['hash']: r for r in ResultStore(store).records('fidelity')}


def _untimed(result: dict) -> dict:
    return {k: v for k, v in result.items() if 'seconds' not in k}


def snapshot(store: str, out: str):
    snap = {p.name: [p.stat().st_mtime_ns, json.loads(p.read_text())['provenance']['time_utc']]
            for p in Path(store).glob('fidelity-*.json')}
    Path(out).write_text(json.dumps(snap))
    print(f'{len(snap)} records stored before the rerun')


def compare(serial: str, slurm: str, cancelled: str, snap: str, code: int) -> int:
    problems, base = [], _records(serial)
    for name, store in (('slurm', slurm), ('after scancel and rerun', cancelled)):
        recs = _records(store)
        if set(recs) != set(base): problems.append(f'{name}: runs {sorted(recs)} != serial {sorted(base)}')
        diff = [h for h in base if h in recs and _untimed(recs[h]['result']) != _untimed(base[h]['result'])]
        if diff: problems.append(f'{name}: results differ from the serial sweep for {diff}')
        else: print(f'{name}: {len(recs)} records, results equal to the serial sweep\'s')
    before = json.loads(Path(snap).read_text())
    for p in Path(cancelled).glob('fidelity-*.json'):
        now = [p.stat().st_mtime_ns, json.loads(p.read_text())['provenance']['time_utc']]
        if p.name in before and before[p.name] != now: problems.append(f'{p.name} was written twice')
    print(f'rerun: {len(base) - len(before)} missing runs done, {len(before)} stored runs untouched')
    if code not in (0, 2): problems.append(f'the cancelled sweep exited with {code}, not 0 or 2')
    claims = list((Path(cancelled) / '_runs').glob('*.claim'))
    if claims: problems.append(f'claims left behind: {claims}')
    for p in problems: print('FAILED:', p)
    print('slurm-test: ' + ('FAILED' if problems else 'passed'))
    return 1 if problems else 0


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('cmd', choices=('snapshot', 'compare'))
    ap.add_argument('paths', nargs='+')
    ap.add_argument('--snapshot')
    ap.add_argument('--cancelled-exit', type=int, default=2)
    a = ap.parse_args()
    if a.cmd == 'snapshot': snapshot(*a.paths)
    else: sys.exit(compare(*a.paths, a.snapshot, a.cancelled_exit))
