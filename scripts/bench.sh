#!/usr/bin/env bash
# Side-by-side benchmark of issue 12: our example server, the Node reference (seed-000,
# `ws`) and the bare relay of chat-bench, under the same scenarios, one after the other.
#
#   scripts/bench.sh            # full sizes (under 6 minutes on the 2-core VM)
#   scripts/bench.sh --quick    # reduced sizes (~1.5 minutes), to check the set-up
#   scripts/bench.sh --sweep    # p99 latency against deliveries/s for (a) and (b) at rising
#                               # fixed rates, drawn as target/bench/latency-<stamp>.png
#
# Every server runs fresh per scenario, pinned to core 0 (`taskset -c 0`); the load tool
# runs pinned to core 1. Our server runs with every rate and per-IP limit off and the
# in-memory store, like for like with the reference. Results: one JSON line per run in
# target/bench/results-<stamp>.jsonl, the markdown table on stdout and in
# target/bench/table-<stamp>.md.
#
# Environment:
#   CHAT_BENCH_SHARED   the shared/ folder (default: ../shared next to the checkout)
#   CHAT_BENCH_SERVERS  which servers to load (default: "ours node relay")
#   CHAT_BENCH_SERVER_CPUS / CHAT_BENCH_LOAD_CPUS  taskset core lists (default 0 and 1);
#                       CHAT_BENCH_SERVER_CPUS=0-1 gives the issue's unpinned multi-core run
#   CHAT_BENCH_SKIP_BUILD=1  use the binaries already built
#   CHAT_BENCH_PROFILE  release (default) or debug: debug only checks the script works
#                       end to end, its figures mean nothing
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
SHARED=${CHAT_BENCH_SHARED:-$ROOT/../shared}
SERVERS=${CHAT_BENCH_SERVERS:-ours node relay}
OUT=$ROOT/target/bench
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=$OUT/results-$STAMP.jsonl
TABLE=$OUT/table-$STAMP.md
LOG=$OUT/log-$STAMP.txt
mkdir -p "$OUT"

# Sizes: full by default, reduced with --quick. `--table FILE` only prints the table of an
# earlier run's results (give --quick too if that run was quick).
QUICK=0
SWEEP=0
TABLE_ONLY=
while (($#)); do
    case $1 in
    --quick) QUICK=1 ;;
    --sweep) SWEEP=1 ;;
    --table) TABLE_ONLY=${2:?--table needs a results file}; shift ;;
    *) echo "usage: scripts/bench.sh [--quick] [--sweep] [--table RESULTS.jsonl]" >&2; exit 2 ;;
    esac
    shift
done
if ((QUICK)); then
    A_CLIENTS=50; A_SENDERS=4
    B_CLIENTS=100; B_ROOMS=10; B_SENDERS=10
    R_CLIENTS=50; R_DELIVERIES=10000
    IDLE=1000; JOINS=500; JOIN_CONC=50
    WARMUP=1; DURATION=2
else
    A_CLIENTS=200; A_SENDERS=4
    B_CLIENTS=1000; B_ROOMS=100; B_SENDERS=100
    R_CLIENTS=200; R_DELIVERIES=40000
    IDLE=10000; JOINS=5000; JOIN_CONC=100
    WARMUP=2; DURATION=5
fi
WINDOW=8

if [[ -n $TABLE_ONLY ]]; then
    RESULTS=$TABLE_ONLY
    TABLE=/dev/null
else
: >"$RESULTS"

# One process may hold 20,000 open files here: raise the soft limit to the hard one
# (servers started below inherit it).
ulimit -n "$(ulimit -Hn)"
if (($(ulimit -n) < IDLE + 200)); then
    echo "bench.sh: open files limit $(ulimit -n) is too low for $IDLE idle connections" >&2
    exit 1
fi
if (($(nproc) < 2)); then
    echo "bench.sh: needs 2 cores (server on core 0, load on core 1)" >&2
    exit 1
fi

