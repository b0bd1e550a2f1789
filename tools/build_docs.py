#!/usr/bin/env python
"""Build the kdnotes documentation site into docs/, offline and without Quarto.

Pipeline (each step is timed):

1. nbdev's proc step writes `_proc/`: nbdev's own processors (front matter from the title cell,
   add_show_docs, hide/export cells removed, links to documented symbols...) run in this process,
   except `exec_show_docs`: nbdev would execute every cell that contains an import (in this course
   that re-runs training); show_doc cells are rendered from the exported kdnotes modules instead.
   No notebook code runs: the outputs stored in the notebooks are published.
   `--nbdev-proc` uses nbdev's unmodified `proc_nbs` instead.
2. Those Quarto-flavoured notebooks are converted for Jupyter Book into `.jb/src/`: the front
   matter becomes the H1 (plus the rest of the title cell, which nbdev drops), `#| ` directives
   become cell tags, `{target=...}` attributes and leading `---` rules go, `$`/`$$` maths follows
   Pandoc's rules, links to the nbdev doc host and to other notebooks become local links,
   ipywidgets views are replaced by the static outputs saved in their state (or dropped).
3. One "API reference" page per module in `kdnotes/_modidx.py`.
4. `_config.yml` + `_toc.yml` (Jupyter Book 1.x, execution off) -> `jupyter-book config sphinx` ->
   conf.py without the online-only extensions -> sphinx-build `-W --keep-going`; MathJax served
   locally by sphinx-mathjax-offline. The HTML is copied into `docs/` (docs/README.md is kept) and
   checked for resources from other hosts.

Usage:  .venv/bin/python tools/build_docs.py [--force] [--no-strict] [--nbdev-proc] [--out DIR]
Then:   .venv/bin/python tools/check_site.py
"""
from __future__ import annotations

import argparse, copy, functools, html, importlib, inspect, json, os, re, shutil, subprocess, sys, time
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
@functools.lru_cache(None)
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
def _pythonpath():
    "Make `import kdnotes` work (here and in nbdev's spawned workers) without an install."
    os.chdir(ROOT)
    if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))
    os.environ['PYTHONPATH'] = os.pathsep.join([str(ROOT)] + [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep) if p])


def run_nbdev_proc(nbs: Path, force: bool) -> Path:
    "nbdev's own proc step, unchanged: it executes every cell that contains an import (slow, fragile)."
    _pythonpath()
    from nbdev.serve import proc_nbs
    try:
        return Path(proc_nbs(str(nbs), n_workers=min(4, os.cpu_count() or 1), force=force))
    except Exception as e:  # nbdev executes import/export/show_doc cells here
        die('nbdev proc step failed (nbdev executes every import, export and show_doc cell to render '
            'show_doc; a cell with imports AND other code is executed too -- split it, or mark it '
            f'`#| eval: false`):\n{e}\ncaused by: {_cause(e)}')


