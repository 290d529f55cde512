#!/usr/bin/env bash
# Syscalls per delivery: one `chat-bench fanout` run against a fresh server (ours, on the
# in-memory store, every rate and per-IP limit off, as in scripts/bench.sh; or the bare
# relay), with `perf stat` counting the server's socket syscalls and context switches over
# 5 s inside the measured window. Divide the write count (writev, or sendto for
# tungstenite's own writer) by deliveries/s × 5 for writes per delivery.
#
#   scripts/syscalls.sh ours|relay PORT [chat-bench fanout flags…]
#   scripts/syscalls.sh ours 23601 --clients 1000 --rooms 100 --senders 100 --window 8   # (b)
#   scripts/syscalls.sh ours 23602 --clients 200 --rooms 1 --senders 4 --window 8        # (a)
#
# Needs release binaries (`cargo build --release -p chat-examples --example server -p
# chat-bench`) and perf; the server is pinned to core 0, the tool to core 1.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SERVER=$ROOT/target/release/examples/server
BENCH=$ROOT/target/release/chat-bench
which=${1:?ours or relay}
port=${2:?a port in 127.0.0.1}
shift 2
ulimit -n "$(ulimit -Hn)"
case $which in
ours)
    taskset -c 0 "$SERVER" --addr "127.0.0.1:$port" --log warn --store memory \
        --message-rate off --join-rate off --typing-rate off --history-rate off \
        --refusal-budget off --max-connections-per-ip off --connections-per-ip-rate off \
        --max-connections 20000 --max-http-connections 20000 >/dev/null 2>&1 &
    ;;
relay) taskset -c 0 "$BENCH" relay --addr "127.0.0.1:$port" >/dev/null 2>&1 & ;;
*) echo "usage: $0 ours|relay PORT [fanout flags…]" >&2; exit 2 ;;
esac
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
sleep 1
stat=$(mktemp)
# 3 s in: after the tool's connecting and 2 s warm-up; 5 s: inside its 6 s window.
(sleep 3 && perf stat -e 'syscalls:sys_enter_sendto,syscalls:sys_enter_writev,syscalls:sys_enter_recvfrom,syscalls:sys_enter_epoll_wait,context-switches' \
    -p "$pid" -- sleep 5 2>"$stat") &
taskset -c 1 "$BENCH" fanout --addr "127.0.0.1:$port" --server-pid "$pid" "$@" --warmup 2 --duration 6 |
    grep -E 'deliveries|CPU'
wait %2 2>/dev/null || true
grep -E 'sys_enter|context' "$stat"
rm -f "$stat"
