#!/usr/bin/env bash
# Make sure commands exist, installing the Debian package that provides each when missing.
#   scripts/ensure_packages.sh COMMAND=PACKAGE [COMMAND=PACKAGE ...]
# As root it runs apt-get (and keeps any service a package brings from starting); otherwise it
# prints the exact apt-get line and fails. With everything present it does nothing.
set -euo pipefail

missing=()
for pair in "$@"; do
  command -v "${pair%%=*}" >/dev/null || missing+=("${pair#*=}")
done
[ "${#missing[@]}" = 0 ] && exit 0

if [ "$(id -u)" != 0 ]; then
  echo "missing: ${missing[*]}; run: sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
echo "ensure_packages: installing ${missing[*]}" >&2
policy=/usr/sbin/policy-rc.d
had_policy=0
[ -e "$policy" ] && had_policy=1 && cp -p "$policy" "$policy.supworker-backup"
printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy"
status=0
{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; } || status=$?
if [ "$had_policy" = 1 ]; then mv "$policy.supworker-backup" "$policy"; else rm -f "$policy"; fi
exit "$status"
