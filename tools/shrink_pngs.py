"""Re-encode the PNG figures stored in notebooks at twice their displayed size down to the displayed size.

Notebook outputs keep each matplotlib figure as a PNG of 2x its display size (its metadata gives the display
width and height): about 7.2 MB of the tree, most of what a lent-GPU call carries besides the data. At the
displayed size the page looks the same and the file is about a third. A PNG whose pixel width is at least
1.5x its displayed width is resampled (Lanczos) to the displayed size, given a 256-colour palette (figures
are flat colours and antialiased lines: it looks the same) and saved optimised at 100 dpi; it is replaced
only when the new one is smaller. Other outputs, and the notebooks' code, are left as they are.
    python tools/shrink_pngs.py [--dry-run] [--colors 256] NOTEBOOK ...   (default: every notebook in nbs/)
"""
import argparse, base64, io, json, sys
from pathlib import Path
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MIN_RATIO = 1.5  # pixel width / displayed width from which a PNG counts as stored at 2x


def shrink_png(data: bytes, width: int, height: int, colors: int = 256) -> bytes | None:
    "`data` resized to `width` x `height`, `colors` colours (0: all); None unless stored larger, now smaller."
    im = Image.open(io.BytesIO(data))
    if im.width < MIN_RATIO * width or width < 1 or height < 1:
        return None
    opaque = 'A' not in im.getbands() or im.getchannel('A').getextrema() == (255, 255)
    small = im.convert('RGB' if opaque else 'RGBA').resize((width, height), Image.LANCZOS)
    if colors:  # figures are flat colours and antialiased lines: a palette looks the same at a third the size
        method = Image.Quantize.MEDIANCUT if opaque else Image.Quantize.FASTOCTREE  # RGBA: octree only
        small = small.quantize(colors, method=method)
    buf = io.BytesIO()
    small.save(buf, format='PNG', optimize=True, dpi=(100, 100))
    return buf.getvalue() if buf.tell() < len(data) else None


def shrink_notebook(path: Path, write: bool = True, colors: int = 256) -> tuple[int, int, int]:
    "Shrink the 2x PNG outputs of the notebook at `path`; (figures shrunk, file bytes before, after)."
    text = path.read_text(encoding='utf-8')
    nb, n, saved = json.loads(text), 0, 0
    for cell in nb['cells']:
        for out in cell.get('outputs', []):
            b64, size = out.get('data', {}).get('image/png'), out.get('metadata', {}).get('image/png', {})
            if not isinstance(b64, str) or not {'width', 'height'} <= set(size):
                continue
            new = shrink_png(base64.b64decode(b64), int(size['width']), int(size['height']), colors)
            if new is not None:
                end = '\n' if b64.endswith('\n') else ''
                out['data']['image/png'] = base64.b64encode(new).decode() + end
                n, saved = n + 1, saved + len(b64) - len(out['data']['image/png'])
    if write and n:  # the layout nbdev_clean writes: one-space indent, unicode kept, a final newline
        path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n', encoding='utf-8')
    size = len(text.encode())
    return n, size, size - saved


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('notebooks', nargs='*', help='notebooks to shrink (default: nbs/**/*.ipynb)')
    ap.add_argument('--dry-run', action='store_true', help='only report what it would save')
    ap.add_argument('--colors', type=int, default=256, help='palette size (0: keep full colour)')
    args = ap.parse_args(argv)
    if not 0 <= args.colors <= 256:
        ap.error(f'--colors must be 0 (full colour) or 1..256, got {args.colors}')
    paths = [Path(p) for p in args.notebooks] or sorted((ROOT / 'nbs').rglob('*.ipynb'))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        ap.error(f'no such notebook: {", ".join(missing)}')
    total = [0, 0, 0]
    for p in paths:
        n, before, after = shrink_notebook(p, write=not args.dry_run, colors=args.colors)
        total = [t + v for t, v in zip(total, (n, before, after))]
        if n:
            print(f'{p}: {n} figures, {before / 1e6:.2f} -> {after / 1e6:.2f} MB')
    verb = 'would save' if args.dry_run else 'saved'
    print(f'{len(paths)} notebooks, {total[0]} figures shrunk: '
          f'{total[1] / 1e6:.2f} -> {total[2] / 1e6:.2f} MB, '
          f'{verb} {(total[1] - total[2]) / 1e6:.2f} MB')
    return 0


if __name__ == '__main__':
    sys.exit(main())
