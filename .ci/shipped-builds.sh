#!/usr/bin/env bash
# Builds that ship what they should (ARCHITECTURE.md, "Cargo features"), checked
# with `cargo tree` (nothing is compiled):
#  - the Dockerfile's two cargo invocations, the daemons and the client, link no
#    test code (core's `testing`, tokio's `test-util`), and neither does the
#    workspace build of .ci/run and the benchmark scripts;
#  - the client, built on its own as it ships, links no diesel and no MariaDB library; its one
#    database, the agent's folder state, is SQLite compiled in (rusqlite, libsqlite3-sys `bundled`);
#  - the protocol library links none of the agent's or the CLI's crates;
#  - without `mysql` the whole workspace needs no MariaDB client library.
# Cargo unifies the features of every package selected in one invocation, so
# what is checked is each invocation as it is run, not each package alone.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "shipped builds: $*" >&2; exit 1; }

# The Dockerfile's invocations, word for word (the Dockerfile must keep them).
daemons='-p filesync-http-api -p filesync-tcp-sync -p filesync-server --features filesync-server/mysql'
client='-p filesync-client'
for args in "$daemons" "$client"; do
  grep -qF -- "cargo build --release --locked --bins $args" Dockerfile \
    || fail "the Dockerfile no longer runs: cargo build --release --locked --bins $args"
done

# Dev-dependencies are left out: they reach tests, never a binary built with `cargo build`.
tree() { cargo tree --locked -e normal,build --prefix none "$@"; }

test_code='^(filesync-core feature "testing"|tokio feature "test-util")'
for args in "$daemons" "$client" "--workspace"; do
  # shellcheck disable=SC2086 # $args is a list of words
  found=$(tree -e features $args | grep -E "$test_code" | sort -u || true)
  [ -z "$found" ] || fail "cargo build $args would link test code:"$'\n'"$found"
  echo "cargo build $args: no test code"
done

db_crates='^(diesel|diesel_migrations|mysqlclient-sys) '
# shellcheck disable=SC2086
found=$(tree -f '{p}' $client | grep -E "$db_crates" | sort -u || true)
[ -z "$found" ] || fail "the client links a server database library:"$'\n'"$found"
# shellcheck disable=SC2086
tree -e features $client | grep -qE '^libsqlite3-sys feature "bundled"' \
  || fail "the client's SQLite (agent state) is not compiled in (libsqlite3-sys without bundled)"
echo "cargo build $client: no diesel, no MariaDB library; SQLite compiled in"

# The protocol library (what the node's tests and the benchmark harness link) carries nothing of
# the agent or the CLI: no database, no HTTP client, no watcher, no terminal UI.
agent_crates='^(diesel|libsqlite3-sys|mysqlclient-sys|reqwest|notify|indicatif|clap|filesync-client) '
found=$(tree -f '{p}' -p filesync-proto-client | grep -E "$agent_crates" | sort -u || true)
[ -z "$found" ] || fail "the protocol library links the agent's or CLI's crates:"$'\n'"$found"
echo "cargo build -p filesync-proto-client: no database, HTTP client, watcher or CLI crates"

found=$(tree -f '{p}' --workspace --no-default-features | grep -E '^mysqlclient-sys ' || true)
[ -z "$found" ] || fail "without the mysql feature the workspace still needs the MariaDB client library"
echo "cargo build --workspace --no-default-features: SQLite only, no MariaDB client library"