PROFILE=${CHAT_BENCH_PROFILE:-release}
case $PROFILE in
release) BUILD_FLAGS=(--release) ;;
debug) BUILD_FLAGS=() ;;
*) echo "bench.sh: CHAT_BENCH_PROFILE must be release or debug" >&2; exit 1 ;;
esac
if [[ ${CHAT_BENCH_SKIP_BUILD:-0} != 1 ]]; then
    echo "building $PROFILE binaries…" >&2
    (cd "$ROOT" && cargo build "${BUILD_FLAGS[@]}" -q -p chat-bench --bin chat-bench &&
        cargo build "${BUILD_FLAGS[@]}" -q -p chat-examples --example server)
fi
BENCH=$ROOT/target/$PROFILE/chat-bench
OURS=$ROOT/target/$PROFILE/examples/server

# The reference is copied next to the results and its packages installed there once, so
# shared/ is never written to.
SEED=$OUT/seed000
if [[ " $SERVERS " == *" node "* ]]; then
    if [[ ! -f $SHARED/peers/seed000/server.js ]]; then
        echo "bench.sh: $SHARED/peers/seed000/server.js not found; set CHAT_BENCH_SHARED" >&2
        exit 1
    fi
    if [[ ! -d $SEED/node_modules ]]; then
        mkdir -p "$SEED"
        cp "$SHARED/peers/seed000/server.js" "$SHARED/peers/seed000/package.json" "$SEED/"
        (cd "$SEED" && npm install --no-audit --no-fund --silent >&2)
    fi
fi

# Server ports below the ephemeral range (32768+ by default): a port there may still be
# held by a client socket of the previous run (Node binds the wildcard address and fails).
PORT=${CHAT_BENCH_PORT:-23100}
SERVER_CPUS=${CHAT_BENCH_SERVER_CPUS:-0}
LOAD_CPUS=${CHAT_BENCH_LOAD_CPUS:-1}
read -r EPHEMERAL_LOW _ </proc/sys/net/ipv4/ip_local_port_range
if ((PORT + 100 >= EPHEMERAL_LOW)); then
    echo "bench.sh: CHAT_BENCH_PORT=$PORT is too close to the ephemeral range ($EPHEMERAL_LOW+)" >&2
    exit 1
fi
SERVER_PID=
stop_server() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}
trap stop_server EXIT

# start_server NAME: a fresh server on a fresh port, pinned to core 0; sets SERVER_PID.
start_server() {
    PORT=$((PORT + 1))
    case $1 in
    ours)
        # --store memory: like for like with the reference, which keeps history in memory.
        taskset -c "$SERVER_CPUS" "$OURS" --addr "127.0.0.1:$PORT" --log warn --store memory \
            --message-rate off --join-rate off --typing-rate off --history-rate off \
            --refusal-budget off --max-connections-per-ip off --connections-per-ip-rate off \
            --max-connections 20000 --max-http-connections 20000 >>"$LOG" 2>&1 &
        ;;
    node)
        (cd "$SEED" && PORT=$PORT exec taskset -c "$SERVER_CPUS" node server.js) >>"$LOG" 2>&1 &
        ;;
    relay)
        taskset -c "$SERVER_CPUS" "$BENCH" relay --addr "127.0.0.1:$PORT" >>"$LOG" 2>&1 &
        ;;
    esac
    SERVER_PID=$!
    # Bounded wait for the port: 20 s.
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
            sleep 0.3 # let the first accept settle before measuring RSS
            return 0
        fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then break; fi
        sleep 0.1
    done
    echo "bench.sh: $1 did not start on port $PORT (see $LOG)" >&2
    return 1
}

