// Connection and resume building blocks of the web client; no DOM here.
//
// * `Connection`: one WebSocket at a time to ws(s)://<host>/ws, reconnecting with
//   exponential backoff and full jitter until told to stop.
// * `MessageLog`: a conversation's confirmed messages, ordered by `seq`, deduplicated by
//   `id` and by `seq` (a resume replay may overlap what is already shown).
// * `Inflight`: the commands awaiting a reply, so that an `error` (which names no
//   command) can be matched with the command it refuses. The server handles a
//   connection's commands strictly in order (docs/PROTOCOL.md, "Order").
// * `joinCommand`: the `join_room` frame, with the resume cursor when there is one.

export const BACKOFF_BASE_MS = 500;
export const BACKOFF_CAP_MS = 15000;

/** Close codes after which reconnecting cannot help: the user must act first. */
export const FATAL_CLOSES = new Map([
  [4001, 'Your session expired. Reload the page to sign in again.'],
]);

/** Human text for the close codes of docs/PROTOCOL.md. */
export const CLOSE_REASONS = new Map([
  [1001, 'The server is restarting.'],
  [1008, 'The server refused too many requests from this connection.'],
  [1009, 'A message was too large for the server.'],
  [1011, 'The server had an internal error.'],
  [1013, 'The server is busy, or the connection fell behind: reconnecting.'],
  // No longer sent (a taken username is an error frame); if an old server sends it,
  // reconnecting is harmless.
  [4009, 'Your username is held by another online user.'],
  ...FATAL_CLOSES,
]);

/** Full jitter: uniform in [0, min(cap, base * 2^attempt)). */
export function backoffDelay(attempt, base = BACKOFF_BASE_MS, cap = BACKOFF_CAP_MS, random = Math.random) {
  return Math.floor(random() * Math.min(cap, base * 2 ** Math.min(attempt, 30)));
}

/** The WebSocket endpoint of the page's own origin; a `?token=` of the page is passed on. */
export function wsUrl(loc = window.location) {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  const token = new URLSearchParams(loc.search).get('token');
  return `${scheme}//${loc.host}/ws${token ? `?token=${encodeURIComponent(token)}` : ''}`;
}

