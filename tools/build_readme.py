"""Write README.md from nbs/index.ipynb (nbdev_readme needs Quarto, which these machines lack).

Markdown cells are copied; code cells become ```python blocks, followed by their text output
(a Markdown display, such as a table, is copied as Markdown).
Links into nbs/ are kept relative to the repository root. --check exits 1 if README.md is stale.
"""
import json, sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def render(nb_path: Path) -> str:
    nb = json.loads(nb_path.read_text(encoding='utf-8'))
    parts = ['<!-- Generated from nbs/index.ipynb by tools/build_readme.py: edit the notebook, not this file. -->']
    for cell in nb['cells']:
        src = ''.join(cell['source']).strip()
        if not src or src.startswith('#|') and all(l.startswith('#|') for l in src.splitlines()): continue
        # the notebook lives in nbs/, the README at the root: pictures move with it
        if cell['cell_type'] == 'markdown': parts.append(src.replace('](images/', '](nbs/images/').replace('](results/', '](nbs/results/'))
        elif cell['cell_type'] == 'code':
            parts.append('```python\n' + '\n'.join(l for l in src.splitlines() if not l.startswith('#|')) + '\n```')
            outs = cell.get('outputs', [])
            md = [''.join(o['data']['text/markdown']).strip() for o in outs if 'text/markdown' in o.get('data', {})]
            text = ''.join(''.join(o.get('text', '')) or ''.join(o.get('data', {}).get('text/plain', ''))
                           for o in outs if 'text/markdown' not in o.get('data', {}))
            if text.strip(): parts.append('```\n' + text.strip() + '\n```')
            parts += md  # a Markdown display (a table): rendered, not quoted
    return '\n\n'.join(parts) + '\n'


if __name__ == '__main__':
    text = render(ROOT / 'nbs' / 'index.ipynb')
    readme = ROOT / 'README.md'
    if '--check' in sys.argv:
        if readme.read_text(encoding='utf-8') != text:
            print('README.md is stale: run tools/build_readme.py'); sys.exit(1)
        print('README.md matches nbs/index.ipynb')
    else:
        readme.write_text(text, encoding='utf-8'); print(f'wrote {readme}')