# run NAME TAG ARGS…: fresh server, one chat-bench run pinned to core 1, JSON kept.
run() {
    local name=$1 tag=$2
    shift 2
    echo "--- $tag on $name" | tee -a "$LOG" >&2
    local out
    if start_server "$name" && out=$(taskset -c "$LOAD_CPUS" "$BENCH" "$@" --addr "127.0.0.1:$PORT" --server-pid "$SERVER_PID" \
        --label "$name" --json 2>>"$LOG"); then
        grep -v '^{' <<<"$out" | tee -a "$LOG" >&2
        grep '^{' <<<"$out" | jq -c --arg tag "$tag" '. + {tag: $tag}' >>"$RESULTS"
    else
        echo "    (failed; see $LOG)" >&2
        jq -nc --arg tag "$tag" --arg srv "$name" '{tag: $tag, label: $srv, failed: true}' >>"$RESULTS"
    fi
    stop_server
}

# sweep NAME TAG CLIENTS ROOMS SENDERS RATE…: one fresh server per fixed rate (messages/s),
# rising, until a run loses messages or its p99 passes a second (the knee is then
# behind): a server past its capacity queues without end, so going on measures nothing.
sweep() {
    local name=$1 tag=$2 clients=$3 rooms=$4 senders=$5
    shift 5
    for rate in "$@"; do
        run "$name" "$tag" fanout --clients "$clients" --rooms "$rooms" --senders "$senders" \
            --rate "$rate" --warmup 1 --duration 2 --drain 1
        if tail -n 1 "$RESULTS" | jq -e '(.failed // false) or .fanout.loss != 0
                or (.fanout.latency.p99_us // 0) > 1000000' >/dev/null; then
            break
        fi
    done
}

if ((SWEEP)); then
    # Messages/s; deliveries/s = rate × members of a room (200 in (a), 10 in (b)).
    if ((QUICK)); then
        A_RATES=(100 500 2000); B_RATES=(2000 10000 40000)
    else
        A_RATES=(100 250 500 1000 2000 3500 5000)
        B_RATES=(2000 5000 10000 20000 40000 60000)
    fi
    for s in $SERVERS; do
        sweep "$s" sweep-a "$A_CLIENTS" 1 "$A_SENDERS" "${A_RATES[@]}"
        sweep "$s" sweep-b "$B_CLIENTS" "$B_ROOMS" "$B_SENDERS" "${B_RATES[@]}"
    done
    PNG=$OUT/latency-$STAMP.png
    "$BENCH" plot --results "$RESULTS" --output "$PNG" \
        --title "p99 latency against deliveries/s ($(date -u +%F), server on core $SERVER_CPUS)"
    jq -r 'select(.fanout != null) | "\(.tag) \(.label): \(.fanout.deliveries_per_s | round) deliveries/s, p99 \(.fanout.latency.p99_us // "—") µs, loss \(.fanout.loss), server CPU \(.fanout.server_cpu_us_per_delivery // "—") µs/delivery"' "$RESULTS"
    echo "results: $RESULTS; plot: $PNG; log: $LOG; load average: $(cut -d" " -f1-3 /proc/loadavg)" >&2
    exit 0
fi

for s in $SERVERS; do
    run "$s" a fanout --clients "$A_CLIENTS" --rooms 1 --senders "$A_SENDERS" --window "$WINDOW" \
        --warmup "$WARMUP" --duration "$DURATION"
    run "$s" b fanout --clients "$B_CLIENTS" --rooms "$B_ROOMS" --senders "$B_SENDERS" \
        --window "$WINDOW" --warmup "$WARMUP" --duration "$DURATION"
    # A fixed rate in deliveries/s: messages/s = deliveries/s ÷ members of the one room.
    run "$s" r50 fanout --clients "$R_CLIENTS" --rooms 1 --senders 4 \
        --rate "$((R_DELIVERIES / R_CLIENTS))" --warmup "$WARMUP" --duration "$DURATION"
    run "$s" c idle --connections "$IDLE" --rooms 100
    run "$s" d connect --joins "$JOINS" --concurrency "$JOIN_CONC" --rooms 100
done

fi

# The table, one column per server, from the JSON lines.
jq -rs --arg servers "$SERVERS" --arg a "$A_CLIENTS" --arg b "$((B_CLIENTS / B_ROOMS))" \
    --arg br "$B_ROOMS" --arg r "$R_CLIENTS" --arg rd "$R_DELIVERIES" --arg idle "$IDLE" \
    --arg joins "$JOINS" --arg jc "$JOIN_CONC" '
  def f(d): if . == null then "—" else (. * pow(10; d) | round / pow(10; d) | tostring) end;
  def k: if . == null then "—" elif . >= 1000 then ((. / 1000 | round | tostring) + "k") else (round | tostring) end;
  def ms: if . == null then "—" else ((. / 1000) | f(2)) + " ms" end;
  def get($tag; $srv): map(select(.tag == $tag and .label == $srv)) | first;
  def cell($tag; $srv):
    get($tag; $srv) as $r
    | if $r == null then "—"
      elif ($r.failed // false) then "failed"
      elif $tag == "a" then "\($r.fanout.server_cpu_us_per_delivery | f(2)) · \($r.fanout.deliveries_per_s | k)/s"
      elif $tag == "b" or $tag == "r50" then "\($r.fanout.server_cpu_us_per_delivery | f(2)) · \($r.fanout.latency.p99_us | ms)"
      elif $tag == "c" then "\($r.idle.kib_per_connection | f(1)) KiB"
      else "\($r.connect.joins_per_s | round) · \($r.connect.server_cpu_us_per_join | f(0))" end;
  ($servers | split(" ") | map(select(. != ""))) as $s
  | . as $rows
  | [
      "| scenario | " + ($s | join(" | ")) + " |",
      "|---|" + ($s | map("---|") | join("")),
      ([["a", "(a) 1 room × \($a) clients, 4 senders, closed loop: CPU µs/delivery · deliveries/s"],
        ["b", "(b) \($br) rooms × \($b), \($br) senders, closed loop: CPU µs/delivery · p99"],
        ["r50", "(r50) 1 × \($r) at a fixed \($rd) deliveries/s: CPU µs/delivery · p99"],
        ["c", "(c) \($idle) idle joined connections: server RSS per connection"],
        ["d", "(d) storm of \($joins) full joins, concurrency \($jc): joins/s · CPU µs/join"]][]
       | . as [$tag, $title]
       | "| \($title) | " + ($s | map(. as $srv | $rows | cell($tag; $srv)) | join(" | ")) + " |"),
      "",
      "| run | server | loss | gaps | dup | seq gaps | error frames | p50 | p99 | max | server cores | tool cores |",
      "|---|---|---|---|---|---|---|---|---|---|---|---|",
      ($rows[] | select(.fanout != null) |
        "| \(.tag) | \(.label) | \(.fanout.loss) | \(.fanout.counts.gaps) | \(.fanout.counts.duplicates) | \(.fanout.counts.seq_gaps) | \(.fanout.counts.errors) | \(.fanout.latency.p50_us | ms) | \(.fanout.latency.p99_us | ms) | \(.fanout.latency.max_us | ms) | \(.cpu.server_us / .cpu.wall_us | f(2)) | \(.cpu.tool_us / .cpu.wall_us | f(2)) |"),
      ($rows[] | select(.connect != null) |
        "| \(.tag) | \(.label) | joins \(.connect.completed)/\(.connect.joins) | | | | | \(.connect.latency.p50_us | ms) | \(.connect.latency.p99_us | ms) | \(.connect.latency.max_us | ms) | \(.cpu.server_us / .cpu.wall_us | f(2)) | \(.cpu.tool_us / .cpu.wall_us | f(2)) |"),
      ($rows[] | select(.idle != null) |
        "| \(.tag) | \(.label) | RSS \(.idle.rss_before_kib) → \(.idle.rss_after_kib) KiB | | | | \(.idle.errors) | | | | | \(.cpu.tool_us / .cpu.wall_us | f(2)) |")
    ] | .[]' "$RESULTS" | tee "$TABLE"
echo >&2
[[ -n $TABLE_ONLY ]] || echo "results: $RESULTS; table: $TABLE; log: $LOG; load average: $(cut -d" " -f1-3 /proc/loadavg)" >&2
