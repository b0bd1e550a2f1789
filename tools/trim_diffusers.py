"""Build .whl/diffusers-<version>-py3-none-any.whl from the venv's installed diffusers, without the parts
kdnotes never imports (pipelines/, modular_pipelines/, commands/, experimental/, guiders/): about 2 MB
instead of 6.4 MB, so it travels to a lent GPU beside the repository and the CIFAR-10 file within the
64 MiB limit. UNet2DModel and the DDPM, DDIM and DPM-Solver schedulers import from it (tools/gpu_task.sh
installs it with pip --target; `make gpu-dry-run` uses it too).
"""

import base64, hashlib, importlib.metadata as md, sys, zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DROP = {'pipelines', 'modular_pipelines', 'commands', 'experimental', 'guiders'}
# model families UNet2DModel does not import (lazy imports): 0.36 MB of the 64 MiB upload
DROP_MODELS = {'autoencoders', 'controlnets'}


def _record_line(name: str, data: bytes) -> str:
    digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()
    return f'{name},sha256={digest},{len(data)}'


def build(out_dir: Path = ROOT / '.whl') -> Path:
    "Write the trimmed wheel into `out_dir` (older diffusers wheels there are removed); returns its path."
    dist = md.distribution('diffusers')
    pkg = Path(dist.locate_file('diffusers'))
    if not (pkg / '__init__.py').exists():
        sys.exit(f'diffusers not found as a folder at {pkg}; install it in this venv first')
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob('diffusers-*.whl'):
        old.unlink()
    info = f'diffusers-{dist.version}.dist-info'
    whl = out_dir / f'diffusers-{dist.version}-py3-none-any.whl'
    files = {}
    for p in sorted(pkg.rglob('*')):
        rel = p.relative_to(pkg)
        dropped = rel.parts[0] in DROP or (rel.parts[0] == 'models' and len(rel.parts) > 2 and rel.parts[1] in DROP_MODELS)
        if p.is_dir() or dropped or '__pycache__' in rel.parts or p.suffix == '.pyc':
            continue
        files[f'diffusers/{rel.as_posix()}'] = p.read_bytes()
    files[f'{info}/METADATA'] = dist.read_text('METADATA').encode()
    files[f'{info}/WHEEL'] = (
        b'Wheel-Version: 1.0\nGenerator: kdnotes tools/trim_diffusers.py\n'
        b'Root-Is-Purelib: true\nTag: py3-none-any\n'
    )
    files[f'{info}/top_level.txt'] = b'diffusers\n'
    record = [_record_line(n, d) for n, d in files.items()] + [f'{info}/RECORD,,']
    files[f'{info}/RECORD'] = ('\n'.join(record) + '\n').encode()
    with zipfile.ZipFile(whl, 'w', zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        for n, d in files.items():
            z.writestr(n, d)
    return whl


if __name__ == '__main__':
    w = build()
    gone = sorted(DROP) + [f'models/{m}' for m in sorted(DROP_MODELS)]
    print(f'{w.relative_to(ROOT)}: {w.stat().st_size / 1e6:.2f} MB (without {", ".join(gone)})')