def run_proc(nbs: Path, notebooks: list[Path], force: bool, warnings: list) -> Path:
    """nbdev's proc step in this process, with nbdev's own processors (front matter, add_show_docs,
    hide/export removal, doc links...) except `exec_show_docs`: nbdev executes every cell that contains
    an import to render show_doc, which in a course re-runs training. Here show_doc cells are rendered
    from the exported modules instead; no notebook code runs. Writes `_proc/` like nbdev."""
    _pythonpath()
    from execnb.nbio import read_nb, write_nb
    from nbdev.processors import FilterDefaults, exec_show_docs
    from nbdev.process import Processor
    cache = ROOT / '_proc'
    if force and cache.exists(): shutil.rmtree(cache)
    cache.mkdir(exist_ok=True)
    mods = sorted(set(load_modidx(read_settings().get('lib_name', 'kdnotes')).get('syms', {})))
    lib_mtime = max([p.stat().st_mtime for p in (ROOT / read_settings().get('lib_path', 'kdnotes')).rglob('*.py')] + [0])

    def namespace(default_exp):
        ns = {}
        for mod in mods + ([f'{read_settings().get("lib_name", "kdnotes")}.{default_exp}'] if default_exp else []):
            try: m = importlib.import_module(mod)
            except Exception as e:
                warnings.append(f'cannot import {mod} to render show_doc: {e!r}'); continue
            names = getattr(m, '__all__', None) or [k for k in vars(m) if not k.startswith('_')]
            ns.update({k: getattr(m, k) for k in names if hasattr(m, k)})
            if default_exp and mod.endswith('.' + default_exp): ns.update(vars(m))
        return ns

    def make_proc(nbname, default_exp):
        class render_show_docs(Processor):
            "Replaces nbdev's exec_show_docs: evaluates show_doc(...) cells against the exported modules."
            def begin(self): self.ns = None
            def __call__(self, cell):
                if cell.cell_type != 'code' or not re.search(r'^show_doc', cell.source or '', re.M): return
                if self.ns is None: self.ns = namespace(default_exp)
                outs = []
                def show_doc(sym, renderer=None, name=None, title_level=3):
                    outs.append(render_symbol(name, sym, title_level, git_source(sym)))
                code = '\n'.join(l for l in cell.source.splitlines() if not l.lstrip().startswith('#|'))
                try: exec(code, {**self.ns, 'show_doc': show_doc})
                except Exception as e:
                    warnings.append(f'{nbname}: show_doc cell not rendered ({e!r}): {code.strip()[:80]}')
                cell.outputs = [{'output_type': 'display_data', 'metadata': {}, 'data': {'text/markdown': md}} for md in outs]
        return render_show_docs

    # cache: redo a notebook when it, the library or this script changed (or it came from another folder)
    stamp_file = cache / '.build_docs_stamps.json'
    try: stamps = json.loads(stamp_file.read_text())
    except (OSError, ValueError): stamps = {}
    os.environ['IN_TEST'] = '1'      # keeps nbdev_export() calls in notebooks inert
    try:
        for nbp in notebooks:
            dst = cache / nbp.relative_to(nbs)
            stamp = [str(nbp), nbp.stat().st_mtime, lib_mtime, Path(__file__).stat().st_mtime]
            if dst.exists() and stamps.get(str(dst)) == stamp: continue
            nb = read_nb(nbp)
            dexp = next((m.group(1) for c in nb.cells if c.cell_type == 'code'
                         for m in [re.search(r'^#\|\s*default_exp\s+(\S+)', c.source, re.M)] if m), None)
            proc = make_proc(nbp.name, dexp)
            class Procs(FilterDefaults):
                def base_procs(self): return [proc if p is exec_show_docs else p for p in super().base_procs()]
            try: Procs()(nb)
            except Exception as e: die(f'nbdev processing of {nbp.name} failed: {e!r}')
            dst.parent.mkdir(parents=True, exist_ok=True)
            write_nb(nb, dst)
            stamps[str(dst)] = stamp
    finally:
        os.environ.pop('IN_TEST', None)
        stamp_file.write_text(json.dumps(stamps, indent=1))
    return cache


def git_source(obj) -> str | None:
    "GitHub url of the file defining `obj` (settings git_url/branch), or None."
    st = read_settings()
    try: f = inspect.getsourcefile(inspect.unwrap(obj) if callable(obj) else obj)
    except TypeError: f = None
    if not f or not st.get('git_url'): return None
    try: rel = Path(f).resolve().relative_to(ROOT).as_posix()
    except ValueError: return None
    return f"{st['git_url'].rstrip('/')}/blob/{st.get('branch', 'main')}/{rel}"


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
        self.syms = modidx.get('syms', {})
        sys.path.insert(0, str(ROOT))
        for mod, syms in modidx.get('syms', {}).items():
            for qual, (url, _) in syms.items():
                page, _, anchor = url.partition('#')
                self.sym_by_anchor[(page, anchor)] = (mod, qual)
        self.chapter_ids = {}              # page file (models.html) -> set of section ids on it
        self.pages = {}                    # 01_models.ipynb, 01_models.html, models.html -> 'models'
        self.api_ids = {}                  # module -> set of ids on its API page

    def fix_class_sig(self, md: str) -> str:
        "nbdev's show_doc writes `def Name(` for classes too: say `class`."
        m = re.search(r'^#+\s+(\w+)\s*$', md, re.M)
        if not m: return md
        name = m.group(1)
        for mod, syms in self.syms.items():
            if f'{mod}.{name}' in syms:
                try: obj = getattr(importlib.import_module(mod), name, None)
                except Exception: return md
                if inspect.isclass(obj): md = md.replace(f'def {name}(', f'class {name}(', 1)
                break
        return md

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


