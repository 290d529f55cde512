#!/usr/bin/env bash
# Cross-node fan-out (issue 15, "Performance"): the example server as a cluster of 1, 2 and
# 3 nodes on this machine (PostgreSQL store, Redis bus), and as one node WITHOUT a bus on
# the same store (the baseline), each loaded by `chat-bench fanout` at a moderate and at a
# high fixed rate, with every room's members spread over all the nodes (`--node`: clients
# round robin, rotated by room, so the senders are spread too) and every client's view
# checked (loss, gaps, duplicates, `seq` order).
#
#   scripts/cluster-bench.sh            # 300 clients, 10 rooms, 10 senders; 100 and 1000 msg/s
#   scripts/cluster-bench.sh --quick    # 60 clients, 5 rooms, short runs (checks the set-up)
#
# What it owns and cleans up (trap on EXIT, also on Ctrl-C):
#   * its own `redis-server` on a free 127.0.0.1 port (the shared Redis at 6379 is never
#     used); each run gets a fresh key prefix and the instance is emptied between runs;
#   * one fresh PostgreSQL database per run (`chat_cbench_<stamp>_<n>`, dropped after);
#   * the server nodes (ports from CHAT_BENCH_PORT, default 23500, below the ephemeral range).
#
# Pinning (2 cores): every node on core 0 (CHAT_BENCH_SERVER_CPUS) — so 1, 2 and 3 nodes
# share the same server CPU budget and a difference is the cost of the bus, not more
# cores —, the load tool and our redis-server on core 1 (CHAT_BENCH_LOAD_CPUS); the shared
# PostgreSQL runs where the system puts it. Not a scale-out measurement: on 2 cores there
# is nothing to scale out to.
#
# Per run it scrapes each node's /metrics before and after the load and reports the bus
# messages per chat message of each node: (published `chat_cluster_ops_total{op="message"}`
# + received `chat_cluster_events_total{event="message"}`) ÷ chat messages stored and
# announced by the whole cluster (Σ published). The issue's claim is 1.00 on every node
# when every room has members on every node. It also reads Redis's
# PUBLISH count and each room channel's subscriber count (`PUBSUB NUMSUB`: one per node,
# not one per connection), and the machine's load (load average, all-core busy share
# from /proc/stat) during each run.
#
# Results: one JSON line per run in target/bench/cluster-<stamp>.jsonl (chat-bench's report
# plus `run`), a markdown table on stdout and in target/bench/cluster-table-<stamp>.md.
#
# Environment:
#   CHAT_BENCH_POSTGRES   PostgreSQL server URL without a database, whose user may CREATE
#                         DATABASE (default postgres://postgres@127.0.0.1:5432)
#   CHAT_BENCH_RATES      fixed rates in messages/s over all senders (default "100 1000";
#                         deliveries/s = rate × 30 members per room)
#   CHAT_BENCH_REPEAT     runs of each configuration (default 1)
#   CHAT_BENCH_SERVER_CPUS / CHAT_BENCH_LOAD_CPUS  taskset core lists (default 0 and 1)
#   CHAT_BENCH_SKIP_BUILD=1  use the binaries already built
#   CHAT_BENCH_PROFILE    release (default) or debug (checks the script; figures mean nothing)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=$ROOT/target/bench
STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=$OUT/cluster-$STAMP.jsonl
TABLE=$OUT/cluster-table-$STAMP.md
LOG=$OUT/cluster-log-$STAMP.txt
WORK=$OUT/cluster-$STAMP.d # metrics scrapes, redis files
PG=${CHAT_BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}
PG=${PG%/}
RATES=${CHAT_BENCH_RATES:-100 1000}
REPEAT=${CHAT_BENCH_REPEAT:-1}
SERVER_CPUS=${CHAT_BENCH_SERVER_CPUS:-0}
LOAD_CPUS=${CHAT_BENCH_LOAD_CPUS:-1}
BASE_PORT=${CHAT_BENCH_PORT:-23500}

CLIENTS=300 ROOMS=10 SENDERS=10 WARMUP=2 DURATION=10 DRAIN=3
case ${1:-} in
'') ;;
--quick) CLIENTS=60 ROOMS=5 SENDERS=5 WARMUP=1 DURATION=3 DRAIN=2 ;;
*) echo "usage: scripts/cluster-bench.sh [--quick]" >&2; exit 2 ;;
esac

