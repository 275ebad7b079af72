#!/usr/bin/env bash
# Make sure a headless Chromium is present for the HTML book's browser test
# (tests/test_html.py); install Debian's chromium with apt when it is missing.
set -euo pipefail
for b in chromium chromium-browser google-chrome chrome; do
  command -v "$b" >/dev/null && exit 0
done
echo "The browser test needs Chromium; installing Debian's chromium."
exec bash "$(dirname "$0")/apt-install.sh" Chromium chromium
