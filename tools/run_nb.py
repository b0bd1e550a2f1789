"""Execute notebooks in place, storing their outputs (the docs site shows them), skipping flagged cells.

Usage: python tools/run_nb.py nbs/10_x.ipynb [more.ipynb ...] [--flags slow gpu]
Cells tagged with a flag from settings.ini's tst_flags (`#|slow`, `#|gpu`) are skipped, as in
`nbdev_test`, unless the flag is passed with --flags; a skipped cell's old output is cleared.
Only outputs are written back: every cell's source (its `#|` directives included) is left as it was.
Stops with a traceback on the first error. Figures are then stored at their displayed size
(tools/shrink_pngs.py), so that re-running a notebook does not bring back the 2x PNGs.
"""
import argparse, json, sys, time
from pathlib import Path
from execnb.shell import CaptureShell
from fastcore.xtras import working_directory
from nbdev.config import get_config
from nbdev.process import NBProcessor
from nbdev.frontmatter import FrontmatterProc
sys.path.insert(0, str(Path(__file__).resolve().parent))
from shrink_pngs import shrink_notebook


def run_nb(path: Path, flags: set[str]) -> float:
    skip = set(get_config().tst_flags.split()) - flags
    # nbdev's processor parses the directives out of each cell's source: execute that copy,
    # then move only the outputs into the original notebook, cell by cell.
    nb = NBProcessor(path, procs=FrontmatterProc, process=True).nb
    original = json.loads(path.read_text(encoding='utf-8'))
    if len(original['cells']) != len(nb.cells): raise RuntimeError(f'{path}: cell count changed while processing')

    def no_eval(cell):
        if cell.cell_type != 'code': return True
        if 'nbdev_export(' in cell.source: return True
        if skip & (getattr(cell, 'directives_', {}) or {}).keys():
            cell.outputs = []  # a skipped cell shows no stale output
            return True
        return False

    t0 = time.time()
    shell = CaptureShell(path)
    with working_directory(path.parent):
        shell.run_all(nb, exc_stop=True, preproc=no_eval)
    for orig, done in zip(original['cells'], nb.cells):
        if orig['cell_type'] == 'code':
            orig['outputs'] = [dict(o) for o in done.get('outputs', [])]
            orig['execution_count'] = done.get('execution_count')
    path.write_text(json.dumps(original, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
    shrink_notebook(path)  # display resolution: the tree stays lean (issue 28)
    return time.time() - t0


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('notebooks', nargs='+', type=Path)
    ap.add_argument('--flags', nargs='*', default=[], help='flags whose cells should run too (e.g. slow gpu)')
    args = ap.parse_args()
    for p in args.notebooks:
        try: print(f'{p}: {run_nb(p.resolve(), set(args.flags)):.1f} s', flush=True)
        except Exception as e:
            print(f'{p}: FAILED: {e}', file=sys.stderr); sys.exit(1)
