#!/usr/bin/env python
"""Check the built docs site (docs/) in headless Chromium, offline.

Serves the folder on 127.0.0.1 (random free port), visits EVERY html page and fails when:
  * a request goes to any host other than 127.0.0.1 (it is blocked and recorded),
  * a same-host request answers with an HTTP error (missing script, style, image...),
  * a page has no <title>, or throws an uncaught JavaScript error,
  * an <img> does not load (naturalWidth 0),
  * a page with maths is not typeset by MathJax (no mjx-container per math element, or raw TeX left),
  * an internal link points to a missing file or to an anchor that the target page lacks,
  * the search page (search.html?q=WORD) finds nothing for a known word.
Prints one line per page and the total time; saves a screenshot of a failing page under
test-artifacts/.

Usage:  .venv/bin/python tools/check_site.py [--word distillation] [--docs docs]
Needs Debian's Chromium (tools/install_chromium.sh) and the PyPI package playwright; never
run `playwright install`.
"""
from __future__ import annotations

import argparse, functools, html.parser, re, sys, threading, time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
from chromium import CHROMIUM, CHROMIUM_ARGS  # tools/chromium.py: this script's folder is on sys.path


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *a): pass
    def end_headers(self):
        self.send_header('Cache-Control', 'no-store')
        super().end_headers()


def serve(folder: Path):
    srv = ThreadingHTTPServer(('127.0.0.1', 0), functools.partial(QuietHandler, directory=str(folder)))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f'http://127.0.0.1:{srv.server_address[1]}'


class IdCollector(html.parser.HTMLParser):
    "Collect every id= and <a name=> in an HTML file (anchor targets)."
    def __init__(self):
        super().__init__(); self.ids = set()
    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k == 'id' or (tag == 'a' and k == 'name'): self.ids.add(v)


@functools.lru_cache(maxsize=None)
def page_ids(path: Path) -> frozenset:
    p = IdCollector(); p.feed(path.read_text(encoding='utf-8', errors='replace'))
    return frozenset(p.ids)


def local_file(docs: Path, url_path: str) -> Path:
    rel = unquote(url_path).lstrip('/')
    f = docs / rel
    if rel == '' or url_path.endswith('/'): f = f / 'index.html'
    return f


# JS run in each page -----------------------------------------------------------------------------
JS_IMAGES = """async () => {
  const imgs = Array.from(document.images);
  imgs.forEach(i => { if (i.loading === 'lazy') i.loading = 'eager'; });
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; setTimeout(r, 5000); })));
  return imgs.map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0}));
}"""

JS_LINKS = """() => Array.from(document.querySelectorAll('a[href]')).map(a => a.href)"""

JS_MATH = """() => ({
  math: document.querySelectorAll('.math').length,
  mjx: document.querySelectorAll('mjx-container').length,
  merror: (() => {
    const d = window.MathJax && MathJax.startup && MathJax.startup.document;
    const items = d && d.math ? Array.from(d.math) : [];
    const bad = items.filter(i => i.typesetRoot && i.typesetRoot.querySelector('mjx-merror'));
    const n = document.querySelectorAll('mjx-merror').length;
    return bad.length ? bad.map(i => (i.typesetRoot.querySelector('mjx-merror').getAttribute('data-mjx-error') || 'error')
                                      + ' in: ' + i.math.trim().slice(0, 100))
                      : (n ? [n + ' formula(s)'] : []);
  })(),
  raw: (() => {
    const w = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT, {acceptNode: n =>
      n.parentElement.closest('pre, code, script, style, textarea, mjx-container, .highlight')
        ? NodeFilter.FILTER_REJECT : NodeFilter.FILTER_ACCEPT});
    const bad = [];
    const re = /\\$\\$|\\\\\\(|\\\\\\[|\\$[^$\\n]*\\\\[a-zA-Z]+[^$\\n]*\\$|\\$[^$\\n]*[\\^_{}][^$\\n]*\\$/;
    while (w.nextNode()) { const t = w.currentNode.nodeValue; if (re.test(t)) bad.push(t.trim().slice(0, 80)); }
    return bad.slice(0, 3);
  })()
})"""

