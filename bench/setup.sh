#!/usr/bin/env bash
# Installs the benchmark peers and tools (Debian packages rsync, syncthing,
# wrk) if they are missing. MariaDB and Redis are the project's own test
# services (see .ci/run). Needs root or password-less sudo to install.
set -euo pipefail

need=()
command -v rsync >/dev/null || need+=(rsync)
command -v syncthing >/dev/null || need+=(syncthing)
command -v wrk >/dev/null || need+=(wrk)
[ ${#need[@]} -eq 0 ] && exit 0

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo -n "$@"; fi; }
echo "installing: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
as_root apt-get update -qq
as_root apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
