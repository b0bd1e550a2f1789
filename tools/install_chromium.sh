#!/usr/bin/env bash
# Install Debian's Chromium for the headless browser checks (tools/check_site.py,
# tools/check_jupyterlab.py). Idempotent: does nothing when /usr/bin/chromium exists.
# Never runs `playwright install` (that downloads a browser from the internet).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(/usr/bin/chromium --version 2>/dev/null || echo /usr/bin/chromium)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" != "0" ]; then
    if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
        echo "install_chromium.sh: need root (or sudo) to apt-get install chromium" >&2; exit 1
    fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends chromium fonts-liberation
/usr/bin/chromium --version
