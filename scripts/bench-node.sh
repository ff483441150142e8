#!/usr/bin/env bash
# The "Registry at scale" figures of docs/BENCHMARKS.md: one release `latchkey-node` per backend
# on loopback with its per-address limits lifted (every bench request comes from one address),
# driven by `latchkey-node bench` through each scenario, plus the raw SQLite calibration in the
# same run. Usage: scripts/bench-node.sh [sqlite|postgres|both] [seconds per scenario]
#
# PostgreSQL is a throwaway cluster under the temp dir (Debian's `postgresql` package, loopback
# only, fsync and synchronous_commit on), like the test suite's. Results go to stdout and, as
# JSON lines, to $LATCHKEY_BENCH_OUT (default: target/bench-node/<backend>.jsonl).
# $LATCHKEY_BENCH_PG_OPTS adds server settings, e.g. "-c commit_delay=100";
# $LATCHKEY_BENCH_ONLY keeps the scenario lines matching a regex (e.g. "^ops 32"), and
# $LATCHKEY_BENCH_NO_BUILD=1 uses the release binary as it is.
set -euo pipefail
cd "$(dirname "$0")/.."

backends=${1:-both}
secs=${2:-10}
[ "$backends" = both ] && backends="sqlite postgres"
out_dir=${LATCHKEY_BENCH_OUT:-target/bench-node}
mkdir -p "$out_dir"

[ -n "${LATCHKEY_BENCH_NO_BUILD:-}" ] || cargo build --release -q -p latchkey-node
bin=$PWD/target/release/latchkey-node
work=$(mktemp -d /tmp/latchkey-bench.XXXXXX)
node_pid=
pg_data=
pg_bin=

cleanup() {
    [ -n "$node_pid" ] && kill "$node_pid" 2>/dev/null && wait "$node_pid" 2>/dev/null || true
    if [ -n "$pg_data" ]; then as_pg "$pg_bin/pg_ctl" -D "$pg_data" -m immediate stop >/dev/null 2>&1 || true; fi
    rm -rf "$work"
}
trap cleanup EXIT

as_pg() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

start_postgres() {
    pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    pg_data=$work/pg
    local port
    port=$(free_port)
    mkdir -p "$pg_data"
    [ "$(id -u)" = 0 ] && chown postgres "$work" "$pg_data"
    as_pg "$pg_bin/initdb" -A trust -U latchkey -D "$pg_data" >/dev/null
    as_pg "$pg_bin/pg_ctl" -D "$pg_data" -l "$work/pg.log" -w \
        -o "-k $work -p $port -c listen_addresses=127.0.0.1 -c fsync=on -c synchronous_commit=on -c max_connections=300 ${LATCHKEY_BENCH_PG_OPTS:-}" \
        start >/dev/null
    "$pg_bin/psql" -q -h 127.0.0.1 -p "$port" -U latchkey -d postgres -c 'CREATE DATABASE bench'
    pg_url="postgres://latchkey@127.0.0.1:$port/bench"
}

start_node() {
    local db=$1
    node_port=$(free_port)
    "$bin" --listen "127.0.0.1:$node_port" --db "$db" --ops-rate 0 --mailbox-rate 0 --read-rate 0 \
        --max-requests 16384 --max-requests-per-address 16384 --max-long-polls 20000 \
        --max-long-polls-per-address 20000 --mailbox-per-sender 1000000 \
        --mailbox-per-address 1000000 >"$work/node.log" 2>&1 &
    node_pid=$!
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$node_port/healthz" >/dev/null && return
        sleep 0.1
    done
    cat "$work/node.log" >&2
    exit 1
}

stop_node() {
    kill "$node_pid" && wait "$node_pid" 2>/dev/null || true
    node_pid=
}

for backend in $backends; do
    results=$out_dir/$backend.jsonl
    : >"$results"
    case $backend in
        sqlite)
            db=$work/node.db
            echo "== raw SQLite on the same disk"
            "$bin" bench --scenario raw-sqlite --raw-dir "$work" --duration "$secs" --json | tee -a "$results"
            ;;
        postgres)
            start_postgres
            db=$pg_url
            ;;
        *) echo "unknown backend $backend (sqlite, postgres or both)" >&2; exit 2 ;;
    esac
    start_node "$db"
    # scenario, requests in flight, most requests (ops are signed before the clock starts, so
    # their count is what the node could take in the time, not more), ops per op post
    while read -r scenario concurrency count per_post; do
        [[ "$scenario $concurrency $count $per_post" =~ ${LATCHKEY_BENCH_ONLY:-.} ]] || continue
        echo "== $backend: $scenario, $concurrency in flight, $per_post ops per op post"
        "$bin" bench --node "http://127.0.0.1:$node_port" --scenario "$scenario" \
            --concurrency "$concurrency" --duration "$secs" --count "$count" \
            --ops-per-post "$per_post" --json | tee -a "$results"
    done <<EOF
ops 32 $((secs * 20000)) 1
ops 256 $((secs * 20000)) 1
ops 32 $((secs * 2000)) 10
reads 64 10000000 1
mailbox 64 $((secs * 30000)) 1
mixed 64 $((secs * 30000)) 1
EOF
    stop_node
done
