#!/usr/bin/env python
"""Build the kdnotes documentation site into docs/, offline and without Quarto.

Pipeline (each step is timed):

1. nbdev's proc step (`nbdev.serve.proc_nbs`) writes `_proc/`: show_doc rendered as markdown,
   hidden and export cells removed, the title turned into a raw YAML front-matter cell.
   Notebooks are *not* re-executed: the outputs stored in them are published.
2. Those Quarto-flavoured notebooks are converted for Jupyter Book into `.jb/src/`: the front
   matter becomes a title, `#| ` directives become cell tags, `{target=...}` link attributes and
   leading `---` rules go, links to the nbdev doc host become local links, ipywidgets views are
   replaced by the static outputs saved inside them (or dropped), so no page needs a CDN.
3. One "API reference" page per kdnotes module (from `kdnotes/_modidx.py`).
4. Jupyter Book 1.x builds `.jb/src` (execution off, MathJax served locally by
   sphinx-mathjax-offline, `--warningiserror`); the HTML is copied into `docs/`.

Usage:  .venv/bin/python tools/build_docs.py [--force] [--no-strict] [--out docs]
"""
from __future__ import annotations

import argparse, copy, html, importlib, inspect, json, os, re, shutil, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WIDGET_VIEW = 'application/vnd.jupyter.widget-view+json'
WIDGET_STATE = 'application/vnd.jupyter.widget-state+json'
T0 = time.perf_counter()
TIMES: list[tuple[str, float]] = []


def log(msg): print(f'[build_docs {time.perf_counter() - T0:5.1f}s] {msg}', flush=True)


class Step:
    "Context manager that records how long a pipeline step took."
    def __init__(self, name): self.name = name
    def __enter__(self): self.t = time.perf_counter(); log(f'{self.name} ...'); return self
    def __exit__(self, *exc):
        dt = time.perf_counter() - self.t
        TIMES.append((self.name, dt))
        if exc[0] is None: log(f'{self.name}: {dt:.1f} s')


def die(msg):
    print(f'build_docs: ERROR: {msg}', file=sys.stderr, flush=True)
    sys.exit(1)


# ----------------------------------------------------------------------------- settings
def read_settings() -> dict:
    import configparser
    cp = configparser.ConfigParser(interpolation=None)
    cp.read(ROOT / 'settings.ini')
    return dict(cp['DEFAULT'])


def chapter_notebooks(nbs: Path) -> list[Path]:
    "Reading order: index first, then `NN_*.ipynb` sorted by name; names starting with `_` are skipped."
    idx = [nbs / 'index.ipynb'] if (nbs / 'index.ipynb').exists() else []
    rest = sorted(p for p in nbs.glob('*.ipynb') if re.match(r'\d+_', p.name))
    return idx + rest


def write_if_changed(path: Path, text: str):
    "Write only when the content differs, so Sphinx's incremental build skips unchanged pages."
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.read_text(encoding='utf-8') == text: return False
    path.write_text(text, encoding='utf-8')
    return True


# ----------------------------------------------------------------------------- step 1: nbdev proc
def run_proc(nbs: Path, force: bool) -> Path:
    os.chdir(ROOT)
    # nbdev runs each notebook in a spawned worker: make `import kdnotes` work there without an install
    os.environ['PYTHONPATH'] = os.pathsep.join([str(ROOT)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p])
    try:
        from nbdev.serve import proc_nbs
    except ImportError as e:
        die(f'cannot import nbdev ({e}); run with the project virtualenv: .venv/bin/python tools/build_docs.py')
    try:
        return Path(proc_nbs(str(nbs), n_workers=min(4, os.cpu_count() or 1), force=force))
    except Exception as e:  # nbdev executes import/export/show_doc cells here
        die('nbdev proc step failed (nbdev executes every import, export and show_doc cell to render '
            'show_doc; a cell with imports AND other code is executed too -- split it, or mark it '
            f'`#| eval: false`):\n{e}\ncaused by: {_cause(e)}')


def _cause(e) -> str:
    "The innermost exception's message (nbdev wraps the cell's error, the process pool wraps that)."
    while e.__cause__ is not None: e = e.__cause__
    t = str(e).strip().splitlines()
    return '\n'.join(t[-3:]) if t else repr(e)