_re_fence_line = re.compile(r'^[ \t]*(`{3,}|~{3,})')
_re_code_span = re.compile(r'(`+)(?!`).+?(?<!`)\1(?!`)', re.S)
_re_display = re.compile(r'\$\$(.+?)\$\$', re.S)
_re_inline = re.compile(r'(?<![\\$])\$(?=[^\s$])((?:\\.|[^$\\])+?)(?<=[^\s\\])\$(?![\d$])', re.S)


def pandoc_math(text: str) -> str:
    """Pandoc/Quarto rules for `$...$` and `$$...$$`, written out so that MyST reads them the same way.

    MyST's dollarmath differs: `$$...$$` inside a paragraph becomes two inline formulas, which then
    pairs every later `$` wrongly, and `$20 and $30` is maths. Pandoc: `$$...$$` anywhere is display
    maths; inline `$x$` needs no space inside the dollars and no digit after the closing one; other
    `$` are literal. Display maths becomes a `$$` block, inline maths a {math} role, and a literal `$`
    becomes `\\$`. Code (fenced blocks, code spans) is left alone."""
    out, buf, fence = [], [], None
    for line in text.splitlines(keepends=True):
        m = _re_fence_line.match(line)
        if fence is None and m:
            out.append(_math_para(''.join(buf))); buf = []; fence = m.group(1); out.append(line); continue
        if fence is not None:
            out.append(line)
            if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence) and not line.strip()[len(m.group(1)):].strip():
                fence = None
            continue
        buf.append(line)
    out.append(_math_para(''.join(buf)))
    return ''.join(out)


def _math_para(text: str) -> str:
    if '$' not in text: return text
    keep = []
    def hold(s):
        keep.append(s); return f'\x00{len(keep) - 1}\x00'
    text = _re_code_span.sub(lambda m: hold(m.group(0)), text)
    def display(m):
        tex = m.group(1).strip()
        line_start = text.rfind('\n', 0, m.start()) + 1
        prefix = text[line_start:m.start()]
        if re.match(r'\s*(>|[-*+]\s|\d+[.)]\s|\s{2,})', prefix):     # inside a quote or list: stay inline
            return hold(_role(r'\displaystyle ' + tex))
        return hold(f'\n\n$$\n{tex}\n$$\n\n')
    text = _re_display.sub(display, text)
    def inline(m):
        if '\n\n' in m.group(1) or re.search(r'\n\s*\n', m.group(1)): return m.group(0)
        return hold(_role(m.group(1)))
    text = _re_inline.sub(inline, text)
    text = re.sub(r'(?<!\\)\$', r'\\$', text)                       # what is left is a literal dollar
    while '\x00' in text:
        text = re.sub(r'\x00(\d+)\x00', lambda m: keep[int(m.group(1))], text)
    return re.sub(r'\n{3,}', '\n\n', text)


def _role(tex: str) -> str:
    tex = ' '.join(tex.split())
    ticks = '`' * (max((len(r) for r in re.findall(r'`+', tex)), default=0) + 1)
    pad = ' ' if tex.startswith('`') or tex.endswith('`') else ''
    return f'{{math}}{ticks}{pad}{tex}{pad}{ticks}'


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
        if not url.startswith(('http://', 'https://', 'mailto:')):      # a link to another chapter?
            path, _, anchor = url.partition('#')
            # `01_models.ipynb`, `nbs/01_models.ipynb` (README-style), `models.html`: a chapter page
            stem = linker.pages.get(Path(path).name) if path and not path.startswith('/') else None
            if stem is None: return m.group(0)
            if not anchor: return f'[{txt}]({"../" * depth}{stem}.ipynb)'   # Sphinx checks this one
            inner = code_html(txt[1:-1]) if txt.startswith('`') and txt.endswith('`') else html.escape(txt)
            return f'<a class="reference internal" href="{"../" * depth}{stem}.html#{anchor}">{inner}</a>'
        if not url.startswith(('http://', 'https://')): return m.group(0)
        href = linker.target(url, depth)
        if href is None:
            return m.group(0) if not url.startswith(linker.prefix) else txt   # dead doc-host link: keep text
        inner = code_html(txt[1:-1]) if txt.startswith('`') and txt.endswith('`') else html.escape(txt)
        return f'<a class="reference internal" href="{href}">{inner}</a>'
    text = _re_md_link.sub(link, text)
    return pandoc_math(text)


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
                data['text/markdown'] = linker.fix_class_sig(
                    fix_markdown(src(data['text/markdown']), linker, depth, is_output=True))
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


