#!/usr/bin/env bash
# Make sure a headless Chromium is present for the HTML book's browser test
# (tests/test_html.py); install Debian's chromium with apt when it is missing.
set -euo pipefail
for b in chromium chromium-browser google-chrome chrome; do
  command -v "$b" >/dev/null && exit 0
done
echo "The browser test needs Chromium; installing Debian's chromium."
if ! command -v apt-get >/dev/null; then
  echo "error: apt-get is not available on this machine. Install Chromium by hand, then run" >&2
  echo "make again." >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "error: installing Chromium needs root; run as root, or install chromium" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium >/dev/null
echo "Chromium installed."