# ----------------------------------------------------------------------------- step 2: conversion
def src(x) -> str: return ''.join(x) if isinstance(x, list) else (x or '')


def front_matter(nb) -> dict:
    import yaml
    c0 = nb['cells'][0] if nb['cells'] else None
    if c0 is None or c0['cell_type'] != 'raw': return {}
    s = src(c0['source']).strip()
    if not s.startswith('---'): return {}
    nb['cells'].pop(0)
    body = s.strip('-\n ')
    try: return yaml.safe_load(body) or {}
    except yaml.YAMLError: return {}


_re_directive = re.compile(r'^\s*#\|\s*([\w-]+)\s*:?\s*(.*?)\s*$')
_re_attr_link = re.compile(r'\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^)\s]+)\)\{([^}]*)\}')
_re_bare_attr = re.compile(r'(?<=\))\{(?:target|style|\.)[^}]*\}')
_re_md_link = re.compile(r'\[((?:[^\[\]]|\[[^\]]*\])*)\]\(([^)\s]+)\)')
_re_heading = re.compile(r'^(#{1,6})\s+(.+?)\s*#*\s*$', re.M)


class Linker:
    """Turns links to the nbdev doc host (`https://HOST/BASEURL/page.html#anchor`) into local links.

    nbdev's `add_links` points backticked symbols at `<page>.html#<symbol>`; the symbol is shown
    either on the chapter page (a show_doc heading) or on the API reference page."""
    def __init__(self, settings, modidx):
        host = settings.get('doc_host', '').rstrip('/')
        base = settings.get('doc_baseurl', '').strip('/')
        self.prefix = f'{host}/{base}/' if base else f'{host}/'
        self.sym_by_anchor = {}            # ('models.html', 'mlp') -> 'kdnotes.models.MLP'
        for mod, syms in modidx.get('syms', {}).items():
            for qual, (url, _) in syms.items():
                page, _, anchor = url.partition('#')
                self.sym_by_anchor[(page, anchor)] = (mod, qual)
        self.chapter_ids = {}              # page file (models.html) -> set of section ids on it
        self.api_ids = {}                  # module -> set of ids on its API page

    def target(self, url: str, here_depth: int) -> str | None:
        "Local relative href for a doc-host url, or None when it is not one of ours."
        if not url.startswith(self.prefix): return None
        rest = url[len(self.prefix):]
        page, _, anchor = rest.partition('#')
        up = '../' * here_depth
        ref = self.sym_by_anchor.get((page, anchor))
        if ref is None:
            return up + page + (f'#{anchor}' if anchor else '') if page in self.chapter_ids else None
        mod, qual = ref
        name = qual[len(mod) + 1:]
        sid = make_id(name)
        if sid in self.chapter_ids.get(page, ()): return f'{up}{page}#{sid}'
        if sid in self.api_ids.get(mod, ()): return f'{up}api/{mod}.html#{sid}'
        return None


def make_id(title: str) -> str:
    from docutils.nodes import make_id as mk
    return mk(title)


def code_html(text: str) -> str:
    return f'<code class="docutils literal notranslate"><span class="pre">{html.escape(text)}</span></code>'


def fix_markdown(text: str, linker: Linker, depth: int, is_output=False) -> str:
    "Quarto/nbdev markdown -> MyST markdown that Sphinx builds without warnings."
    if is_output:
        text = re.sub(r'\A\s*---\s*\n', '', text)        # show_doc's leading horizontal rule
    def attr_link(m):                                      # [txt](url){target="_blank" style=...}
        txt, url, attrs = m.groups()
        if 'float:right' in attrs.replace(' ', '') and txt == 'source':
            return (f'<a class="kd-source-link reference external" href="{html.escape(url)}">source</a>')
        return f'[{txt}]({url})'
    text = _re_attr_link.sub(attr_link, text)
    text = _re_bare_attr.sub('', text)
    def link(m):
        txt, url = m.groups()
        if not url.startswith(('http://', 'https://')): return m.group(0)
        href = linker.target(url, depth)
        if href is None:
            return m.group(0) if not url.startswith(linker.prefix) else txt   # dead doc-host link: keep text
        inner = code_html(txt[1:-1]) if txt.startswith('`') and txt.endswith('`') else html.escape(txt)
        return f'<a class="reference internal" href="{href}">{inner}</a>'
    text = _re_md_link.sub(link, text)
    return text


