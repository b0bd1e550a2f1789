#!/usr/bin/env python
"""Open a notebook in JupyterLab 4 in headless Chromium and check that its ipywidgets slider works.

Starts JupyterLab on 127.0.0.1 (a free port, token auth, `--allow-root`, no port retries) with every
Jupyter directory in a temporary folder, opens a COPY of NOTEBOOK (siblings of the notebook are
linked next to it, so relative paths still work and the original is never saved over), then:
  Run > Run All Cells through the menus; waits (REST API: the session's kernel idle) for the
  `.widget-slider` handle and the output image; focuses the handle, presses ArrowRight; waits for
  the kernel to be idle again; asserts the image changed.
Fails when any browser request leaves 127.0.0.1 (blocked and recorded), a cell errors, or a step
times out. Screenshot: on failure test-artifacts/check_jupyterlab-failure.png, on success the path
given by --screenshot.

Usage:  .venv/bin/python tools/check_jupyterlab.py nbs/NN_chapter.ipynb [--screenshot docs_img.png]
Needs Debian's Chromium (tools/install_chromium.sh), jupyterlab>=4, ipywidgets>=8, playwright.
"""
from __future__ import annotations

import argparse, json, os, re, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path
from urllib.parse import quote, urlsplit

ROOT = Path(__file__).resolve().parent.parent
from chromium import CHROMIUM, CHROMIUM_ARGS  # tools/chromium.py: this script's folder is on sys.path
T0 = time.perf_counter()


def log(msg): print(f'[check_jupyterlab {time.perf_counter() - T0:5.1f}s] {msg}', flush=True)


class Fail(Exception): pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]


def start_lab(workdir: Path, home: Path, port: int, token: str, logf):
    env = dict(os.environ)
    env.update({'JUPYTER_CONFIG_DIR': str(home / 'config'), 'JUPYTER_DATA_DIR': str(home / 'data'),
                'JUPYTER_RUNTIME_DIR': str(home / 'runtime'), 'IPYTHONDIR': str(home / 'ipython'),
                'JUPYTERLAB_SETTINGS_DIR': str(home / 'lab-settings'),
                'JUPYTERLAB_WORKSPACES_DIR': str(home / 'lab-workspaces'),
                'JUPYTER_PLATFORM_DIRS': '1', 'PYTHONPATH': os.pathsep.join(
                    [str(ROOT)] + [p for p in env.get('PYTHONPATH', '').split(os.pathsep) if p])})
    env.pop('JUPYTER_PATH', None)
    notif = home / 'lab-settings' / '@jupyterlab' / 'apputils-extension' / 'notification.jupyterlab-settings'
    notif.parent.mkdir(parents=True, exist_ok=True)
    notif.write_text(json.dumps({'fetchNews': 'false', 'checkForUpdates': False}))   # no news prompt, no fetch
    cmd = [sys.executable, '-m', 'jupyter', 'lab', '--no-browser', '--ip=127.0.0.1', f'--port={port}',
           f'--IdentityProvider.token={token}', '--allow-root', '--ServerApp.port_retries=0',
           f'--ServerApp.root_dir={workdir}', '--LabApp.news_url=None',
           '--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate',
           '--ServerApp.open_browser=False', '--KernelSpecManager.ensure_native_kernel=True']
    return subprocess.Popen(cmd, cwd=workdir, env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True)