def title_cell_rest(orig: dict) -> str | None:
    """What nbdev drops from the title cell. nbdev turns the first markdown cell with an H1 into front
    matter (title, the first `> ` line as description, `- key: value` lines) and throws the cell away;
    any other text in that cell would be lost, so we keep it. None when nbdev consumed no cell."""
    cells = orig.get('cells', [])
    if cells and cells[0]['cell_type'] == 'raw' and re.search(r'^title:', src(cells[0]['source']), re.M): return None
    for c in cells:
        if c['cell_type'] != 'markdown': continue
        s = src(c['source'])
        if re.search(r'^#\s+\S', s, re.M):
            s = re.sub(r'^#\s+\S.*$', '', s, count=1, flags=re.M)
            s = re.sub(r'^-\s+\S.*:.*\S\s*$', '', s, flags=re.M)
            return s.strip()
    return None


def convert_nb(nb: dict, name: str, linker: Linker, orig: dict | None = None, depth=0):
    "Convert one `_proc` notebook (already loaded) in place; return its title."
    fm = front_matter(nb)
    title = str(fm.get('title') or name)
    desc = fm.get('description')
    rest = title_cell_rest(orig) if orig is not None else None
    wstate = (nb.get('metadata', {}).get('widgets', {}).get(WIDGET_STATE, {}) or {}).get('state', {})
    cells = []
    first_md = next((src(c['source']) for c in nb['cells'] if c['cell_type'] == 'markdown'
                     and not src(c['source']).startswith('<!-- WARNING')), '')
    if not re.match(r'\s*#\s', first_md):       # the page needs exactly one H1
        head = f'# {title}\n'
        if rest: head += '\n' + fix_markdown(rest, linker, depth) + '\n'
        elif desc: head += f'\n> {desc.strip()}\n'
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
    if isinstance(obj, (staticmethod, classmethod)): obj = obj.__func__
    if isinstance(obj, property): obj = obj.fget
    try: return inspect.getsourcelines(inspect.unwrap(obj))[1]
    except (TypeError, OSError, ValueError): return None


def render_symbol(name: str | None, obj, level: int, git_src: str | None) -> str:
    "Markdown for one symbol, like nbdev's show_doc, with a heading of the given level."
    from nbdev.showdoc import BasicMarkdownRenderer
    try:
        r = BasicMarkdownRenderer(obj, name=name)
        name = name or r.nm
        md = r._repr_markdown_()
    except Exception:  # unusual objects: plain docstring
        name = name or getattr(obj, '__qualname__', None) or getattr(obj, '__name__', repr(obj))
        doc = inspect.getdoc(obj) or ''
        md = f'### {name}\n\n{doc}\n'
    md = re.sub(r'\A\s*---\s*\n', '', md)
    md = re.sub(r'^\[source\]\([^)]*\)\{[^}]*\}\s*$', '', md, flags=re.M)   # re-added below, with a line number
    md = re.sub(r'^###\s+.*$', '#' * level + ' ' + name, md, count=1, flags=re.M)
    if inspect.isclass(obj): md = md.replace(f'def {obj.__name__}(', f'class {obj.__name__}(', 1)
    md = re.sub(r'^(#+ .*)\n', lambda m: m.group(1).replace('\\_', '_') + '\n', md, count=1, flags=re.M)
    line = _source_line(obj)
    if git_src and line:
        md = f'<a class="kd-source-link reference external" href="{git_src}#L{line}">source</a>\n\n' + md.lstrip()
    return md.strip() + '\n'


