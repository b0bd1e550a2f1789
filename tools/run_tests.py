"""The whole test suite of kdnotes, step by step, with the time of each step.

Run it as `make test` (which creates .venv and installs what is missing first), or directly with
`.venv/bin/python tools/run_tests.py`. Steps:
  1. the export (tools/export.py: nbdev_export, generated parts wrapped at 110 columns), then a check that
     kdnotes/ did not change (the package matches the notebooks)
  2. nbdev_test on every notebook (cells tagged #|slow or #|gpu are skipped)
  3. pytest tests/
  4. gpu-size: the lent-GPU call still fits, with 10 MB to spare (tools/prepare_gpu_task.sh --spare 10:
     the tree, untracked files and the carried CIFAR-10 file and diffusers wheel against 64 MiB)
  5. gpu-dry-run: the lent-GPU command (tools/gpu_task.sh) on the CPU at tiny size (tools/GPU_TASK.md)
  6. docs build into docs/ (offline)
  7. headless-Chromium check of every page of the built site
  8. headless-Chromium check of a widget in JupyterLab
Options: --skip STEP [STEP ...] (names: export nbs pytest gpu-size gpu-dry-run docs site lab),
--only STEP [...].
"""
import argparse, hashlib, os, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def tree_digest(folder: Path) -> dict:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob('*.py')) if '__pycache__' not in p.parts}


def sh(*cmd, cwd=ROOT, ok=(0,)) -> int:
    print('$', ' '.join(map(str, cmd)), flush=True)
    return 0 if subprocess.run(list(map(str, cmd)), cwd=cwd).returncode in ok else 1


def step_export() -> int:
    before = tree_digest(ROOT / 'kdnotes')
    if sh(BIN / 'python', ROOT / 'tools' / 'export.py'): return 1
    after = tree_digest(ROOT / 'kdnotes')
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    if changed:
        print(f'kdnotes/ did not match the notebooks: {", ".join(changed)} changed on export. '
              'Run `make export` and commit kdnotes/ together with the notebooks.')
        return 1
    print('kdnotes/ matches the notebooks')
    return 0


def step_pytest() -> int:
    code = subprocess.run([sys.executable, '-m', 'pytest', 'tests', '-q', '-p', 'no:cacheprovider'], cwd=ROOT).returncode
    if code == 5:
        print('pytest collected no tests: tests/ must hold the test suite'); return 1
    return 0 if code == 0 else 1


def step_nbs() -> int:
    # One BLAS/OpenMP thread per notebook: two notebooks run at once, and oversubscribed threads on
    # 2 cores were measured 10-100x slower than one thread each.
    workers = str(min(2, os.cpu_count() or 1))
    env = dict(os.environ, OMP_NUM_THREADS='1', MKL_NUM_THREADS='1')
    print('$ OMP_NUM_THREADS=1 nbdev_test --n_workers', workers, '--timing', flush=True)
    return 0 if subprocess.run([str(BIN / 'nbdev_test'), '--n_workers', workers, '--timing'], cwd=ROOT, env=env).returncode == 0 else 1


def step_gpu_size() -> int:
    # the call that a lent GPU gets must fit 64 MiB: fail here, with room to spare, not on the day a GPU comes
    env = dict(os.environ, PYTHON=sys.executable)
    try:
        subprocess.run([sys.executable, '-c', 'from kdnotes.data import cifar10_path; cifar10_path()'],
                       cwd=ROOT, check=True, capture_output=True)
    except subprocess.CalledProcessError:
        if os.environ.get('CI'): print('no CIFAR-10 file (../shared/data or $KDNOTES_CIFAR10)'); return 1
        print('SKIPPED: no CIFAR-10 file here (../shared/data or $KDNOTES_CIFAR10); CI has it'); return 0
    print('$ bash tools/prepare_gpu_task.sh --spare 10', flush=True)
    cmd = ['bash', 'tools/prepare_gpu_task.sh', '--spare', '10']
    code = subprocess.run(cmd, cwd=ROOT, env=env).returncode
    return 1 if code else 0


def step_gpu_dry_run() -> int:
    # keeps the GPU command working between lent GPU sessions: same script, CPU, tiny, the carried wheel
    if sh(sys.executable, 'tools/pack_diffusers.py'): return 1
    out = ROOT / 'runs' / 'gpu-dry-run'
    env = dict(os.environ, PYTHON=sys.executable, OUT=str(out), OMP_NUM_THREADS='1')
    print('$ bash tools/gpu_task.sh --dry-run --unit all', flush=True)
    code = subprocess.run(['bash', 'tools/gpu_task.sh', '--dry-run', '--unit', 'all'], cwd=ROOT, env=env).returncode
    return 0 if code == 0 else 1


STEPS = {
    'export': step_export,
    'nbs': step_nbs,
    'pytest': step_pytest,
    'gpu-size': step_gpu_size,
    'gpu-dry-run': step_gpu_dry_run,
    'docs': lambda: sh(sys.executable, 'tools/build_docs.py'),
    'site': lambda: sh(sys.executable, 'tools/check_site.py'),
    # the Hinton chapter's temperature slider: run all cells in JupyterLab, move the slider, the figure must change
    'lab': lambda: sh(sys.executable, 'tools/check_jupyterlab.py', 'nbs/10_hinton_kd.ipynb', '--timeout', '240'),
}

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--skip', nargs='*', default=[], choices=list(STEPS))
    ap.add_argument('--only', nargs='*', default=None, choices=list(STEPS))
    args = ap.parse_args()
    todo = [s for s in (args.only or STEPS) if s not in args.skip]
    results, t_all = [], time.perf_counter()
    for name in todo:
        print(f'\n=== {name} ===', flush=True)
        t0 = time.perf_counter(); failed = STEPS[name]()
        results.append((name, failed, time.perf_counter() - t0))
        print(f'=== {name}: {"FAILED" if failed else "ok"} in {results[-1][2]:.1f} s ===', flush=True)
    print('\nstep      result   seconds')
    for name, failed, secs in results: print(f'{name:<9} {"FAILED" if failed else "ok":<8} {secs:7.1f}')
    n_failed = sum(f for _, f, _ in results)
    print(f'total              {time.perf_counter() - t_all:7.1f}')
    print(f'steps: {len(results) - n_failed} passed, {n_failed} failed')
    sys.exit(1 if n_failed else 0)