def api(base, token, path):
    with urllib.request.urlopen(f'{base}{path}{"&" if "?" in path else "?"}token={token}', timeout=5) as r:
        return json.loads(r.read())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('notebook', help='notebook with an ipywidgets slider driving a matplotlib figure')
    ap.add_argument('--screenshot', help='save a screenshot here when the check passes')
    ap.add_argument('--artifacts', default=str(ROOT / 'test-artifacts'), help='failure screenshot and server log')
    ap.add_argument('--timeout', type=float, default=90, help='overall limit in seconds (default 90)')
    ap.add_argument('--keep', action='store_true', help='keep the temporary folder (debugging)')
    args = ap.parse_args()
    nb = Path(args.notebook).resolve()
    if not nb.is_file(): sys.exit(f'check_jupyterlab: FAIL: no notebook {nb}')
    if not Path(CHROMIUM).exists(): sys.exit(f'check_jupyterlab: FAIL: {CHROMIUM} missing; run tools/install_chromium.sh')
    from playwright.sync_api import sync_playwright

    for old in Path(args.artifacts).glob('check_jupyterlab-*'): old.unlink()    # no stale artifacts
    tmp = Path(tempfile.mkdtemp(prefix='kdnotes-jlab-'))
    home, work = tmp / 'home', tmp / 'work'
    home.mkdir(); work.mkdir()
    for sib in nb.parent.iterdir():               # relative paths in the notebook keep working
        if sib.name != nb.name and not sib.name.startswith('.'): (work / sib.name).symlink_to(sib)
    shutil.copy2(nb, work / nb.name)              # the original is never saved over
    port, token = free_port(), 'T' + os.urandom(8).hex()
    ck = Check(nb, f'http://127.0.0.1:{port}', token, T0 + args.timeout)
    art = Path(args.artifacts)
    logf = open(tmp / 'jupyterlab.log', 'w')
    server = start_lab(work, home, port, token, logf)
    failed = None
    try:
        ck.wait_server(server)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            ctx = browser.new_context(viewport={'width': 1400, 'height': 1000}, service_workers='block')
            ctx.route('**/*', ck.route)
            page = ck.page = ctx.new_page()
            page.on('pageerror', lambda e: ck.page_errors.append(str(e).splitlines()[0][:200]))
            page.on('websocket', lambda ws: ck.external.append(ws.url) if urlsplit(ws.url).hostname != '127.0.0.1' else None)
            try:
                ck.run(args.screenshot)
            except Exception as e:
                failed = f'{type(e).__name__}: {e}'.splitlines()[0] if not isinstance(e, Fail) else str(e)
                try:
                    art.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(art / 'check_jupyterlab-failure.png'))
                    failed += f"\n  screenshot: {art / 'check_jupyterlab-failure.png'}"
                except Exception: pass
            browser.close()
    except Fail as e:
        failed = str(e)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)          # the server and the kernels it started
            try: server.wait(10)
            except subprocess.TimeoutExpired: os.killpg(server.pid, signal.SIGKILL)
        logf.close()
        if failed:
            art.mkdir(parents=True, exist_ok=True)
            shutil.copy2(tmp / 'jupyterlab.log', art / 'check_jupyterlab-server.log')
        if not args.keep: shutil.rmtree(tmp, ignore_errors=True)
    total = time.perf_counter() - T0
    if ck.external and not failed: failed = 'requests left 127.0.0.1: ' + ', '.join(sorted(set(ck.external))[:10])
    if failed:
        print(f'check_jupyterlab: FAIL ({total:.1f} s): {failed}')
        if ck.page_errors: print('  page errors: ' + '; '.join(ck.page_errors[:5]))
        sys.exit(1)
    print(f'check_jupyterlab: OK: {nb.name}: Run All Cells, slider moved with ArrowRight, image changed, '
          f'no request left 127.0.0.1; total {total:.1f} s')


