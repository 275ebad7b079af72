#!/usr/bin/env bash
# Make sure the TeX Live tools the PDF needs are present; install them with apt when missing.
set -euo pipefail
pkgs=(texlive-xetex texlive-latex-extra texlive-fonts-recommended latexmk fonts-dejavu-core
      lmodern tex-gyre poppler-utils)
missing=()
command -v xelatex >/dev/null || missing+=(xelatex)
command -v latexmk >/dev/null || missing+=(latexmk)
command -v pdftotext >/dev/null || missing+=(pdftotext)  # scripts/check_pdf.py reads the PDF
[ -d /usr/share/texmf/fonts/opentype/public/tex-gyre ] || missing+=(tex-gyre)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf ] || missing+=(fonts-dejavu-core)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "The PDF needs TeX Live; missing: ${missing[*]}. Installing: ${pkgs[*]}"
exec bash "$(dirname "$0")/apt-install.sh" "TeX Live" "${pkgs[@]}"
