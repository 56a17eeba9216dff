#!/usr/bin/env bash
# Validates every deployment file with the tool that will run it:
# docker-compose.yml (docker-compose config), the systemd units
# (systemd-analyze verify), and haproxy.cfg (haproxy -c).
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "docker-compose.yml"
docker-compose --env-file .env.example -f docker-compose.yml config -q

echo "haproxy.cfg"
FILESYNC_LB_BIND=127.0.0.1:7070 FILESYNC_NODE1_ADDR=127.0.0.1:7101 FILESYNC_NODE1_ADMIN=7201 \
  FILESYNC_NODE2_ADDR=127.0.0.1:7102 FILESYNC_NODE2_ADMIN=7202 haproxy -c -q -f deploy/haproxy.cfg

echo "systemd units"
if command -v systemd-analyze >/dev/null; then
  # verify wants the ExecStart binaries to exist; point them at stubs.
  mkdir -p "$tmp/bin"
  for b in filesync-http filesync-tcp; do printf '#!/bin/sh\n' >"$tmp/bin/$b"; chmod +x "$tmp/bin/$b"; done
  sed "s#/usr/local/bin/#$tmp/bin/#g" deploy/filesync-http.service >"$tmp/filesync-http.service"
  sed "s#/usr/local/bin/#$tmp/bin/#g" deploy/filesync-tcp@.service >"$tmp/filesync-tcp@1.service"
  # systemd-analyze reports unknown or malformed settings as warnings with exit 0: any line about our units fails.
  out=$(systemd-analyze verify "$tmp/filesync-http.service" "$tmp/filesync-tcp@1.service" 2>&1 || echo "verify exited non-zero")
  if printf '%s\n' "$out" | grep -E "filesync|verify exited" ; then
    echo "systemd-analyze verify found problems" >&2; exit 1
  fi
else
  echo "systemd-analyze not installed; skipped" >&2
fi

echo "env examples name only known settings"
for f in deploy/env/*.env .env.example; do
  grep -oE '^FILESYNC_[A-Z0-9_]+' "$f" | while read -r var; do
    key=$(echo "${var#FILESYNC_}" | tr 'A-Z' 'a-z')
    case "$key" in http_port|sync_port) continue ;; esac
    grep -qE "^#? ?$key =" deploy/filesync.example.toml || { echo "$f: $var is not a filesync setting" >&2; exit 1; }
  done
done
echo "deployment files ok"