class Check:
    def __init__(self, nb, base, token, deadline):
        self.nb, self.base, self.token, self.deadline = nb, base, token, deadline
        self.external, self.page_errors, self.page = [], [], None

    def left_ms(self): return max(1.0, self.deadline - time.perf_counter()) * 1000

    def route(self, r):
        u = urlsplit(r.request.url)
        if u.scheme in ('data', 'blob', 'about') or u.hostname == '127.0.0.1': return r.continue_()
        self.external.append(r.request.url); r.abort('blockedbyclient')

    def wait_server(self, server):
        limit = min(self.deadline, time.perf_counter() + 45)
        while True:
            if server.poll() is not None: raise Fail(f'JupyterLab exited with {server.returncode} (log saved)')
            try: api(self.base, self.token, '/api/status'); break
            except Exception:
                if time.perf_counter() > limit: raise Fail('JupyterLab did not answer within 45 s')
                time.sleep(0.2)
        log(f'JupyterLab up at {self.base}')

    def kernel_state(self):
        try:
            sess = [s for s in api(self.base, self.token, '/api/sessions') if s.get('path', '').endswith(self.nb.name)]
            if not sess or not sess[0].get('kernel'): return None
            return api(self.base, self.token, f"/api/kernels/{sess[0]['kernel']['id']}")['execution_state']
        except Exception: return None

    def wait_idle(self, what, stable=3):
        "Poll the REST API (not the status bar) until the notebook's kernel is idle `stable` times in a row."
        n, state = 0, None
        while time.perf_counter() < self.deadline:
            state = self.kernel_state()
            n = n + 1 if state == 'idle' else 0
            if n >= stable: return
            self.page.wait_for_timeout(250)      # keeps Playwright's routes served, unlike time.sleep
        raise Fail(f'timed out waiting for {what} (kernel state {state!r})')

    def run(self, screenshot):
        from playwright.sync_api import TimeoutError as PWTimeout
        page = self.page
        page.goto(f'{self.base}/lab/tree/{quote(self.nb.name)}?token={self.token}', wait_until='domcontentloaded',
                  timeout=self.left_ms())
        page.wait_for_selector('.jp-Notebook .jp-Cell', timeout=self.left_ms())
        self.wait_idle('the kernel to start')
        log('notebook open, kernel idle')
        # Run > Run All Cells, through the menus
        page.locator('.lm-MenuBar-item', has_text='Run').first.click(timeout=15000)
        page.locator('.lm-Menu-item', has=page.locator('.lm-Menu-itemLabel', has_text=re.compile(r'^Run All Cells$'))).click(timeout=15000)
        ERR = '.jp-OutputArea-output[data-mime-type="application/vnd.jupyter.stderr"]:has(.ansi-red-fg)'
        SLIDER = '.widget-slider .noUi-handle'
        try:
            page.wait_for_selector(f'{SLIDER}, {ERR}', state='visible', timeout=self.left_ms())
        except PWTimeout:
            raise Fail('no .widget-slider handle appeared after Run All Cells')
        self.wait_idle('Run All Cells to finish')
        if page.locator(ERR).count():
            raise Fail('a cell raised an error: ' + ' | '.join(page.locator(ERR).first.inner_text().strip().splitlines()[-3:])[:400])
        handle = page.wait_for_selector(SLIDER, state='visible', timeout=self.left_ms())
        box = handle.evaluate_handle("h => h.closest('.jp-OutputArea') || h.closest('.jp-Cell')")
        image = lambda: box.evaluate("b => { const i = b.querySelectorAll('img'); return i.length ? i[i.length - 1].src : null; }")
        readout = lambda: box.evaluate("b => ((b.querySelector('.widget-readout') || {}).textContent || '').trim()")
        while image() is None and time.perf_counter() < self.deadline: page.wait_for_timeout(200)
        before, r0 = image(), readout()
        if before is None: raise Fail('the widget shows no output image')
        log(f'slider and image present (slider value {r0!r})')
        # move the slider with the keyboard
        handle.focus()
        page.keyboard.press('ArrowRight')
        page.wait_for_timeout(300)
        self.wait_idle('the kernel after the key press')
        while image() == before and time.perf_counter() < self.deadline: page.wait_for_timeout(200)
        after, r1 = image(), readout()
        if after == before: raise Fail(f'the image did not change after ArrowRight (slider {r0!r} -> {r1!r})')
        log(f'ArrowRight: slider {r0!r} -> {r1!r}, image changed')
        if self.external: raise Fail('requests left 127.0.0.1: ' + ', '.join(sorted(set(self.external))[:10]))
        if screenshot:
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            box.evaluate("b => b.scrollIntoView({block: 'center'})")
            page.screenshot(path=screenshot)
            log(f'screenshot: {screenshot}')


if __name__ == '__main__':
    main()
