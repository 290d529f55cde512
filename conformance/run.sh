#!/usr/bin/env bash
# Runs the Autobahn|Testsuite cases (with kosoku, pinned in requirements.txt) against
# the chat-ws-warp echo server (examples/autobahn_echo.rs) on a free loopback port,
# and compares the verdicts with conformance/expected.json. docs/CONFORMANCE.md
# explains the results.
#
#   bash conformance/run.sh            # check: exits non-zero on any regression
#   bash conformance/run.sh --update   # re-record conformance/expected.json
#
# Everything it makes lives in the Cargo target directory (target/, or
# $CARGO_TARGET_DIR): the virtualenv in conformance-venv/ (reused while
# requirements.txt is unchanged) and the run in autobahn/ (the echo server's log,
# kosoku's log, and kosoku's reports: index.json plus one JSON and HTML file per case).
#
# Environment: AUTOBAHN_TIMEOUT (seconds for the whole case set, default 300),
# PYTHON (the interpreter that makes the virtualenv, default python3).
set -euo pipefail

update=false
case "${1:-}" in
  "") ;;
  --update) update=true ;;
  *) echo "usage: $0 [--update]" >&2; exit 2 ;;
esac

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
target="${CARGO_TARGET_DIR:-$root/target}"
venv="$target/conformance-venv"
out="$target/autobahn"
python="${PYTHON:-python3}"
suite_timeout="${AUTOBAHN_TIMEOUT:-300}"

log() { printf '[conformance] %s\n' "$*"; }

# --- kosoku, in a virtualenv keyed on requirements.txt -------------------------------
stamp="$venv/.requirements.sha256"
want="$(sha256sum conformance/requirements.txt | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/kosoku" || ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  log "creating $venv"
  rm -rf "$venv"
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    --no-input --timeout 60 -r conformance/requirements.txt
  echo "$want" >"$stamp"
fi
kosoku_version="$("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("kosoku"))')"
log "kosoku $kosoku_version"

# --- the echo server ------------------------------------------------------------------
# The dev profile: `cargo test` has already built it in CI, and it runs the whole case
# set in seconds.
log "building the echo server (examples/autobahn_echo.rs)"
echo_bin="$(
  cargo build --quiet -p chat-examples --example autobahn_echo \
    --message-format=json-render-diagnostics |
    "$python" -c '
import json, sys
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("reason") == "compiler-artifact" and msg["target"]["name"] == "autobahn_echo" \
            and msg.get("executable"):
        print(msg["executable"])
'
)"
if [[ -z "$echo_bin" || ! -x "$echo_bin" ]]; then
  echo "error: cargo did not report the autobahn_echo executable" >&2
  exit 1
fi

rm -rf "$out"
mkdir -p "$out"
echo_pid=""
kosoku_pid=""
# Stops a process we started: SIGTERM, then SIGKILL after 5 s.
stop() {
  local pid="$1"
  [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 50); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -KILL "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  stop "$kosoku_pid" # `timeout`, which passes the signal on to kosoku
  stop "$echo_pid"
}
trap cleanup EXIT
# Background jobs ignore Ctrl-C in a script: these make it end the run, and `cleanup`
# stops both processes. (Both run in the background so that `wait` can be interrupted.)
trap 'exit 130' INT
trap 'exit 143' TERM

"$echo_bin" --addr 127.0.0.1:0 >"$out/echo.log" 2>&1 &
echo_pid=$!

# It prints `listening on ws://127.0.0.1:PORT/` once bound; wait at most 10 s.
addr=""
for _ in $(seq 100); do
  addr="$(sed -n 's#^listening on ws://\([^/]*\)/$#\1#p' "$out/echo.log")"
  [[ -n "$addr" ]] && break
  if ! kill -0 "$echo_pid" 2>/dev/null; then
    echo "error: the echo server exited before listening:" >&2
    cat "$out/echo.log" >&2
    exit 1
  fi
  sleep 0.1
done
if [[ -z "$addr" ]]; then
  echo "error: the echo server did not report its address within 10 s" >&2
  cat "$out/echo.log" >&2
  exit 1
fi
log "echo server (pid $echo_pid) on ws://$addr/"

# --- the case set ---------------------------------------------------------------------
# kosoku exits 1 whenever a case is not OK/NON-STRICT/INFORMATIONAL (the compression
# cases are UNIMPLEMENTED here), so its exit code is not the verdict: compare.py is.
log "running every case (at most ${suite_timeout}s); log: $out/kosoku.log"
started=$SECONDS
timeout --kill-after=10 "$suite_timeout" \
  "$venv/bin/kosoku" --mode fuzzingclient --outdir "$out/reports" "$addr" \
  >"$out/kosoku.log" 2>&1 &
kosoku_pid=$!
status=0
wait "$kosoku_pid" || status=$?
kosoku_pid=""
log "kosoku finished in $((SECONDS - started))s (exit $status)"
if [[ $status -ne 0 && $status -ne 1 ]]; then
  if [[ $status -eq 124 || $status -eq 137 ]]; then
    echo "error: the case set did not finish within ${suite_timeout}s" >&2
  else
    echo "error: kosoku failed (exit $status)" >&2
  fi
  tail -n 40 "$out/kosoku.log" >&2
  exit 1
fi
if [[ ! -f "$out/reports/index.json" ]]; then
  echo "error: kosoku wrote no results ($out/reports/index.json)" >&2
  tail -n 40 "$out/kosoku.log" >&2
  exit 1
fi
if ! kill -0 "$echo_pid" 2>/dev/null; then
  echo "error: the echo server died during the run:" >&2
  tail -n 40 "$out/echo.log" >&2
  exit 1
fi
if grep -q 'panicked' "$out/echo.log"; then
  echo "error: the echo server panicked during the run:" >&2
  grep -A5 'panicked' "$out/echo.log" >&2
  exit 1
fi

# --- the verdict ----------------------------------------------------------------------
compare=("$python" conformance/compare.py conformance/expected.json "$out/reports/index.json"
  --kosoku-version "$kosoku_version")
if $update; then
  "${compare[@]}" --update
else
  "${compare[@]}"
fi