def strip_directives(code: str):
    "Remove leading `#| ` lines; return (source, directives)."
    lines, dirs, head = [], {}, True
    for line in code.splitlines():
        m = _re_directive.match(line) if head else None
        if m: dirs[m.group(1).replace('-', '_')] = m.group(2); continue
        head = head and not line.strip()
        if line.strip(): head = False
        lines.append(line)
    return '\n'.join(lines).strip('\n'), dirs


def widget_outputs(model_id: str, state: dict, seen=None) -> list:
    "Static outputs saved inside a widget tree (ipywidgets Output widgets), in display order."
    seen = seen or set()
    if model_id in seen or model_id not in state: return []
    seen.add(model_id)
    st = state[model_id].get('state', {})
    outs = []
    if state[model_id].get('model_name') == 'OutputModel':
        outs.extend(st.get('outputs', []))
    for ch in st.get('children', []) or []:
        if isinstance(ch, str) and ch.startswith('IPY_MODEL_'):
            outs.extend(widget_outputs(ch[len('IPY_MODEL_'):], state, seen))
    return outs


def clean_outputs(outputs: list, wstate: dict, linker: Linker, depth: int) -> list:
    res = []
    for o in outputs:
        o = copy.deepcopy(o)
        data = o.get('data')
        if data is not None and WIDGET_VIEW in data:
            mid = data[WIDGET_VIEW].get('model_id', '')
            # the figure an `interact` drew lives in the widget state: publish it statically
            res.extend(clean_outputs(widget_outputs(mid, wstate), {}, linker, depth))
            continue
        if data is not None:
            data = {k: v for k, v in data.items() if not k.startswith('application/vnd.jupyter.widget')
                    and k not in ('application/javascript', 'text/javascript')}
            if 'text/markdown' in data:
                data['text/markdown'] = fix_markdown(src(data['text/markdown']), linker, depth, is_output=True)
            if 'text/html' in data and re.search(r'<script[^>]+src=["\']https?:', src(data['text/html'])):
                data.pop('text/html')
            if not data: continue
            o['data'] = data
            o.setdefault('metadata', {})
            o['metadata'] = {k: v for k, v in o['metadata'].items() if not k.startswith('application/vnd.jupyter.widget')}
        if o.get('output_type') == 'stream':
            text = src(o.get('text'))
            text = re.sub(r'\x1b\[[0-9;]*[A-Za-z]', '', text)
            if not text.strip(): continue
            o['text'] = text
        res.append(o)
    return res


def convert_nb(nb: dict, name: str, linker: Linker, depth=0):
    "Convert one `_proc` notebook (already loaded) in place; return its title."
    fm = front_matter(nb)
    title = str(fm.get('title') or name)
    desc = fm.get('description')
    wstate = (nb.get('metadata', {}).get('widgets', {}).get(WIDGET_STATE, {}) or {}).get('state', {})
    cells = []
    head = f'# {title}\n'
    if desc: head += f'\n{desc.strip()}\n'
    cells.append({'cell_type': 'markdown', 'metadata': {}, 'source': head})
    for c in nb['cells']:
        s = src(c.get('source'))
        if c['cell_type'] == 'raw':
            continue
        if c['cell_type'] == 'markdown':
            if s.strip().startswith('<!-- WARNING: THIS FILE WAS AUTOGENERATED'): continue
            if not s.strip(): continue
            c = {'cell_type': 'markdown', 'metadata': {}, 'source': fix_markdown(s, linker, depth)}
            cells.append(c); continue
        code, dirs = strip_directives(s)
        tags = []
        if dirs.get('include', '').lower() == 'false': continue
        if dirs.get('echo', '').lower() == 'false' or 'hide_input' in dirs: tags.append('remove-input')
        if dirs.get('output', '').lower() == 'false' or 'hide_output' in dirs: tags.append('remove-output')
        if dirs.get('code_fold', '').lower() in ('true', 'show'): tags.append('hide-input')
        outs = clean_outputs(c.get('outputs', []), wstate, linker, depth)
        if not code.strip() and not outs: continue
        if not code.strip(): tags.append('remove-input')
        md = {'tags': sorted(set(tags))} if tags else {}
        cells.append({'cell_type': 'code', 'execution_count': None, 'metadata': md,
                      'source': code, 'outputs': outs})
    for c in cells:
        if c['cell_type'] == 'code':
            for o in c['outputs']:
                if 'execution_count' in o: o['execution_count'] = None
    for i, c in enumerate(cells): c['id'] = f'c{i:03d}'
    nb['cells'] = cells
    md = nb.get('metadata', {})
    nb['metadata'] = {'kernelspec': md.get('kernelspec') or {'display_name': 'Python 3', 'language': 'python', 'name': 'python3'},
                      'language_info': {'name': 'python'}}
    nb.setdefault('nbformat', 4); nb['nbformat_minor'] = max(nb.get('nbformat_minor', 5), 4)
    return title