def _plain(title: str) -> str:
    "A chapter title without TeX (`$T^2$` -> `T²`): Sphinx's search snippets show API pages' text unrendered."
    return re.sub(r'\$([^$]+)\$', lambda m: m.group(1).replace('^2', '²').replace('\\', ''), title)


def api_pages(settings: dict, modidx: dict, out: Path, chapters: dict) -> list[tuple[str, str, set]]:
    "Write `api/<module>.md` for every module in `_modidx.py`; return [(docname, module, section ids)]."
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
        chapter = syms and Path(next(iter(syms.values()))[0].split('#')[0]).stem
        parts[-1] += f'They are explained, with examples, in the chapter [{_plain(chapters[chapter])}](../{chapter}.ipynb).\n' \
            if chapter in chapters else '\n'
        tops = [q for q in syms if q.count('.') == mod.count('.') + 1]
        tops.sort(key=lambda q: _source_line(getattr(m, q.rsplit('.', 1)[1], None)) or 10**9)
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
            meths.sort(key=lambda s: _source_line(inspect.getattr_static(obj, s.rsplit('.', 1)[1], None)) or 10**9)
            for mq in meths:
                mname = mq.rsplit('.', 1)[1]
                if mname.startswith('_') and mname not in ('__call__',): continue
                mobj = inspect.getattr_static(obj, mname, None)
                if isinstance(mobj, (staticmethod, classmethod)): mobj = mobj.__func__
                if isinstance(mobj, property): mobj = mobj.fget
                if mobj is None or not (getattr(mobj, '__doc__', None) or '').strip(): continue  # no docstring of its own
                parts.append(render_symbol(f'{short}.{mname}', mobj, 3, git_src)); ids.add(make_id(f'{short}.{mname}'))
        text = '\n'.join(p for p in parts if p)
        write_if_changed(out / 'api' / f'{mod}.md', text)
        pages.append((f'api/{mod}', mod, ids))
    return pages


# ----------------------------------------------------------------------------- step 4: Jupyter Book
CSS = """/* kdnotes: small additions to the book theme */
a.kd-source-link { float: right; font-size: smaller; }
/* pydata-sphinx-theme 0.16+ under the book theme adds a top bar holding a second search box: the sidebar has one */
#pst-header.bd-header { display: none; }
"""

# Sphinx's search page inserts results (with chapter titles that may contain maths) after MathJax ran
JS = """// kdnotes: typeset maths in search results as they appear
document.addEventListener('DOMContentLoaded', () => {
  const box = document.getElementById('search-results');
  if (!box) return;
  let pending = null;
  new MutationObserver(() => {
    clearTimeout(pending);
    pending = setTimeout(() => { if (window.MathJax && MathJax.typesetPromise) MathJax.typesetPromise([box]); }, 100);
  }).observe(box, {childList: true, subtree: true});
});
"""


