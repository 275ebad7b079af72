#!/usr/bin/env bash
# Install Debian packages for a build step: apt-install.sh WHAT PACKAGE...
# WHAT names the step in the messages ("TeX Live", "Chromium"). Needs apt-get, and root or sudo;
# without them it says what to install by hand and exits 1.
set -euo pipefail
what=$1; shift
if ! command -v apt-get >/dev/null; then
  echo "error: apt-get is not available on this machine. Install $what by hand (Debian" >&2
  echo "packages: $*), then run make again." >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "error: installing $what needs root; run as root, or install: $*" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "$@" >/dev/null
echo "$what installed."