def output_headings(nb) -> set[str]:
    "Section ids that headings (in markdown cells and markdown outputs) will get."
    ids = set()
    for c in nb['cells']:
        texts = [src(c.get('source'))] if c['cell_type'] == 'markdown' else []
        for o in c.get('outputs', []):
            if 'text/markdown' in o.get('data', {}): texts.append(src(o['data']['text/markdown']))
        for t in texts:
            t = re.sub(r'```.*?```', '', t, flags=re.S)
            for m in _re_heading.finditer(t): ids.add(make_id(m.group(2).strip('`')))
    return ids


# ----------------------------------------------------------------------------- step 3: API pages
def load_modidx(lib: str) -> dict:
    p = ROOT / lib / '_modidx.py'
    if not p.exists(): return {}
    g = {}
    exec(compile(p.read_text(), str(p), 'exec'), g)
    return g.get('d', {})


def _source_line(obj):
    try: return inspect.getsourcelines(inspect.unwrap(obj))[1]
    except (TypeError, OSError): return None


def render_symbol(name: str, obj, level: int, git_src: str | None) -> str:
    "Markdown for one symbol, like nbdev's show_doc, with a heading of the given level."
    from nbdev.showdoc import BasicMarkdownRenderer
    try:
        md = BasicMarkdownRenderer(obj, name=name)._repr_markdown_()
    except Exception as e:  # pragma: no cover - unusual objects
        doc = inspect.getdoc(obj) or ''
        md = f'### {name}\n\n{doc}\n'
    md = re.sub(r'\A\s*---\s*\n', '', md)
    md = re.sub(r'^\[source\]\([^)]*\)\{[^}]*\}\s*$', '', md, flags=re.M)   # re-added below, with a line number
    md = re.sub(r'^###\s+.*$', '#' * level + ' ' + name, md, count=1, flags=re.M)
    if inspect.isclass(obj): md = md.replace(f'def {obj.__name__}(', f'class {obj.__name__}(', 1)
    line = _source_line(obj)
    if git_src and line:
        md = f'<a class="kd-source-link reference external" href="{git_src}#L{line}">source</a>\n\n' + md.lstrip()
    return md.strip() + '\n'


