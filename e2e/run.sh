#!/usr/bin/env bash
# Browser end-to-end tests: the web client in headless Chromium against the real example
# server. Called by .ci/run; runnable by hand from anywhere: `bash e2e/run.sh`.
#
# Needs Node.js >= 20 and Debian's chromium (installed here with apt when missing, as root
# or in CI). playwright-core drives it and never downloads a browser of its own.
# Env: CHROMIUM_PATH (default /usr/bin/chromium), CHAT_SERVER_BIN (skip the cargo build
# and use this server binary), CARGO_TARGET_DIR as usual.
# Artifacts (screenshots, server logs): target/e2e-screenshots/.
set -euo pipefail
E2E_DIR="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$E2E_DIR/.." && pwd)"
CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"

say() { printf -- '-- e2e: %s\n' "$*"; }

if [ ! -x "$CHROMIUM" ]; then
  if [ "$(id -u)" = 0 ] || [ "${CI:-}" = true ]; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    say "installing chromium with apt"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends chromium
  else
    echo "e2e: $CHROMIUM not found; install it (apt-get install chromium) or set CHROMIUM_PATH" >&2
    exit 1
  fi
fi
export CHROMIUM_PATH="$CHROMIUM"

if ! command -v node >/dev/null || [ "$(node -p 'process.versions.node.split(".")[0]')" -lt 20 ]; then
  echo "e2e: Node.js >= 20 is required (found: $(node --version 2>/dev/null || echo none))" >&2
  exit 1
fi
say "$(node --version), $("$CHROMIUM" --version 2>/dev/null | head -n1)"

cd "$E2E_DIR"
npm ci --no-audit --no-fund --loglevel=error

if [ -z "${CHAT_SERVER_BIN:-}" ]; then
  say "building the example server (debug)"
  # The binary's path comes from cargo itself, wherever the target directory is.
  CHAT_SERVER_BIN="$(cd "$ROOT" && cargo build -p chat-examples --example server \
    --message-format=json-render-diagnostics \
    | node -e '
      let last = "";
      require("readline").createInterface({ input: process.stdin }).on("line", (l) => {
        try {
          const m = JSON.parse(l);
          if (m.reason === "compiler-artifact" && m.target.name === "server" && m.executable) last = m.executable;
        } catch {}
      }).on("close", () => console.log(last));
    ')"
  if [ -z "$CHAT_SERVER_BIN" ] || [ ! -x "$CHAT_SERVER_BIN" ]; then
    echo "e2e: cargo did not report the server binary" >&2
    exit 1
  fi
fi
export CHAT_SERVER_BIN
say "server: $CHAT_SERVER_BIN"

rm -rf "$ROOT/target/e2e-screenshots"
mkdir -p "$ROOT/target/e2e-screenshots"

# One test file at a time: each starts its own server and browser (2 cores).
status=0
node --test --test-concurrency=1 tests/ || status=$?
say "screenshots and server logs in target/e2e-screenshots/"
exit "$status"
