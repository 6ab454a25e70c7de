#!/usr/bin/env bash
# Tools the media benchmark compares against: vipsthumbnail (Debian's libvips-tools) and ffmpeg.
# Installs what is missing when run as root; otherwise prints the apt-get line to run.
# Idempotent: with everything present it does nothing.
set -euo pipefail

missing=()
command -v vipsthumbnail >/dev/null || missing+=(libvips-tools)
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
[ "${#missing[@]}" = 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "bench tools missing; run: sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
echo "ensure_bench_tools: installing ${missing[*]}" >&2
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