def api_pages(settings: dict, modidx: dict, out: Path, chapters: set) -> list[tuple[str, str, set]]:
    "Write `api/<module>.md` for every module in `_modidx.py`; return [(docname, module)]."
    lib = settings.get('lib_name', 'kdnotes')
    git_url = settings.get('git_url', '').rstrip('/')
    branch = settings.get('branch', 'main')
    sys.path.insert(0, str(ROOT))
    pages = []
    for mod, syms in sorted(modidx.get('syms', {}).items()):
        try: m = importlib.import_module(mod)
        except Exception as e: die(f'cannot import {mod} for its API page: {e!r}')
        rel = inspect.getsourcefile(m)
        git_src = f'{git_url}/blob/{branch}/{Path(rel).resolve().relative_to(ROOT).as_posix()}' if git_url and rel else None
        doc = inspect.getdoc(m) or ''
        parts = [f'# {mod}\n', f'{doc.strip()}\n' if doc.strip() else '',
                 f'`from {mod} import ...`: the public functions and classes of this module. ']
        chapter = syms and next(iter(syms.values()))[0].split('#')[0]
        parts[-1] += f'They are explained, with examples, in [this chapter](../{Path(chapter).stem}.ipynb).\n' \
            if chapter and Path(chapter).stem in chapters else '\n'
        tops = [q for q in syms if q.count('.') == mod.count('.') + 1]
        public = [q for q in tops if not q.rsplit('.', 1)[1].startswith('_')]
        allnames = getattr(m, '__all__', None)
        if allnames is not None: public = [q for q in public if q.rsplit('.', 1)[1] in allnames] or public
        ids = set()
        for q in public:
            short = q[len(mod) + 1:]
            obj = getattr(m, short, None)
            if obj is None: continue
            parts.append(render_symbol(short, obj, 2, git_src)); ids.add(make_id(short))
            meths = [s for s in syms if s.startswith(q + '.') and s.count('.') == q.count('.') + 1]
            for mq in meths:
                mname = mq.rsplit('.', 1)[1]
                if mname.startswith('_') and mname not in ('__call__',): continue
                mobj = inspect.getattr_static(obj, mname, None)
                if isinstance(mobj, (staticmethod, classmethod)): mobj = mobj.__func__
                if isinstance(mobj, property): mobj = mobj.fget
                if mobj is None: continue
                parts.append(render_symbol(f'{short}.{mname}', mobj, 3, git_src)); ids.add(make_id(f'{short}.{mname}'))
        text = '\n'.join(p for p in parts if p)
        write_if_changed(out / 'api' / f'{mod}.md', text)
        pages.append((f'api/{mod}', mod, ids))
    return pages


# ----------------------------------------------------------------------------- step 4: Jupyter Book
CSS = """/* kdnotes: small additions to the book theme */
a.kd-source-link { float: right; font-size: smaller; }
"""


def write_book_config(out: Path, settings: dict, chapters: list[str], api: list[str], logo_title: str):
    title = settings.get('title', 'kdnotes')
    cfg = {
        'title': title,
        'author': settings.get('author', ''),
        'copyright': settings.get('copyright', ''),
        'only_build_toc_files': True,
        'execute': {'execute_notebooks': 'off'},
        'parse': {'myst_enable_extensions': ['amsmath', 'dollarmath', 'colon_fence', 'deflist', 'html_image',
                                             'html_admonition', 'substitution'],
                  'myst_url_schemes': ['mailto', 'http', 'https']},
        'html': {'use_repository_button': False, 'use_issues_button': False, 'use_edit_page_button': False,
                 'use_download_button': False, 'use_fullscreen_button': False, 'home_page_in_navbar': True,
                 'baseurl': '', 'analytics': {}, 'comments': {'hypothesis': False, 'utterances': False},
                 'extra_footer': f'<p>Built offline from the notebooks in <code>nbs/</code> by '
                                 f'<code>tools/build_docs.py</code>.</p>'},
        'launch_buttons': {'notebook_interface': 'classic', 'binderhub_url': '', 'jupyterhub_url': '',
                           'thebe': False, 'colab_url': '', 'deepnote_url': ''},
        'sphinx': {
            'extra_extensions': ['sphinx-mathjax-offline'],
            'config': {
                'html_static_path': ['_static'],
                'html_css_files': ['kdnotes.css'],
                'html_show_copyright': True,
                'html_last_updated_fmt': None,
                'nb_render_markdown_format': 'myst',
                'nb_ipywidgets_js': {},            # never pull require.js / widget managers from a CDN
                'nb_merge_streams': True,
                'suppress_warnings': ['myst.header'],   # chapters may jump heading levels
                'html_show_sourcelink': False,
                'html_copy_source': False,
                'html_theme_options': {
                    'search_bar_text': 'Search the notes...',
                    'use_sidenotes': False,
                    'show_navbar_depth': 1,
                    'use_download_button': False,
                    'use_fullscreen_button': False,
                    'use_repository_button': False,
                    'use_issues_button': False,
                    'use_edit_page_button': False,
                    'launch_buttons': {},
                    'home_page_in_toc': True,
                },
                'html_context': {'default_mode': 'light'},
                'mathjax3_config': {'tex': {'inlineMath': [['\\(', '\\)']], 'displayMath': [['\\[', '\\]']]}},
            },
        },
    }
    import yaml
    write_if_changed(out / '_config.yml', yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True))
    toc = {'format': 'jb-book', 'root': chapters[0],
           'parts': [{'caption': 'Chapters', 'chapters': [{'file': c} for c in chapters[1:]]}] if chapters[1:] else []}
    if api: toc['parts'].append({'caption': 'API reference', 'chapters': [{'file': a} for a in api]})
    if not toc['parts']: del toc['parts']
    write_if_changed(out / '_toc.yml', yaml.safe_dump(toc, sort_keys=False))
    write_if_changed(out / '_static' / 'kdnotes.css', CSS)