for tool in redis-server redis-cli psql curl jq taskset; do
    command -v "$tool" >/dev/null || { echo "cluster-bench.sh: $tool not found" >&2; exit 1; }
done
if (($(nproc) < 2)); then
    echo "cluster-bench.sh: needs 2 cores (nodes on one, load tool and Redis on the other)" >&2
    exit 1
fi
read -r EPHEMERAL_LOW _ </proc/sys/net/ipv4/ip_local_port_range
if ((BASE_PORT + 100 >= EPHEMERAL_LOW)); then
    echo "cluster-bench.sh: CHAT_BENCH_PORT=$BASE_PORT is too close to the ephemeral range" >&2
    exit 1
fi
mkdir -p "$OUT" "$WORK"
: >"$RESULTS"

PROFILE=${CHAT_BENCH_PROFILE:-release}
case $PROFILE in
release) BUILD_FLAGS=(--release) ;;
debug) BUILD_FLAGS=() ;;
*) echo "cluster-bench.sh: CHAT_BENCH_PROFILE must be release or debug" >&2; exit 1 ;;
esac
if [[ ${CHAT_BENCH_SKIP_BUILD:-0} != 1 ]]; then
    echo "building $PROFILE binaries…" >&2
    (cd "$ROOT" && cargo build "${BUILD_FLAGS[@]}" -q -p chat-bench --bin chat-bench &&
        cargo build "${BUILD_FLAGS[@]}" -q -p chat-examples --example server)
fi
SERVER=$ROOT/target/$PROFILE/examples/server
BENCH=$ROOT/target/$PROFILE/chat-bench

