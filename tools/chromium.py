"""Where Debian's Chromium is and how the browser checks (check_site.py, check_jupyterlab.py) start it."""
CHROMIUM = '/usr/bin/chromium'  # installed by tools/install_chromium.sh
# headless, and nothing that would phone home: the checks fail on any request that leaves 127.0.0.1
CHROMIUM_ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
                 '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
                 '--disable-dev-shm-usage']
