#!/usr/bin/env bash
# The docker-compose topology on plain processes, for machines without a
# Docker engine: one migration, the HTTP API, two TCP sync nodes sharing one
# chunk store, and HAProxy (deploy/haproxy.cfg, unchanged) in front of the
# nodes. MariaDB and Redis must already run (as on the development machines).
#
#   deploy/stack.sh up   [ENV_FILE]   # default ENV_FILE: .env, else .env.example
#   deploy/stack.sh status
#   deploy/stack.sh down
#
# Uses the same variables as docker-compose.yml. Binaries come from
# $FILESYNC_BIN (default target/release, else target/debug). State, logs and
# pids live in $FILESYNC_STACK_DIR (default ./stack); each daemon has its own
# data directory there. The chunk store is $FILESYNC_STACK_DIR/chunks, or with
# FILESYNC_STACK_STORAGE=s3 the prefix `stack` in the tests' SeaweedFS bucket
# (.ci/seaweedfs.sh starts it; the FILESYNC_TEST_S3_* settings apply), so the
# daemons share nothing but MariaDB, Redis and the bucket, as in compose.
set -euo pipefail
cd "$(dirname "$0")/.."
cmd=${1:-}
run=${FILESYNC_STACK_DIR:-$PWD/stack}

bin_dir() {
  if [ -n "${FILESYNC_BIN:-}" ]; then echo "$FILESYNC_BIN"
  elif [ -x target/release/filesync-http ] && [ -x target/release/filesync-tcp ]; then echo "$PWD/target/release"
  else echo "$PWD/target/debug"; fi
}

start() { # start NAME CMD... (env is inherited)
  local name=$1; shift
  "$@" >"$run/$name.log" 2>&1 &
  echo $! >"$run/$name.pid"
}

wait_http() { # wait_http URL
  for _ in $(seq 1 60); do curl -fsS "$1" >/dev/null 2>&1 && return 0; sleep 0.5; done
  echo "no answer from $1" >&2; return 1
}

case "$cmd" in
up)
  env_file=${2:-}
  [ -n "$env_file" ] || { [ -f .env ] && env_file=.env || env_file=.env.example; }
  # Like compose: the file fills in what the environment does not set.
  while IFS='=' read -r key value; do
    case "$key" in ''|\#*) continue ;; esac
    [ -n "${!key+x}" ] || export "$key=$value"
  done <"$env_file"
  # Inside compose the services are called mariadb and redis; here they are on loopback.
  FILESYNC_DATABASE_URL=${FILESYNC_STACK_DATABASE_URL:-${FILESYNC_DATABASE_URL//@mariadb:/@127.0.0.1:}}
  FILESYNC_REDIS_URL=${FILESYNC_STACK_REDIS_URL:-${FILESYNC_REDIS_URL//redis:\/\/redis:/redis://127.0.0.1:}}
  export FILESYNC_DATABASE_URL FILESYNC_REDIS_URL
  case "${FILESYNC_STACK_STORAGE:-dir}" in
  dir)
    export FILESYNC_STORAGE=$run/chunks
    unset FILESYNC_S3_ENDPOINT FILESYNC_S3_ACCESS_KEY_ID FILESYNC_S3_SECRET_ACCESS_KEY FILESYNC_S3_PATH_STYLE
    mkdir -p "$run/chunks"
    ;;
  s3)
    .ci/seaweedfs.sh
    export FILESYNC_STORAGE=s3://${FILESYNC_TEST_S3_BUCKET:-filesync-test}/stack
    export FILESYNC_S3_ENDPOINT=${FILESYNC_TEST_S3_ENDPOINT:-http://127.0.0.1:8333}
    export FILESYNC_S3_REGION=${FILESYNC_TEST_S3_REGION:-us-east-1}
    export FILESYNC_S3_ACCESS_KEY_ID=${FILESYNC_TEST_S3_ACCESS_KEY_ID:-filesync-test}
    export FILESYNC_S3_SECRET_ACCESS_KEY=${FILESYNC_TEST_S3_SECRET_ACCESS_KEY:-filesync-test-secret}
    export FILESYNC_S3_PATH_STYLE=true
    ;;
  *) echo "FILESYNC_STACK_STORAGE is dir or s3, not ${FILESYNC_STACK_STORAGE}" >&2; exit 2 ;;
  esac
  mkdir -p "$run/data-http" "$run/data-tcp1" "$run/data-tcp2"
  b=$(bin_dir)
  http_port=${FILESYNC_HTTP_PORT:-8080}; sync_port=${FILESYNC_SYNC_PORT:-7070}
  base=${FILESYNC_STACK_BASE_PORT:-17100}

  FILESYNC_DATA_DIR=$run/data-http "$b/filesync-http" migrate
  FILESYNC_DATA_DIR=$run/data-http FILESYNC_HTTP_ADDR=127.0.0.1:$http_port start http "$b/filesync-http" serve
  FILESYNC_DATA_DIR=$run/data-tcp1 FILESYNC_TCP_ADDR=127.0.0.1:$((base + 1)) \
    FILESYNC_TCP_ADMIN_ADDR=127.0.0.1:$((base + 11)) FILESYNC_NODE_ID=node-1 start tcp1 "$b/filesync-tcp"
  FILESYNC_DATA_DIR=$run/data-tcp2 FILESYNC_TCP_ADDR=127.0.0.1:$((base + 2)) \
    FILESYNC_TCP_ADMIN_ADDR=127.0.0.1:$((base + 12)) FILESYNC_NODE_ID=node-2 start tcp2 "$b/filesync-tcp"
  wait_http "http://127.0.0.1:$http_port/readyz"
  wait_http "http://127.0.0.1:$((base + 11))/readyz"
  wait_http "http://127.0.0.1:$((base + 12))/readyz"
  FILESYNC_LB_BIND=127.0.0.1:$sync_port \
    FILESYNC_NODE1_ADDR=127.0.0.1:$((base + 1)) FILESYNC_NODE1_ADMIN=$((base + 11)) \
    FILESYNC_NODE2_ADDR=127.0.0.1:$((base + 2)) FILESYNC_NODE2_ADMIN=$((base + 12)) \
    start haproxy haproxy -db -f deploy/haproxy.cfg
  echo "filesync stack up: HTTP http://127.0.0.1:$http_port, sync (HAProxy) 127.0.0.1:$sync_port," \
    "chunks in ${FILESYNC_STORAGE}; logs in $run"
  ;;
status)
  for f in "$run"/*.pid; do
    [ -e "$f" ] || { echo "not running"; exit 1; }
    n=$(basename "$f" .pid); p=$(cat "$f")
    if kill -0 "$p" 2>/dev/null; then echo "$n: running (pid $p)"; else echo "$n: stopped"; fi
  done
  ;;
down)
  for n in haproxy tcp1 tcp2 http; do
    f=$run/$n.pid
    [ -e "$f" ] || continue
    p=$(cat "$f"); kill -TERM "$p" 2>/dev/null || true
    for _ in $(seq 1 40); do kill -0 "$p" 2>/dev/null || break; sleep 0.25; done
    kill -KILL "$p" 2>/dev/null || true
    rm -f "$f"
  done
  echo "filesync stack down"
  ;;
*)
  sed -n '2,17p' "$0"; exit 2 ;;
esac
