#!/usr/bin/env bash
# Make sure the TeX Live tools the PDF needs are present; install them with apt when missing.
set -euo pipefail
pkgs=(texlive-xetex texlive-latex-extra texlive-fonts-recommended latexmk fonts-dejavu-core
      lmodern tex-gyre)
missing=()
command -v xelatex >/dev/null || missing+=(xelatex)
command -v latexmk >/dev/null || missing+=(latexmk)
[ -d /usr/share/texmf/fonts/opentype/public/tex-gyre ] || missing+=(tex-gyre)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf ] || missing+=(fonts-dejavu-core)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "The PDF needs TeX Live; missing: ${missing[*]}. Installing: ${pkgs[*]}"
if ! command -v apt-get >/dev/null; then
  echo "error: apt-get is not available on this machine. Install XeLaTeX, latexmk, the TeX Gyre" >&2
  echo "fonts and GNU FreeFont by hand (Debian names: ${pkgs[*]}), then run make again." >&2
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then SUDO="sudo"; else
    echo "error: installing TeX Live needs root; run as root, or install: ${pkgs[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq "${pkgs[@]}" >/dev/null
echo "TeX Live installed."