# Extensions that Jupyter Book 1.x always adds but that this offline site must not have: sphinx_thebe
# puts a CDN url (unpkg) into every page and declares its globals twice; comments need the internet;
# the LaTeX helpers are not used for HTML.
DROP_EXTENSIONS = {'sphinx_thebe', 'sphinx_comments', 'sphinx_jupyterbook_latex'}


def build_book(srcdir: Path, builddir: Path, strict: bool):
    """`jupyter-book config sphinx` turns _config.yml/_toc.yml into conf.py; we drop the online-only
    extensions and duplicated list entries from it and run sphinx-build (what `jupyter-book build` does)."""
    bindir = Path(sys.executable).parent
    conf = srcdir / 'conf.py'
    r = subprocess.run([str(bindir / 'jupyter-book'), 'config', 'sphinx', str(srcdir)], text=True, capture_output=True)
    if r.returncode != 0 or not conf.exists(): die(f'jupyter-book config sphinx failed:\n{r.stdout}{r.stderr}')
    ns = {}
    exec(conf.read_text(), ns)
    lines = ['# Generated by tools/build_docs.py from _config.yml (jupyter-book config sphinx), then trimmed.']
    for k, v in ns.items():
        if k.startswith('__'): continue
        if k == 'extensions': v = [e for e in v if e not in DROP_EXTENSIONS]
        if isinstance(v, list): v = list(dict.fromkeys(v))     # jupyter-book appends config lists twice
        lines.append(f'{k} = {v!r}')
    conf.write_text('\n'.join(lines) + '\n')
    cmd = [sys.executable, '-m', 'sphinx', '-b', 'html', '-q', '-d', str(builddir / 'doctrees'),
           str(srcdir), str(builddir / 'html')]
    if strict: cmd[4:4] = ['-W', '--keep-going']
    r = subprocess.run(cmd, cwd=srcdir, text=True, capture_output=True)
    out = [l for l in ((r.stdout or '') + (r.stderr or '')).splitlines() if l.strip()]
    if r.returncode != 0:
        print('\n'.join(out[-60:]), file=sys.stderr)
        die(f'sphinx-build failed (exit {r.returncode}); sources in {srcdir}')
    for l in out:
        if 'WARNING' in l or 'ERROR' in l: print('  ' + l)


