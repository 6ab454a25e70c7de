#!/usr/bin/env bash
# Make sure the interpreter can create a virtualenv (Debian ships venv separately).
set -euo pipefail
python="${1:?usage: ensure_python.sh PYTHON}"
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "supworker needs Python 3.11 or newer; found $("$python" --version 2>&1 || echo none)." >&2
  echo "On Debian: apt-get install -y python3 python3-venv (bookworm ships 3.11)." >&2
  exit 1
fi
"$python" -c 'import ensurepip, venv' 2>/dev/null && exit 0
pkg="python3-venv"
if [ "$(id -u)" = 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$pkg" >/dev/null
else
  echo "Python's venv module is missing; run: sudo apt-get install -y $pkg" >&2
  exit 1
fi
