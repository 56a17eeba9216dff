#!/usr/bin/env bash
# Checks the HTTP API against its own description: starts the built
# filesync-http on loopback (SQLite in a temporary directory, a throwaway JWT
# secret), registers a user, logs in, creates a workspace, then runs
# schemathesis against /openapi.json with that token. Fails on any 5xx, a
# status the document does not list for the route, a body, content type or
# header that does not match the document, or an authenticated route that
# answers without a valid token. Nothing leaves 127.0.0.1. The web UI's event
# stream (/workspaces/{id}/events) is left out: it answers for as long as the
# client listens (tests/ui.rs covers it).
#
# Env: FILESYNC_HTTP_BIN (default target/debug/filesync-http),
#      SCHEMATHESIS_SEED (default fixed, so a run can be repeated),
#      SCHEMATHESIS_MAX_EXAMPLES (default 50 per operation).
set -euo pipefail
cd "$(dirname "$0")/.."

SCHEMATHESIS_VERSION=4.32.5
venv="${XDG_CACHE_HOME:-$HOME/.cache}/filesync/schemathesis-$SCHEMATHESIS_VERSION"
st="$venv/bin/schemathesis"
if ! "$st" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
  echo "installing schemathesis $SCHEMATHESIS_VERSION into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
"$st" --version

bin=$(realpath -m "${FILESYNC_HTTP_BIN:-target/debug/filesync-http}")
[ -x "$bin" ] || { echo "$bin is missing: build it first (cargo build --workspace --bins)" >&2; exit 1; }

work=$(mktemp -d)
server_pid=
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
show_log() { echo "--- filesync-http log (last 100 lines)" >&2; tail -n 100 "$work/server.log" >&2 || true; }

# Only what is set here reaches the server: no database, Redis or config of the caller's.
for var in $(compgen -e | grep '^FILESYNC_' || true); do unset "$var"; done
FILESYNC_DATA_DIR="$work/data" \
FILESYNC_HTTP_ADDR=127.0.0.1:0 \
FILESYNC_JWT_SECRET="$(python3 -c 'import secrets; print(secrets.token_hex(32))')" \
FILESYNC_BCRYPT_COST=4 \
FILESYNC_LOG_FORMAT=text \
NO_COLOR=1 RUST_LOG=info,filesync_http_api::metrics=warn \
  "$bin" serve >"$work/server.log" 2>&1 &
server_pid=$!

base=
for _ in $(seq 1 300); do
  base=$(grep -oE 'listening on http://127\.0\.0\.1:[0-9]+' "$work/server.log" 2>/dev/null | head -n 1 | sed 's/^listening on //') || true
  [ -n "$base" ] && break
  kill -0 "$server_pid" 2>/dev/null || { echo "filesync-http exited during startup" >&2; show_log; exit 1; }
  sleep 0.2
done
[ -n "$base" ] || { echo "filesync-http did not start within 60s" >&2; show_log; exit 1; }
echo "filesync-http on $base"

# A user with a token, a workspace (id 1) and a file in it (report.txt): what the document's examples name.
token=$(BASE="$base" python3 - <<'PY'
import json, os, urllib.request

base = os.environ["BASE"]

def call(path, body, token=None):
    req = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST")
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("Authorization", "Bearer " + token)
    with urllib.request.urlopen(req, timeout=30) as res:
        return json.load(res)

user = {"first_name": "Schema", "last_name": "Thesis", "username": "schemathesis",
        "email": "schemathesis@example.com", "password": "schemathesis-password"}
call("/register", user)
token = call("/login", {"email": user["email"], "password": user["password"]})["token"]
workspace = call("/create-workspace", {"name": "fuzzed"}, token)["workspace"]
assert workspace["id"] == 1, workspace
# The file the document's examples name, so history, restore and download reach a real file.
req = urllib.request.Request(base + "/workspaces/1/file?path=report.txt", data=b"version one\n", method="PUT")
req.add_header("Content-Type", "application/octet-stream")
req.add_header("Authorization", "Bearer " + token)
urllib.request.urlopen(req, timeout=30).close()
print(token)
PY
)

fuzz() { # fuzz [FILTER...]: schemathesis over the operations the filters select
  local status=0
  (
    cd "$work" # hypothesis keeps its files in the working directory
    timeout 600 "$st" run "$base/openapi.json" \
      --header "Authorization: Bearer $token" \
      --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance,ignored_auth,unsupported_method,allow_header_conformance \
      --phases examples,coverage,fuzzing \
      --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-50}" \
      --seed "${SCHEMATHESIS_SEED:-20261201}" \
      --generation-database none \
      --request-timeout 30 \
      --no-color \
      "$@"
  ) || status=$?
  if [ "$status" != 0 ]; then
    echo "schemathesis found responses that do not match /openapi.json (exit $status)" >&2
    show_log
    exit "$status"
  fi
}

# Operations that can end the run's session or delete its workspace (log out,
# remove the device, delete the workspace or the account) run last, on their
# own, so the rest is exercised with a working token and workspace.
ending=(/logout /devices/{id} /workspaces/{id} /account)
present=$(BASE="$base" python3 - "${ending[@]}" <<'PY'
import json, os, sys, urllib.request
with urllib.request.urlopen(os.environ["BASE"] + "/openapi.json", timeout=30) as res:
    paths = json.load(res)["paths"]
print(" ".join(p for p in sys.argv[1:] if p in paths))
PY
)
# The web UI's event stream answers for as long as the client listens: tests/ui.rs covers it.
excludes=(--exclude-path '/workspaces/{id}/events')
for path in "${ending[@]}"; do excludes+=(--exclude-path "$path"); done
fuzz "${excludes[@]}"
if [ -n "$present" ]; then
  includes=()
  for path in $present; do includes+=(--include-path "$path"); done
  echo "then the operations that end the session: $present"
  fuzz "${includes[@]}"
fi
kill -0 "$server_pid" 2>/dev/null || { echo "filesync-http died during the run" >&2; show_log; exit 1; }