README = """# docs/: the built documentation site (generated; do not edit)

Everything in this folder except this README is generated by

    .venv/bin/python tools/build_docs.py

from the notebooks in `nbs/` (nbdev's proc step, then Jupyter Book 1.x with execution off:
the published outputs are the ones saved in the notebooks) and is ignored by git.
Open `docs/index.html` in a browser, or serve the folder:

    python -m http.server -d docs 8000

The site works offline: MathJax is served from `_static/mathjax/` and no page requests
anything from another host (`tools/check_site.py` checks this in headless Chromium).

People with Quarto installed can instead use nbdev's own tooling (`nbdev_preview`,
`nbdev_docs`), configured by `nbs/_quarto.yml`.
"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--out', default=str(ROOT / 'docs'), help='where the HTML goes (default: docs/)')
    ap.add_argument('--force', action='store_true', help='ignore the nbdev proc and Sphinx caches')
    ap.add_argument('--no-strict', action='store_true', help='do not treat Sphinx warnings as errors')
    ap.add_argument('--nbs', help='notebook folder (default: nbs_path from settings.ini; other folders are for testing)')
    args = ap.parse_args()

    settings = read_settings()
    nbs = Path(args.nbs).resolve() if args.nbs else ROOT / settings.get('nbs_path', 'nbs')
    lib = settings.get('lib_name', 'kdnotes')
    jb = ROOT / '.jb'
    srcdir, builddir = jb / 'src', jb / 'build'
    if args.force and jb.exists(): shutil.rmtree(jb)
    notebooks = chapter_notebooks(nbs)
    if not notebooks: die(f'no notebooks found in {nbs} (index.ipynb, NN_*.ipynb)')
    if notebooks[0].name != 'index.ipynb': log('WARNING: nbs/index.ipynb is missing; the first chapter becomes the home page')

    with Step('nbdev proc (show_doc, hidden cells)'):
        proc = run_proc(nbs, args.force)

    with Step('convert notebooks for Jupyter Book'):
        import nbformat
        modidx = load_modidx(lib)
        linker = Linker(settings, modidx)
        loaded = []
        for p in notebooks:
            pp = proc / p.name
            if not pp.exists(): die(f'nbdev did not produce {pp}')
            nb = json.loads(pp.read_text(encoding='utf-8'))
            fm = nb['cells'] and src(nb['cells'][0]['source'])
            m = re.search(r'^output-file:\s*(\S+)', fm or '', re.M)
            page = m.group(1) if m and p.name != 'index.ipynb' else ('index.html' if p.name == 'index.ipynb' else p.stem + '.html')
            loaded.append((p, page, nb))
            linker.chapter_ids[page] = output_headings(nb)
        keep = {'_config.yml', '_toc.yml', '_static', 'api'} | {Path(pg).stem + '.ipynb' for _, pg, _ in loaded}
        srcdir.mkdir(parents=True, exist_ok=True)
        for f in srcdir.iterdir():
            if f.name not in keep: shutil.rmtree(f) if f.is_dir() else f.unlink()

    with Step('API reference pages'):
        apis = api_pages(settings, modidx, srcdir, {Path(pg).stem for _, pg, _ in loaded})
        for doc, mod, ids in apis: linker.api_ids[mod] = ids
        if (srcdir / 'api').exists():
            for f in (srcdir / 'api').iterdir():
                if f.stem not in {m for _, m, _ in apis}: f.unlink()

    with Step('write chapters'):
        chapters = []
        for p, page, nb in loaded:
            stem = Path(page).stem
            convert_nb(nb, p.stem, linker)
            nbformat.validate(nbformat.from_dict(nb))
            write_if_changed(srcdir / f'{stem}.ipynb', json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
            chapters.append(stem)
        write_book_config(srcdir, settings, chapters, [d for d, _, _ in apis], settings.get('title'))

    with Step('jupyter-book build'):
        build_book(srcdir, builddir, strict=not args.no_strict)

    with Step('copy HTML into docs/'):
        html_dir = builddir / 'html'
        dest = Path(args.out).resolve()
        dest.mkdir(parents=True, exist_ok=True)
        for f in dest.iterdir():
            if f.name == 'README.md': continue
            shutil.rmtree(f) if f.is_dir() else f.unlink()
        for f in html_dir.iterdir():
            if f.name in ('.buildinfo', '.doctrees'): continue
            (shutil.copytree if f.is_dir() else shutil.copy2)(f, dest / f.name)
        for f in (dest / '_static').glob('*macros.html'): f.unlink()   # theme template fragments, not pages
        (dest / '.nojekyll').touch()
        if dest == (ROOT / 'docs').resolve(): write_if_changed(dest / 'README.md', README)
        external = []
        for f in dest.rglob('*.html'):
            t = f.read_text(encoding='utf-8', errors='replace')
            for m in re.finditer(r'<(?:script|link|img|iframe)\b[^>]*?(?:src|href)=["\'](https?:)?//[^"\']+', t):
                if 'rel="canonical"' in m.group(0): continue
                if m.group(0).startswith('<link') and 'stylesheet' not in m.group(0) and 'preload' not in m.group(0): continue
                external.append(f'{f.relative_to(dest)}: {m.group(0)[:120]}')
        if external:
            die('pages load resources from other hosts:\n  ' + '\n  '.join(external[:20]))
        if not (dest / 'index.html').exists(): die(f'{dest}/index.html was not produced')

    total = time.perf_counter() - T0
    n = len(list(dest.rglob('*.html')))
    print('timings: ' + ', '.join(f'{k} {v:.1f}s' for k, v in TIMES) + f'; total {total:.1f} s')
    print(f'OK: {n} HTML pages ({len(chapters)} chapters, {len(apis)} API pages) in {dest}')


if __name__ == '__main__':
    main()
