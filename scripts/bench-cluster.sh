#!/usr/bin/env bash
# Cross-node fan-out (issue 15): the example server as one node without a bus, then as 1,
# 2 and 3 nodes of one cluster (PostgreSQL store, Redis bus) on this machine, loaded by
# `chat-bench fanout` at a fixed rate with every room's members spread over all the nodes
# (`--node`), so every message crosses the bus to the other nodes.
#
#   scripts/bench-cluster.sh            # 300 clients, 10 rooms, 10 senders, 200 msg/s
#   scripts/bench-cluster.sh --quick    # 60 clients, 100 msg/s, shorter (checks the set-up)
#
# Each run gets a fresh database (dropped after) and a fresh Redis key prefix (its keys
# deleted after); nothing else in Redis is touched. Servers are pinned to
# CHAT_BENCH_SERVER_CPUS (default 0), the load tool to CHAT_BENCH_LOAD_CPUS (default 1);
# PostgreSQL and Redis run where the system puts them. Results: one JSON line per run in
# target/bench/cluster-<stamp>.jsonl and a markdown table on stdout.
#
# Environment:
#   CHAT_BENCH_POSTGRES  a server URL whose user may CREATE DATABASE
#                        (default postgres://postgres@127.0.0.1:5432/postgres)
#   CHAT_BENCH_REDIS     default redis://127.0.0.1:6379
#   CHAT_BENCH_RATE      messages/s over all senders (default 200; 100 with --quick)
#   CHAT_BENCH_SKIP_BUILD=1  use the binaries already built
#   CHAT_BENCH_PROFILE   release (default) or debug: debug only checks the script works end
#                        to end, its figures mean nothing
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/target/bench
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=$OUT/cluster-$STAMP.jsonl
LOG=$OUT/cluster-log-$STAMP.txt
PG=${CHAT_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432/postgres}
REDIS=${CHAT_BENCH_REDIS:-redis://127.0.0.1:6379}
SERVER_CPUS=${CHAT_BENCH_SERVER_CPUS:-0}
LOAD_CPUS=${CHAT_BENCH_LOAD_CPUS:-1}
mkdir -p "$OUT"
: >"$RESULTS"

CLIENTS=300 ROOMS=10 SENDERS=10 RATE=${CHAT_BENCH_RATE:-200} WARMUP=2 DURATION=10
if [[ ${1:-} == --quick ]]; then
    CLIENTS=60 ROOMS=5 SENDERS=5 RATE=${CHAT_BENCH_RATE:-100} WARMUP=1 DURATION=3
elif [[ -n ${1:-} ]]; then
    echo "usage: scripts/bench-cluster.sh [--quick]" >&2
    exit 2
fi

PROFILE=${CHAT_BENCH_PROFILE:-release}
PROFILE_FLAG=()
[[ $PROFILE == release ]] && PROFILE_FLAG=(--release)
if [[ ${CHAT_BENCH_SKIP_BUILD:-0} != 1 ]]; then
    cargo build "${PROFILE_FLAG[@]}" --example server -p chat-examples >&2
    cargo build "${PROFILE_FLAG[@]}" -p chat-bench >&2
fi
SERVER=$ROOT/target/$PROFILE/examples/server
BENCH=$ROOT/target/$PROFILE/chat-bench

PIDS=()
DB=
PREFIX=
cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
    if [[ -n $DB ]]; then
        psql "$PG" -qc "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >>"$LOG" 2>&1 || true
        DB=
    fi
    if [[ -n $PREFIX ]]; then
        redis-cli -u "$REDIS" --scan --pattern "$PREFIX*" | xargs -r redis-cli -u "$REDIS" del >>"$LOG" 2>&1 || true
        PREFIX=
    fi
}
trap cleanup EXIT

PORT=23300
# start_node URL [BUS FLAGS…]: one server on the next port; bounded wait (20 s) for it.
start_node() {
    local store=$1
    shift
    PORT=$((PORT + 1))
    taskset -c "$SERVER_CPUS" "$SERVER" --addr "127.0.0.1:$PORT" --log warn --store "$store" \
        --message-rate off --join-rate off --typing-rate off --history-rate off \
        --refusal-budget off --max-connections-per-ip off --connections-per-ip-rate off \
        "$@" >>"$LOG" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "bench-cluster.sh: a node did not start on port $PORT (see $LOG)" >&2
    return 1
}

# run LABEL NODES BUS: a fresh database (and prefix), NODES servers, one fan-out run.
run() {
    local label=$1 nodes=$2 bus=$3
    DB=chat_bench_$(date +%s%N)
    PREFIX="chat-bench:$DB:"
    psql "$PG" -qc "CREATE DATABASE $DB" >>"$LOG" 2>&1
    local store=${PG%/*}/$DB addrs=()
    for n in $(seq "$nodes"); do
        if ((bus)); then
            start_node "$store" --redis "$REDIS" --cluster-prefix "$PREFIX" --node-id "bench-$n"
        else
            start_node "$store"
        fi
        addrs+=("127.0.0.1:$PORT")
    done
    local extra=()
    for a in "${addrs[@]:1}"; do extra+=(--node "$a"); done
    echo "--- $label" | tee -a "$LOG" >&2
    local out
    out=$(taskset -c "$LOAD_CPUS" "$BENCH" fanout --addr "${addrs[0]}" "${extra[@]}" \
        --clients "$CLIENTS" --rooms "$ROOMS" --senders "$SENDERS" --rate "$RATE" \
        --warmup "$WARMUP" --duration "$DURATION" --label "$label" --json 2>>"$LOG")
    grep -v '^{' <<<"$out" | tee -a "$LOG" >&2
    grep '^{' <<<"$out" >>"$RESULTS"
    cleanup
}

run "1 node, no bus" 1 0
run "1 node, Redis bus" 1 1
run "2 nodes" 2 1
run "3 nodes" 3 1

echo
echo "$CLIENTS clients, $ROOMS rooms, $SENDERS senders, $RATE msg/s; PostgreSQL store ($PROFILE build)"
echo
echo "| run | deliveries/s | p50 ms | p99 ms | loss |"
echo "|---|---|---|---|---|"
jq -r 'def ms: ((. // 0) / 10 | floor) / 100;
  "| \(.label) | \(.fanout.deliveries_per_s | floor) | \(.fanout.latency.p50_us | ms) | \(.fanout.latency.p99_us | ms) | \(.fanout.loss) |"' "$RESULTS"
echo
echo "results: $RESULTS"