/** A random id for `clientMsgId`; `crypto.randomUUID` exists only in secure contexts. */
export function newClientMsgId() {
  if (globalThis.crypto?.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

/** Trims like the server (Unicode White_Space, which includes U+0085 and not U+FEFF). */
export function trimContent(s) {
  return s.replace(/^[\s\u0085]+|[\s\u0085]+$/gu, '');
}

/** `join_room` with `keepRooms`; with a cursor `{epoch, lastSeq}` it asks for a resume. */
export function joinCommand(room, cursor) {
  const frame = { type: 'join_room', room, keepRooms: true };
  if (cursor && cursor.epoch != null) {
    frame.since = cursor.lastSeq ?? 0;
    frame.epoch = cursor.epoch;
  }
  return frame;
}

/** The typing line for a list of names. */
export function typingText(names) {
  if (names.length === 0) return '';
  if (names.length === 1) return `${names[0]} is typing…`;
  if (names.length === 2) return `${names[0]} and ${names[1]} are typing…`;
  return 'Several people are typing…';
}

/** Confirmed messages of one conversation, ordered by seq, without duplicates. */
export class MessageLog {
  constructor() {
    this.items = [];
    this.ids = new Set();
    this.seqs = new Set();
  }

  has(m) {
    return this.ids.has(m.id) || (m.seq != null && this.seqs.has(m.seq));
  }

  /** Inserts in seq order; false when the message (same id or same seq) is already here. */
  add(m) {
    if (this.has(m)) return false;
    this.ids.add(m.id);
    if (m.seq != null) this.seqs.add(m.seq);
    const key = m.seq ?? Infinity;
    let i = this.items.length;
    while (i > 0 && (this.items[i - 1].seq ?? Infinity) > key) i--;
    this.items.splice(i, 0, m);
    return true;
  }

  /** Replaces everything (a reload after `recovered: false`). */
  reset(messages) {
    this.items = [];
    this.ids.clear();
    this.seqs.clear();
    for (const m of messages) this.add(m);
  }

  /**
   * The stream restarted (`stream_reset`): what is shown stays, moved before `separator`
   * (an item with an `id`), and the new stream's seqs (from 1) go after it.
   */
  restart(separator) {
    const shift = (this.newestSeq ?? 0) + 1;
    const old = this.items.map((m) => (m.seq != null ? { ...m, seq: m.seq - shift } : m));
    this.reset(old);
    this.add({ ...separator, seq: 0 });
  }

  /** The oldest seq of the current stream (messages from before a restart are not). */
  get oldestSeq() {
    const m = this.items.find((x) => x.seq != null && x.seq > 0);
    return m ? m.seq : null;
  }

  get newestSeq() {
    return this.items.length ? this.items[this.items.length - 1].seq : null;
  }

  /** The message that carries `clientMsgId` from one of `authorIds`. */
  findClientMsgId(clientMsgId, authorIds) {
    return this.items.find((m) => m.clientMsgId === clientMsgId && authorIds.has(m.userId ?? m.fromId));
  }
}

// Which commands an error code can refuse; an error with another code refuses the
// oldest command still waiting.
const ERROR_TARGETS = {
  invalid_username: ['set_username'],
  username_taken: ['set_username'],
  username_locked: ['set_username'],
  invalid_room: ['join_room'],
  too_many_rooms: ['join_room'],
  user_not_found: ['private_message', 'dm_history'],
  rate_limited: ['chat_message', 'private_message'],
  // Only appends time out this way; the message may or may not be stored.
  store_timeout: ['chat_message', 'private_message'],
};

/** Commands sent on the current connection that still await their reply or error. */
export class Inflight {
  constructor() {
    this.queue = [];
  }

  push(entry) {
    this.queue.push(entry);
  }

  /** Removes and returns the oldest entry of `type` that satisfies `pred`. */
  settle(type, pred = () => true) {
    const i = this.queue.findIndex((e) => e.type === type && pred(e));
    return i < 0 ? null : this.queue.splice(i, 1)[0];
  }

  /** Removes and returns the command an `error {code}` refuses, if any is waiting. */
  forError(code) {
    const types = ERROR_TARGETS[code];
    const i = types ? this.queue.findIndex((e) => types.includes(e.type)) : 0;
    return i < 0 || this.queue.length === 0 ? null : this.queue.splice(i, 1)[0];
  }

  clear() {
    this.queue = [];
  }
}

/**
 * One WebSocket at a time, reopened with backoff after every close until `stop()`.
 *
 * Callbacks: `onFrame(obj)` for each JSON object received, `onOpen()`, `onClose(info)`
 * with `{code, reason, fatal}`, and `onState(state)` where state is `connecting`,
 * `open`, `reconnecting` (see `retryAt`), `offline` (the browser is offline; waits for
 * the `online` event) or `stopped`.
 */
export class Connection {
  constructor(url, callbacks) {
    this.url = url;
    this.cb = callbacks;
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.retryAt = 0;
    this.state = 'idle';
    this.stopped = false;
    this.opens = 0;
    window.addEventListener('online', () => {
      if (!this.stopped && this.ws === null) this.connect();
    });
    window.addEventListener('offline', () => {
      if (!this.stopped && this.ws === null) this.setState('offline');
    });
  }

  setState(state) {
    this.state = state;
    this.cb.onState?.(state);
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /** Opens now, cancelling any pending retry. */
  connect() {
    clearTimeout(this.timer);
    this.timer = null;
    this.stopped = false;
    if (this.ws) return;
    this.setState('connecting');
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.opens++;
      this.setState('open');
      this.cb.onOpen?.();
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return;
      let obj;
      try {
        obj = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (obj && typeof obj === 'object' && typeof obj.type === 'string') this.cb.onFrame(obj);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      const fatal = FATAL_CLOSES.has(ev.code);
      this.cb.onClose?.({ code: ev.code, reason: ev.reason, fatal });
      if (fatal) this.stop();
      else if (!this.stopped) this.scheduleRetry();
    };
  }

  /** The session is healthy again: the next outage starts the backoff from the beginning. */
  markHealthy() {
    this.attempt = 0;
  }

  scheduleRetry() {
    if (navigator.onLine === false) {
      this.setState('offline');
      return;
    }
    const delay = backoffDelay(this.attempt++);
    this.retryAt = Date.now() + delay;
    this.timer = setTimeout(() => this.connect(), delay);
    this.setState('reconnecting');
  }

  /** Sends one object; false when the socket is not open (the caller keeps its state). */
  send(obj) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  /** Closes the socket; with `reconnect` the usual backoff follows (a test hook). */
  drop(reconnect = true) {
    if (!reconnect) this.stopped = true;
    this.ws?.close(4000, 'client drop');
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = null;
    this.ws?.close(1000);
    this.setState('stopped');
  }
}