JS_SEARCH = """() => Array.from(document.querySelectorAll('#search-results li a, ul.search li a')).map(a => a.href)"""


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('word', nargs='?', default='distillation', help='a word the search page must find')
    ap.add_argument('--docs', default=str(ROOT / 'docs'), help='site folder (default: docs/)')
    ap.add_argument('--artifacts', default=str(ROOT / 'test-artifacts'), help='screenshots of failing pages go here')
    ap.add_argument('--screenshots', help='also save a full-page screenshot of every page into this folder')
    ap.add_argument('--only', help='check only pages whose path matches this glob (e.g. "dml.html"); default all')
    ap.add_argument('--timeout', type=float, default=15, help='seconds to wait for MathJax / search per page')
    args = ap.parse_args()
    t0 = time.perf_counter()
    docs = Path(args.docs).resolve()
    if not (docs / 'index.html').exists():
        sys.exit(f'check_site: FAIL: {docs}/index.html does not exist; build the site first (tools/build_docs.py)')
    if not Path(CHROMIUM).exists():
        sys.exit(f'check_site: FAIL: {CHROMIUM} is missing; run tools/install_chromium.sh')
    try:
        from playwright.sync_api import sync_playwright, TimeoutError as PWTimeout
    except ImportError:
        sys.exit('check_site: FAIL: the Python package playwright is missing (pip install playwright; '
                 'do NOT run `playwright install`)')

    for old in Path(args.artifacts).glob('check_site-*.png'): old.unlink()      # no stale screenshots
    pages = sorted(p.relative_to(docs).as_posix() for p in docs.rglob('*.html') if '_static' not in p.relative_to(docs).parts)
    pages.remove('index.html'); pages.insert(0, 'index.html')
    if args.only:
        import fnmatch
        pages = [p for p in pages if fnmatch.fnmatch(p, args.only)]
    srv, base = serve(docs)
    host = urlsplit(base).netloc
    problems: list[str] = []                      # "page: problem"
    current = {'page': '(start)'}
    external: list[tuple[str, str]] = []
    http_errors: list[tuple[str, str]] = []
    js_errors: list[tuple[str, str]] = []
    art = Path(args.artifacts)

    def route(r):
        u = urlsplit(r.request.url)
        if u.scheme in ('data', 'blob', 'about') or u.netloc == host: return r.continue_()
        external.append((current['page'], r.request.url)); r.abort('blockedbyclient')

    def on_response(resp):
        u = urlsplit(resp.url)
        if u.netloc == host and resp.status >= 400: http_errors.append((current['page'], f'HTTP {resp.status} {u.path}'))

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        ctx = browser.new_context(viewport={'width': 1280, 'height': 900}, service_workers='block')
        ctx.route('**/*', route)
        page = ctx.new_page()
        page.on('response', on_response)
        page.on('pageerror', lambda e: js_errors.append((current['page'], str(e).splitlines()[0][:200])))
        t_launch = time.perf_counter() - t0
        print(f'check_site: {len(pages)} pages from {docs} at {base} (browser up in {t_launch:.1f} s)')

        def fail_shot(name):
            art.mkdir(parents=True, exist_ok=True)
            shot = art / ('check_site-' + re.sub(r'[^\w.-]', '_', name) + '.png')
            try: page.screenshot(path=str(shot), full_page=False)
            except Exception: return ''
            return str(shot)

        for name in pages:
            tp = time.perf_counter()
            current['page'] = name
            mine = []
            try:
                page.goto(f'{base}/{name}', wait_until='load', timeout=args.timeout * 1000)
            except Exception as e:
                mine.append(f'does not load: {e}'.splitlines()[0])
            title = (page.title() or '').strip()
            if not title: mine.append('no <title>')
            imgs = page.evaluate(JS_IMAGES)
            for i in imgs:
                if not i['ok']: mine.append(f"image does not load: {i['src']}")
            # maths: Sphinx wraps every formula in .math; MathJax must turn each into mjx-container
            m = page.evaluate(JS_MATH)
            src_has_math = m['math'] > 0 or 'class="math' in (docs / name).read_text(encoding='utf-8', errors='replace')
            if src_has_math and 'search.html' not in name and 'genindex' not in name:
                try:
                    page.wait_for_function("n => document.querySelectorAll('mjx-container').length >= n && "
                                           "!document.querySelector('.math:not(:has(mjx-container))')",
                                           arg=max(1, m['math']), timeout=args.timeout * 1000)
                except PWTimeout:
                    pass
                m = page.evaluate(JS_MATH)
                if m['mjx'] < max(1, m['math']):
                    mine.append(f"maths not typeset by MathJax: {m['mjx']} mjx-container for {m['math']} formulas")
                for err in m['merror']: mine.append(f"MathJax TeX error: {err}")
            if m['raw']: mine.append(f"raw TeX left in the text: {m['raw']!r}")
            # internal links: the file must exist and the anchor must be on it
            links = page.evaluate(JS_LINKS)
            n_int = 0
            for href in set(links):
                u = urlsplit(href)
                if u.scheme not in ('http', 'https') or u.netloc != host: continue
                n_int += 1
                f = local_file(docs, u.path)
                if not f.is_file():
                    mine.append(f'broken link to {u.path}'); continue
                if u.fragment and f.suffix == '.html' and unquote(u.fragment) not in page_ids(f):
                    mine.append(f'broken anchor {u.path}#{u.fragment}')
            if name == 'search.html' or name.endswith('/search.html'):
                try:
                    page.goto(f'{base}/{name}?q={args.word}', wait_until='load')
                    page.wait_for_function(
                        "() => document.querySelectorAll('#search-results li, ul.search li').length > 0 || "
                        "/did not match any|no results/i.test((document.querySelector('#search-results')||{}).innerText||'')",
                        timeout=args.timeout * 1000)
                except PWTimeout:
                    pass
                hits = page.evaluate(JS_SEARCH)
                for _ in range(20):  # summaries arrive one by one and MathJax typesets each after: wait for it
                    page.wait_for_timeout(500)
                    raw = page.evaluate(JS_MATH)['raw']
                    if not raw: break
                if raw: mine.append(f'raw TeX left in the search results: {raw!r}')
                if not hits: mine.append(f'search for {args.word!r} finds nothing')
                else: print(f'  search {args.word!r}: {len(hits)} results, first {urlsplit(hits[0]).path}')
            if args.screenshots:
                Path(args.screenshots).mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(Path(args.screenshots) / (re.sub(r'[^\w.-]', '_', name) + '.png')), full_page=True)
            mine += [p for pg, p in http_errors if pg == name]
            mine += [f'uncaught JS error: {e}' for pg, e in js_errors if pg == name]
            mine += [f'request to another host blocked: {u}' for pg, u in external if pg == name]
            dt = time.perf_counter() - tp
            status = 'OK  ' if not mine else 'FAIL'
            print(f'{status} {name:40s} {dt:4.1f}s title={title[:40]!r} imgs={len(imgs)} '
                  f'math={m["mjx"]}/{m["math"]} links={n_int}')
            if mine:
                shot = fail_shot(name)
                for p in dict.fromkeys(mine): problems.append(f'{name}: {p}')
                if shot: print(f'     screenshot: {shot}')
        browser.close()
    srv.shutdown()
    total = time.perf_counter() - t0
    if problems:
        print(f'\ncheck_site: FAIL: {len(problems)} problem(s) on {len({p.split(":")[0] for p in problems})} page(s) '
              f'in {total:.1f} s:')
        for p in problems: print('  ' + p)
        sys.exit(1)
    print(f'check_site: OK: {len(pages)} pages, no request left 127.0.0.1, total {total:.1f} s')


if __name__ == '__main__':
    main()
