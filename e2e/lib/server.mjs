// Starts and stops the real example server (`cargo build -p chat-examples --example
// server`) for the browser tests. Every server started here is killed when the test
// process ends, whatever the outcome.

import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, createWriteStream } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
/** CI artifacts: one PNG per scenario and user, failure screenshots, server logs. */
export const ARTIFACTS = path.join(REPO_ROOT, 'target', 'e2e-screenshots');
mkdirSync(ARTIFACTS, { recursive: true });

/** The server binary: $CHAT_SERVER_BIN, else the debug build in $CARGO_TARGET_DIR or target/. */
export function serverBin() {
  if (process.env.CHAT_SERVER_BIN) return process.env.CHAT_SERVER_BIN;
  const candidates = [];
  if (process.env.CARGO_TARGET_DIR) {
    candidates.push(path.resolve(REPO_ROOT, process.env.CARGO_TARGET_DIR, 'debug', 'examples', 'server'));
  }
  candidates.push(path.join(REPO_ROOT, 'target', 'debug', 'examples', 'server'));
  const found = candidates.find((c) => existsSync(c));
  if (!found) {
    throw new Error(`example server binary not found (tried ${candidates.join(', ')}); `
      + 'run `cargo build -p chat-examples --example server` or set CHAT_SERVER_BIN');
  }
  return found;
}

const running = new Set();

function killAllSync() {
  for (const proc of running) {
    try {
      proc.kill('SIGKILL');
    } catch {
      // already gone
    }
  }
  running.clear();
}

process.on('exit', killAllSync);
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, () => {
    killAllSync();
    process.exit(128 + ({ SIGHUP: 1, SIGINT: 2, SIGTERM: 15 })[sig]);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/**
 * Starts the server on `127.0.0.1:port` (0: the OS picks a free port) and resolves once
 * `/healthz` answers 200. `name` names its log file in the artifacts directory.
 */
export async function startServer({ name, port = 0, args = [], timeoutMs = 15000 }) {
  const deadline = Date.now() + timeoutMs;
  let lastError;
  // A restart on the same port may briefly find it busy: retry until the deadline.
  while (Date.now() < deadline) {
    try {
      return await startOnce({ name, port, args, deadline });
    } catch (e) {
      lastError = e;
      if (port === 0 || !/in use|AddrInUse|os error 98/i.test(String(e.message))) throw e;
      await sleep(200);
    }
  }
  throw lastError ?? new Error(`server ${name} did not start within ${timeoutMs} ms`);
}

async function startOnce({ name, port, args, deadline }) {
  const log = createWriteStream(path.join(ARTIFACTS, `server-${name}.log`), { flags: 'a' });
  log.write(`---- start ${new Date().toISOString()} port=${port} args=${JSON.stringify(args)}\n`);
  const env = { ...process.env, NO_COLOR: '1', CHAT_LOG: process.env.CHAT_LOG ?? 'info' };
  // The in-memory store unless a test names one: the scenarios expect a fresh history
  // (and the server's default, SQLite in ./chat-data, would be shared between them).
  const store = args.some((a) => a === '--store' || a.startsWith('--store=')) ? [] : ['--store', 'memory'];
  const proc = spawn(serverBin(), ['--addr', `127.0.0.1:${port}`, ...store, ...args], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(proc);
  let output = '';
  const exited = new Promise((resolve) => {
    proc.once('exit', (code, signal) => {
      running.delete(proc);
      log.write(`---- exit code=${code} signal=${signal}\n`);
      log.end();
      resolve({ code, signal });
    });
  });
  const addrSeen = new Promise((resolve) => {
    const onData = (chunk) => {
      const text = chunk.toString();
      log.write(text);
      output += text;
      const m = output.match(/Chat server running: open http:\/\/([\d.]+):(\d+)\//);
      if (m) resolve(Number(m[2]));
    };
    proc.stdout.on('data', onData);
    proc.stderr.on('data', onData);
  });
  proc.once('error', (e) => {
    output += `spawn error: ${e.message}\n`;
  });

  const failed = exited.then(({ code, signal }) => {
    throw new Error(`server ${name} exited during start (code ${code}, signal ${signal}):\n${output}`);
  });
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`server ${name} printed no address in time:\n${output}`)),
      Math.max(0, deadline - Date.now()));
  });
  let boundPort;
  try {
    boundPort = await Promise.race([addrSeen, failed, timeout]);
  } catch (e) {
    proc.kill('SIGKILL');
    await exited;
    throw e;
  } finally {
    clearTimeout(timer);
  }
  failed.catch(() => {}); // the exit after a successful start is the caller's business

  const url = `http://127.0.0.1:${boundPort}`;
  for (;;) {
    try {
      const res = await fetch(`${url}/healthz`);
      if (res.ok) break;
    } catch {
      // not accepting yet
    }
    if (Date.now() > deadline || proc.exitCode !== null) {
      proc.kill('SIGKILL');
      await exited;
      throw new Error(`server ${name} never answered /healthz:\n${output}`);
    }
    await sleep(50);
  }

  return {
    name,
    url,
    port: boundPort,
    pid: proc.pid,
    /** Kills the process (SIGKILL by default: a crash) and waits for it to be gone. */
    async kill(signal = 'SIGKILL') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
  };
}
