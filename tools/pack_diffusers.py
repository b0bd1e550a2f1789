"""Build .whl/diffusers-<version>-py3-none-any.whl from the venv's installed diffusers, for the lent GPU.

The device has no diffusers and no internet, so the command carries it as a wheel (tools/gpu_task.sh
installs it with pip --target; `make gpu-dry-run` installs the same wheel). By default the wheel is the
full package: every file its installed RECORD lists, each checked against the hash recorded there, so the
wheel holds exactly the files of the wheel pip installed (6.4 MB for diffusers 0.42). A module the old
trimmed wheel dropped can therefore not fail the import on the device. `--trim` still builds the trimmed
wheel (without pipelines/, modular_pipelines/, commands/, experimental/, guiders/, models/autoencoders,
models/controlnets: 1.6 MB), for a tree that has no room for the full one.
Usage: python tools/pack_diffusers.py [--trim] [--out .whl]
"""

import argparse, base64, csv, hashlib, importlib.metadata as md, io, sys, zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DROP = {'pipelines', 'modular_pipelines', 'commands', 'experimental', 'guiders'}
DROP_MODELS = {'autoencoders', 'controlnets'}  # model families UNet2DModel does not import
SKIP_INFO = {'INSTALLER', 'RECORD', 'REQUESTED', 'direct_url.json'}  # written by the installer, not the wheel


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()


def _trimmed(rel: str) -> bool:
    parts = rel.split('/')
    return parts[0] == 'diffusers' and len(parts) > 2 and (
        parts[1] in DROP or (parts[1] == 'models' and len(parts) > 3 and parts[2] in DROP_MODELS))


def wheel_files(dist, trim: bool = False) -> dict[str, bytes]:
    "The files of `dist`'s wheel, from its installed RECORD, each checked against the recorded sha256."
    files, info = {}, f'{dist.metadata["Name"]}-{dist.version}.dist-info'
    rows = list(csv.reader(io.StringIO(dist.read_text('RECORD'))))
    for name, hash_, _ in rows:
        if name.startswith('..') or '__pycache__' in name or name.endswith('.pyc'): continue
        if name.startswith(info + '/') and name.split('/', 1)[1] in SKIP_INFO: continue
        if trim and _trimmed(name): continue
        data = Path(dist.locate_file(name)).read_bytes()
        if hash_ != f'sha256={_digest(data)}':
            sys.exit(f'{name} differs from the installed RECORD (edited in the venv?); reinstall diffusers')
        files[name] = data
    if trim:  # the wheel says what it is
        files[f'{info}/WHEEL'] = files[f'{info}/WHEEL'].replace(b'Generator: ', b'Generator: trimmed from ')
    return files


def build(out_dir: Path = ROOT / '.whl', trim: bool = False) -> Path:
    "Write the diffusers wheel into `out_dir` (other diffusers wheels there are removed); returns its path."
    try:
        dist = md.distribution('diffusers')
    except md.PackageNotFoundError:
        sys.exit('diffusers is not installed in this Python; run `make install` first')
    whl = out_dir / f'diffusers-{dist.version}-py3-none-any.whl'
    files = wheel_files(dist, trim)
    info = f'diffusers-{dist.version}.dist-info'
    record = [f'{n},sha256={_digest(d)},{len(d)}' for n, d in files.items()] + [f'{info}/RECORD,,']
    files[f'{info}/RECORD'] = ('\n'.join(record) + '\n').encode()
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob('diffusers-*.whl'): old.unlink()
    tmp = whl.with_suffix('.tmp')
    with zipfile.ZipFile(tmp, 'w', zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for n, d in files.items():
            zi = zipfile.ZipInfo(n, date_time=(1980, 1, 1, 0, 0, 0))  # fixed time: the same files, same bytes
            zi.external_attr = 0o644 << 16
            z.writestr(zi, d, zipfile.ZIP_DEFLATED, 9)
    tmp.replace(whl)  # a killed build leaves no half wheel behind
    return whl


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--trim', action='store_true', help='drop the parts kdnotes never imports (1.6 MB)')
    ap.add_argument('--out', default=str(ROOT / '.whl'), help='folder of the wheel (carried to the device)')
    args = ap.parse_args()
    w = build(Path(args.out), args.trim)
    n = len(zipfile.ZipFile(w).namelist())
    print(f'{w}: {w.stat().st_size / 1e6:.2f} MB, {n} files ({"trimmed" if args.trim else "full"})')