def write_book_config(out: Path, settings: dict, chapters: list[str], api: list[str]):
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
                 },
        'launch_buttons': {'notebook_interface': 'classic', 'binderhub_url': '', 'jupyterhub_url': '',
                           'thebe': False, 'colab_url': '', 'deepnote_url': ''},
        'sphinx': {
            'extra_extensions': ['sphinx-mathjax-offline'],
            'config': {
                'html_static_path': ['_static'],
                'html_css_files': ['kdnotes.css'],
                'html_js_files': ['kdnotes.js'],
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
                    'extra_footer': '<p>Built offline from the notebooks in <code>nbs/</code> by '
                                    '<code>tools/build_docs.py</code>.</p>',
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
    write_if_changed(out / '_static' / 'kdnotes.js', JS)


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
    lines += ['', '', 'def setup(app):',
              '    # chapter titles in the sidebar may contain maths: load MathJax on every page, not only',
              '    # on pages whose body has a formula',
              "    app.set_html_assets_policy('always')"]
    text = '\n'.join(lines) + '\n'
    conf.write_text(text)
    stamp = builddir / 'conf.py.last'        # Sphinx does not notice every conf.py change: rebuild all then
    fresh = not stamp.exists() or stamp.read_text() != text
    cmd = [sys.executable, '-m', 'sphinx', '-b', 'html', '-q', '-d', str(builddir / 'doctrees'),
           str(srcdir), str(builddir / 'html')]
    if strict: cmd[5:5] = ['-W', '--keep-going']
    if fresh: cmd[5:5] = ['-E', '-a']
    r = subprocess.run(cmd, cwd=srcdir, text=True, capture_output=True)
    out = [l for l in ((r.stdout or '') + (r.stderr or '')).splitlines() if l.strip()]
    if r.returncode != 0:
        print('\n'.join(out[-60:]), file=sys.stderr)
        die(f'sphinx-build failed (exit {r.returncode}); sources in {srcdir}')
    for l in out:
        if 'WARNING' in l or 'ERROR' in l: print('  ' + l)
    builddir.mkdir(parents=True, exist_ok=True)
    stamp.write_text(text)


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
    ap.add_argument('--nbdev-proc', action='store_true',
                    help="use nbdev's own proc_nbs, which executes every cell containing an import")
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

    warnings: list[str] = []
    with Step('nbdev proc (show_doc, hidden cells)'):
        proc = run_nbdev_proc(nbs, args.force) if args.nbdev_proc else run_proc(nbs, notebooks, args.force, warnings)
    for w in warnings: print(f'  WARNING: {w}')

    with Step('convert notebooks for Jupyter Book'):
        import nbformat
        modidx = load_modidx(lib)
        linker = Linker(settings, modidx)
        loaded, titles = [], {}
        for p in notebooks:
            pp = proc / p.name
            if not pp.exists(): die(f'nbdev did not produce {pp}')
            nb = json.loads(pp.read_text(encoding='utf-8'))
            fm = nb['cells'] and src(nb['cells'][0]['source'])
            m = re.search(r'^output-file:\s*(\S+)', fm or '', re.M)
            page = m.group(1) if m and p.name != 'index.ipynb' else ('index.html' if p.name == 'index.ipynb' else p.stem + '.html')
            loaded.append((p, page, nb))
            linker.chapter_ids[page] = output_headings(nb)
            for k in (p.name, p.stem + '.html', page, Path(page).stem + '.ipynb'): linker.pages[k] = Path(page).stem
            titles[Path(page).stem] = str(front_matter(copy.deepcopy(nb)).get('title') or p.stem)
        keep = {'_config.yml', '_toc.yml', '_static', 'api'} | {Path(pg).stem + '.ipynb' for _, pg, _ in loaded}
        srcdir.mkdir(parents=True, exist_ok=True)
        for f in srcdir.iterdir():
            if f.name not in keep: shutil.rmtree(f) if f.is_dir() else f.unlink()
        # pictures that markdown cells link as `images/x.png` (screenshots): Sphinx copies them into the site
        if (nbs / 'images').is_dir(): shutil.copytree(nbs / 'images', srcdir / 'images')
        # committed figures that markdown cells link as `results/x/y.png` (the home page's leaderboard)
        for _, _, nb in loaded:
            for cell in nb['cells']:
                if cell['cell_type'] != 'markdown': continue
                for rel in re.findall(r'\]\((results/[^)\s]+\.png)\)', src(cell['source'])):
                    (srcdir / rel).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(nbs / rel, srcdir / rel)

    with Step('API reference pages'):
        apis = api_pages(settings, modidx, srcdir, titles)
        for doc, mod, ids in apis: linker.api_ids[mod] = ids
        if (srcdir / 'api').exists():
            for f in (srcdir / 'api').iterdir():
                if f.stem not in {m for _, m, _ in apis}: f.unlink()

    with Step('write chapters'):
        chapters = []
        for p, page, nb in loaded:
            stem = Path(page).stem
            convert_nb(nb, p.stem, linker, orig=json.loads(p.read_text(encoding='utf-8')))
            nbformat.validate(nbformat.from_dict(nb))
            write_if_changed(srcdir / f'{stem}.ipynb', json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
            chapters.append(stem)
        write_book_config(srcdir, settings, chapters, [d for d, _, _ in apis])

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
        wanted = set(chapters) | {d for d, _, _ in apis} | {'genindex', 'search', 'py-modindex'}
        for f in list(dest.rglob('*.html')):       # pages of notebooks/modules that no longer exist
            rel = f.relative_to(dest)
            if rel.parts[0] != '_static' and rel.with_suffix('').as_posix() not in wanted: f.unlink()
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
