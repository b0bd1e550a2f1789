"""Does the lent-GPU call fit? What travels to the device: the tracked tree, untracked files git does not
ignore, and the carried folders (.data, .whl), against the 64 MiB the device accepts.

    python tools/gpu_size.py [--carry .data .whl] [--spare MB]

prints the sizes and exits 2 when the total is over the limit, or leaves less than --spare MB (decimal) to
spare. tools/prepare_gpu_task.sh runs it with no spare (the call must fit); `make test` runs
`prepare_gpu_task.sh --spare 10` (step gpu-size), so a result file or a chapter that eats the room fails
CI long before it blocks a lent GPU.
"""
import argparse, subprocess, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LIMIT = 64 * 2**20  # bytes per call (the device's limit on the working tree plus carried paths)


def git_files(*args: str) -> list[Path]:
    "Files `git ls-files ARGS` lists (relative to the repository root), those that exist."
    out = subprocess.run(['git', 'ls-files', '-z', *args], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    return [ROOT / p for p in out.split('\0') if p and (ROOT / p).is_file()]


def folder_bytes(path: Path) -> int:
    "Bytes of the files under `path` (0 if it does not exist)."
    return sum(p.stat().st_size for p in path.rglob('*') if p.is_file()) if path.exists() else 0


def measure(carry: list[str]) -> dict:
    "Bytes of each part of a call: tracked, untracked (not ignored), each carried path; and their total."
    parts = {'tracked': sum(p.stat().st_size for p in git_files()),
             'untracked': sum(p.stat().st_size for p in git_files('--others', '--exclude-standard'))}
    parts |= {c: folder_bytes(ROOT / c) if (ROOT / c).is_dir() else (ROOT / c).stat().st_size for c in carry}
    return parts | {'total': sum(parts.values())}


def largest(n: int = 5) -> list[tuple[int, str]]:
    "The n largest files that travel (tracked or untracked): where to look when the call does not fit."
    files = git_files() + git_files('--others', '--exclude-standard')
    return sorted(((p.stat().st_size, str(p.relative_to(ROOT))) for p in files), reverse=True)[:n]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--carry', nargs='*', default=['.data', '.whl'], help='carried paths (run tools/'
                    'prepare_gpu_task.sh first: they are counted as they are on disk)')
    ap.add_argument('--spare', type=float, default=0.0, help='MB that must stay free under the limit')
    args = ap.parse_args(argv)
    if args.spare < 0: ap.error('--spare must be >= 0 MB')
    missing = [c for c in args.carry if not (ROOT / c).exists()]
    if missing:
        print(f'gpu_size: {", ".join(missing)} missing; run `make gpu-prepare` first')
        return 2
    m = measure(args.carry)
    spare = LIMIT - m['total']
    print(' + '.join(f'{k} {v / 1e6:.1f} MB' for k, v in m.items() if k != 'total')
          + f' = {m["total"] / 1e6:.1f} MB of {LIMIT / 1e6:.1f} MB; {spare / 1e6:.1f} MB to spare'
          + (f' (at least {args.spare:g} MB wanted)' if args.spare else ''))
    if spare >= args.spare * 1e6:
        return 0
    verdict = 'TOO LARGE for one lent-GPU call' if spare < 0 else f'less than {args.spare:g} MB to spare'
    print(f'{verdict}; the largest files that travel:\n'
          + '\n'.join(f'  {b / 1e6:6.2f} MB  {p}' for b, p in largest())
          + '\nremove untracked files, or shrink results (round stored logits, tools/shrink_pngs.py)')
    return 2


if __name__ == '__main__':
    sys.exit(main())