# ---- processes and databases we own, and their cleanup ---------------------------------
NODE_PIDS=()
DBS=()
REDIS_PID=
REDIS_PORT=
stop_nodes() {
    local pid
    for pid in "${NODE_PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${NODE_PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    NODE_PIDS=()
}
drop_databases() {
    local db
    for db in "${DBS[@]}"; do
        psql "$PG/postgres" -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" >>"$LOG" 2>&1 || true
    done
    DBS=()
}
cleanup() {
    stop_nodes
    drop_databases
    if [[ -n $REDIS_PID ]]; then
        kill "$REDIS_PID" 2>/dev/null || true
        wait "$REDIS_PID" 2>/dev/null || true
        REDIS_PID=
    fi
    rm -rf "$WORK/redis"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

port_free() { ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Our own Redis: first free port from BASE_PORT + 90 (never 6379), no persistence.
start_redis() {
    local p
    for p in $(seq $((BASE_PORT + 90)) $((BASE_PORT + 99))); do
        if port_free "$p"; then REDIS_PORT=$p; break; fi
    done
    [[ -n $REDIS_PORT && $REDIS_PORT != 6379 ]] || { echo "cluster-bench.sh: no free port for redis-server" >&2; return 1; }
    mkdir -p "$WORK/redis"
    taskset -c "$LOAD_CPUS" redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' \
        --appendonly no --dir "$WORK/redis" --logfile "$WORK/redis/redis.log" >>"$LOG" 2>&1 &
    REDIS_PID=$!
    for _ in $(seq 100); do # bounded: 10 s
        if redis-cli -p "$REDIS_PORT" ping 2>/dev/null | grep -q PONG; then return 0; fi
        sleep 0.1
    done
    echo "cluster-bench.sh: redis-server did not start on $REDIS_PORT" >&2
    return 1
}
rcli() { redis-cli -h 127.0.0.1 -p "$REDIS_PORT" "$@"; }

# start_node PORT DB [CLUSTER FLAGS…]: one node pinned to the server cores; waits (≤ 20 s)
# for its /healthz.
start_node() {
    local port=$1 db=$2
    shift 2
    port_free "$port" || { echo "cluster-bench.sh: port $port is taken" >&2; return 1; }
    taskset -c "$SERVER_CPUS" "$SERVER" --addr "127.0.0.1:$port" --log warn --no-web-client \
        --store "$PG/$db" \
        --message-rate off --join-rate off --typing-rate off --history-rate off \
        --refusal-budget off --max-connections-per-ip off --connections-per-ip-rate off \
        --max-http-connections-per-ip off "$@" >>"$LOG" 2>&1 &
    NODE_PIDS+=($!)
    for _ in $(seq 200); do
        if curl -sf "http://127.0.0.1:$port/healthz" >/dev/null 2>&1; then return 0; fi
        kill -0 "${NODE_PIDS[-1]}" 2>/dev/null || break
        sleep 0.1
    done
    echo "cluster-bench.sh: node on port $port did not become healthy (see $LOG)" >&2
    return 1
}

# metric FILE SERIES: the value of one exact series line (`name{labels}`), 0 when absent.
metric() {
    awk -v s="$2" '$1 == s { v = $2 } END { print (v == "" ? 0 : v) }' "$1"
}
# bus_total FILE NAME: the sum of a labelled counter over every label (all op/event kinds).
bus_total() {
    awk -v n="$1{" 'index($1, n) == 1 { v += $2 } END { print v + 0 }' "$2" 2>/dev/null || echo 0
}
scrape() { curl -sf "http://127.0.0.1:$1/metrics" >"$2"; }

# /proc/stat's all-core busy and total jiffies.
cpu_jiffies() { awk '/^cpu / { busy = $2 + $3 + $4 + $7 + $8; print busy, busy + $5 + $6 }' /proc/stat; }

# run NODES BUS RATE REP: a fresh database (and Redis prefix), NODES nodes, one fan-out run.
RUN_NO=0
run() {
    local nodes=$1 bus=$2 rate=$3 rep=$4
    RUN_NO=$((RUN_NO + 1))
    local db=chat_cbench_${STAMP,,}_$RUN_NO
    db=${db//[^a-z0-9_]/_}
    local label="$nodes node$( ((nodes > 1)) && echo s), $( ((bus)) && echo "Redis bus" || echo "no bus")"
    echo "--- $label, $rate msg/s (run $rep)" | tee -a "$LOG" >&2
    psql "$PG/postgres" -qc "CREATE DATABASE $db" >>"$LOG" 2>&1
    DBS+=("$db")
    local prefix="cb$RUN_NO:" ports=() n
    if ((bus)); then rcli flushall >>"$LOG"; fi # our own instance only (never 6379)
    for n in $(seq "$nodes"); do
        local port=$((BASE_PORT + RUN_NO * 4 % 80 + n))
        if ((bus)); then
            start_node "$port" "$db" --redis "redis://127.0.0.1:$REDIS_PORT" \
                --node-id "n$n" --cluster-prefix "$prefix"
        else
            start_node "$port" "$db"
        fi
        ports+=("$port")
    done
    local others=() p
    for p in "${ports[@]:1}"; do others+=(--node "127.0.0.1:$p"); done

    for n in "${!ports[@]}"; do scrape "${ports[$n]}" "$WORK/before-$RUN_NO-$n"; done
    local publish_before=0
    ((bus)) && publish_before=$(rcli info commandstats | awk -F'[:=,]' '/^cmdstat_publish:/ { print $3 }')
    read -r busy0 total0 < <(cpu_jiffies)
    local load_before t0
    load_before=$(cut -d' ' -f1-3 /proc/loadavg)
    t0=$(date +%s.%N)

    taskset -c "$LOAD_CPUS" "$BENCH" fanout --addr "127.0.0.1:${ports[0]}" "${others[@]}" \
        --clients "$CLIENTS" --rooms "$ROOMS" --senders "$SENDERS" --rate "$rate" \
        --warmup "$WARMUP" --duration "$DURATION" --drain "$DRAIN" \
        --server-pid "${NODE_PIDS[0]}" --label "$label" --json \
        >"$WORK/bench-$RUN_NO.out" 2>>"$LOG" &
    local bench_pid=$!
    # Once every client is connected (Σ chat_connections; bounded: 30 s), count each room
    # channel's subscribers on our Redis: one per node, whatever the connections.
    local numsub="[]"
    if ((bus)); then
        local t conns
        for t in $(seq 300); do
            conns=0
            for p in "${ports[@]}"; do
                curl -sf "http://127.0.0.1:$p/metrics" >"$WORK/probe" || true
                conns=$((conns + $(metric "$WORK/probe" chat_connections | cut -d. -f1)))
            done
            ((conns >= CLIENTS)) && break
            kill -0 "$bench_pid" 2>/dev/null || break
            sleep 0.1
        done
        local channels=()
        mapfile -t channels < <(rcli --raw pubsub channels "${prefix}r:*" | sort)
        if ((${#channels[@]})); then
            numsub=$(rcli --raw pubsub numsub "${channels[@]}" | paste - - |
                jq -Rsc 'split("\n") | map(select(. != "") | split("\t") | {channel: .[0], subscribers: (.[1] | tonumber)})')
        fi
    fi
    local status=0
    wait "$bench_pid" || status=$?

    read -r busy1 total1 < <(cpu_jiffies)
    local wall
    wall=$(awk -v a="$(date +%s.%N)" -v b="$t0" 'BEGIN { printf "%.2f", a - b }')
    local load_after
    load_after=$(cut -d' ' -f1-3 /proc/loadavg)
    local publish_after=0
    ((bus)) && publish_after=$(rcli info commandstats | awk -F'[:=,]' '/^cmdstat_publish:/ { print $3 }')
    local per_node="[]"
    for n in "${!ports[@]}"; do
        local after=$WORK/after-$RUN_NO-$n before=$WORK/before-$RUN_NO-$n
        scrape "${ports[$n]}" "$after" || : >"$after"
        per_node=$(jq -c \
            --arg node "n$((n + 1))" --arg port "${ports[$n]}" \
            --argjson chat "$(( $(metric "$after" 'chat_messages_in_total{type="chat_message"}' | cut -d. -f1) - $(metric "$before" 'chat_messages_in_total{type="chat_message"}' | cut -d. -f1) ))" \
            --argjson published "$(( $(metric "$after" 'chat_cluster_ops_total{op="message"}' | cut -d. -f1) - $(metric "$before" 'chat_cluster_ops_total{op="message"}' | cut -d. -f1) ))" \
            --argjson received "$(( $(metric "$after" 'chat_cluster_events_total{event="message"}' | cut -d. -f1) - $(metric "$before" 'chat_cluster_events_total{event="message"}' | cut -d. -f1) ))" \
            --argjson ops_all "$(( $(bus_total chat_cluster_ops_total "$after" | cut -d. -f1) - $(bus_total chat_cluster_ops_total "$before" | cut -d. -f1) ))" \
            --argjson events_all "$(( $(bus_total chat_cluster_events_total "$after" | cut -d. -f1) - $(bus_total chat_cluster_events_total "$before" | cut -d. -f1) ))" \
            --argjson cpu_s "$(awk -v a="$(metric "$after" process_cpu_seconds_total)" -v b="$(metric "$before" process_cpu_seconds_total)" 'BEGIN { print a - b }')" \
            '. + [{node: $node, port: ($port | tonumber), chat_messages_in: $chat, bus_published: $published,
                   bus_received: $received, bus_ops_all_kinds: $ops_all, bus_events_all_kinds: $events_all,
                   cpu_seconds: $cpu_s}]' <<<"$per_node")
    done
    stop_nodes
    drop_databases

    grep -v '^{' "$WORK/bench-$RUN_NO.out" | tee -a "$LOG" >&2 || true
    local report
    report=$(grep '^{' "$WORK/bench-$RUN_NO.out" || echo '{"failed": true}')
    ((status == 0)) || report=$(jq -c '. + {failed: true}' <<<"$report")
    jq -c --argjson nodes "$nodes" --argjson bus "$bus" --argjson rate "$rate" --argjson rep "$rep" \
        --argjson per_node "$per_node" --argjson numsub "$numsub" \
        --argjson publish "$((publish_after - publish_before))" \
        --arg load_before "$load_before" --arg load_after "$load_after" --argjson wall "$wall" \
        --argjson busy "$(awk -v b=$((busy1 - busy0)) -v t=$((total1 - total0)) -v c="$(nproc)" 'BEGIN { printf "%.2f", (t ? b / t : 0) * c }')" \
        '. + {run: {nodes: $nodes, bus: ($bus == 1), rate: $rate, repeat: $rep, per_node: $per_node,
                    redis_publish: $publish, room_channel_subscribers: $numsub,
                    load_average_before: $load_before, load_average_after: $load_after,
                    machine_busy_cores: $busy, wall_seconds: $wall}}' <<<"$report" >>"$RESULTS"
}

start_redis
echo "our redis-server: 127.0.0.1:$REDIS_PORT (pid $REDIS_PID); results: $RESULTS" >&2
for rate in $RATES; do
    for rep in $(seq "$REPEAT"); do
        run 1 0 "$rate" "$rep"
        run 1 1 "$rate" "$rep"
        run 2 1 "$rate" "$rep"
        run 3 1 "$rate" "$rep"
    done
done

# ---- the table ------------------------------------------------------------------------
{
    echo "$CLIENTS clients in $ROOMS rooms ($((CLIENTS / ROOMS)) members each), $SENDERS senders," \
        "fixed rate, ${WARMUP} s warm-up + ${DURATION} s measured; PostgreSQL store; $PROFILE build;" \
        "nodes on core $SERVER_CPUS, chat-bench and redis-server on core $LOAD_CPUS"
    echo
    echo "| nodes | bus | msg/s | deliveries/s | p50 | p99 | p99 − no-bus p99 | p99 same node / cross node | bus msgs per chat msg, per node | loss | refused | clients not exact | nodes' CPU (cores) | machine busy (cores) | load avg |"
    echo "|---|---|---:|---:|---:|---:|---:|---|---|---:|---:|---:|---:|---:|---|"
    jq -rs '
      def ms: if . == null then "—" else ((. / 10 | round) / 100 | tostring) + " ms" end;
      def f2: (. * 100 | round) as $c | "\($c / 100 | floor).\($c % 100 | tostring | if length < 2 then "0" + . else . end)";
      . as $all
      | .[]
      | . as $x
      | ($all | map(select(.run.bus == false and .run.rate == $x.run.rate and .run.repeat == $x.run.repeat)) | first) as $base
      | ($x.run.per_node | map(.bus_published) | add) as $announced
      | "| \($x.run.nodes) | \(if $x.run.bus then "Redis" else "none" end) | \($x.run.rate) | "
        + (if ($x.failed // false) or $x.fanout == null then "failed | | | | | | | | | | | |"
           else
             "\($x.fanout.deliveries_per_s | round) | \($x.fanout.latency.p50_us | ms) | \($x.fanout.latency.p99_us | ms) | "
             + (if $x.run.bus and $base.fanout != null
                then (($x.fanout.latency.p99_us - $base.fanout.latency.p99_us) | ms | if startswith("-") then . else "+" + . end)
                else "baseline" end) + " | "
             + (if $x.fanout.latency_by_node != null
                then "\($x.fanout.latency_by_node.same_node.p99_us | ms) / \($x.fanout.latency_by_node.cross_node.p99_us | ms)"
                else "—" end) + " | "
             + (if $x.run.bus and $announced > 0
                then ($x.run.per_node | map("\(.node) \((.bus_published + .bus_received) / $announced | f2)") | join(", "))
                else "—" end) + " | "
             + "\($x.fanout.loss) | \($x.fanout.counts.errors) | \($x.fanout.clients_wrong) | "
             + "\($x.run.per_node | map(.cpu_seconds) | add / $x.run.wall_seconds | f2) | "
             + "\($x.run.machine_busy_cores) | \($x.run.load_average_before) → \($x.run.load_average_after)"
           end) + " |"' "$RESULTS"
    echo
    echo "Bus detail per run (whole run incl. joins and warm-up; \"msgs\" = kind message):"
    jq -r 'select(.run.bus) | "- \(.run.nodes) node(s), \(.run.rate) msg/s: chat messages \(.run.per_node | map(.chat_messages_in) | add), Redis PUBLISH \(.run.redis_publish); "
        + (.run.per_node | map("\(.node): published \(.bus_published), received \(.bus_received) (all kinds: \(.bus_ops_all_kinds) out, \(.bus_events_all_kinds) in)") | join("; "))
        + "; room channel subscribers: " + (.run.room_channel_subscribers | map(.subscribers) | map(tostring) | join(","))' "$RESULTS"
} | tee "$TABLE"
echo >&2
echo "results: $RESULTS; table: $TABLE; log: $LOG" >&2
