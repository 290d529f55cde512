// protocol.js — the wire rules of docs/PROTOCOL.md as pure functions and small data
// structures: no DOM, no WebSocket, no timers, so they load in Node and are unit-tested
// there (tests/protocol.test.mjs).
//
// Why a module of its own: the client must apply the server's rules exactly (what an
// optimistic message shows, which room a name means, where a resume starts), and the
// server's rules are easy to get subtly wrong in JavaScript (`\s` and `trim()` are not
// Unicode White_Space; `length` counts UTF-16 units, the server counts characters).
//
// * text rules: `trimContent`, `normalizeContent`, `limitContent`, `parseUsername`, `parseRoom`, `utf8Length`;
// * close codes and backoff: `CLOSE_REASONS`, `FATAL_CLOSES`, `backoffDelay`;
// * commands: `joinCommand` (with the resume cursor), `newClientMsgId`, `wsUrl`;
// * `MessageLog`: a conversation's confirmed messages, ordered by `seq`, deduplicated by
//   `id` and by `seq` (a resume replay may overlap what is already shown);
// * `Inflight` and `errorTargets`: the commands awaiting a reply, so that an `error` can
//   be matched with the command it refuses. Each tracked command carries a `ref` that
//   the server echoes on the `error` answering it (docs/PROTOCOL.md, "Errors"); only an
//   error without one (a server that predates `ref`) is matched by its code, relying on
//   the server handling a connection's commands strictly in order.

export const BACKOFF_BASE_MS = 500;
export const BACKOFF_CAP_MS = 15000;

/** The server's limits (chat-core `ids.rs`, `protocol/client.rs`), in Unicode characters or bytes. */
export const USERNAME_MIN_CHARS = 2;
export const USERNAME_MAX_CHARS = 20;
export const ROOM_MAX_CHARS = 30;
export const CONTENT_MAX_CHARS = 1000;
export const CONTENT_MAX_BYTES = 16 * 1024;

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
export function wsUrl(loc = globalThis.location) {
  const scheme = loc.protocol === 'https:' ? 'wss:' : 'ws:';
  const token = new URLSearchParams(loc.search).get('token');
  return `${scheme}//${loc.host}/ws${token ? `?token=${encodeURIComponent(token)}` : ''}`;
}

/** A random id for `clientMsgId`; `crypto.randomUUID` exists only in secure contexts. */
export function newClientMsgId(c = globalThis.crypto) {
  if (c?.randomUUID) return c.randomUUID();
  const b = c.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

// ---------------------------------------------------------------------------------
// Text rules

// Unicode White_Space, which Rust's `str::trim` strips. Spelled out because JavaScript's
// `\s` (and `String.prototype.trim`) differ from it twice: they include U+FEFF (the BOM,
// which is a format character, not white space: the server keeps it) and miss U+0085.
const WS = '\\t-\\r \\u0085\\u00A0\\u1680\\u2000-\\u200A\\u2028\\u2029\\u202F\\u205F\\u3000';
const LEADING_WS = new RegExp(`^[${WS}]+`, 'u');
const TRAILING_WS = new RegExp(`[${WS}]+$`, 'u');

/** Trims Unicode White_Space from both ends, as Rust's `str::trim` does (U+FEFF stays). */
export function trimContent(s) {
  return s.replace(LEADING_WS, '').replace(TRAILING_WS, '');
}

function trimEnd(s) {
  return s.replace(TRAILING_WS, '');
}

/** The first `max` Unicode characters (code points, as Rust's `chars()`), never half a pair. */
export function cutChars(s, max) {
  let units = 0;
  let n = 0;
  for (const ch of s) {
    if (n === max) return s.slice(0, units);
    units += ch.length;
    n++;
  }
  return s;
}

/** Bytes of `s` in UTF-8 (what the server's byte limits count). */
export function utf8Length(s) {
  let bytes = 0;
  for (const ch of s) {
    const cp = ch.codePointAt(0);
    bytes += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
  }
  return bytes;
}

/** The longest prefix of `s` of at most `max` UTF-8 bytes (the server's decode cut). */
export function cutUtf8(s, max) {
  let bytes = 0;
  let units = 0;
  for (const ch of s) {
    bytes += utf8Length(ch);
    if (bytes > max) return s.slice(0, units);
    units += ch.length;
  }
  return s;
}

/**
 * The message text the server will store for `raw` (chat-core `Content::parse` after the
 * decoder's byte cut): cut to 16 KiB, trimmed, cut to 1000 characters, trimmed at the end;
 * `''` when nothing is left (the server ignores such a message). Lone surrogates, which
 * the server refuses as invalid JSON, become U+FFFD first.
 */
export function normalizeContent(raw) {
  const wellFormed = typeof raw.toWellFormed === 'function' ? raw.toWellFormed() : raw;
  return trimEnd(cutChars(trimContent(cutUtf8(wellFormed, CONTENT_MAX_BYTES)), CONTENT_MAX_CHARS));
}

/**
 * The composer's limit: `raw` with at most 1000 characters after its leading white
 * space (which the server trims before counting). Replaces the textarea's `maxlength`,
 * which counts UTF-16 units and so stopped a message of emoji at 500 characters.
 */
export function limitContent(raw) {
  const rest = raw.replace(LEADING_WS, '');
  const cut = cutChars(rest, CONTENT_MAX_CHARS);
  return cut.length === rest.length ? raw : raw.slice(0, raw.length - rest.length) + cut;
}

// chat-core `is_invisible`: controls, the format characters that hide or reorder text
// (soft hyphen, bidi controls, zero-width characters, BOM, tags) and line separators.
const INVISIBLE = /[\p{Cc}\u00AD\u0600-\u0605\u061C\u06DD\u070F\u180E\u200B-\u200F\u2028-\u202E\u2060-\u206F\uFEFF\uFFF9-\uFFFB\u{E0000}-\u{E007F}]/u;

/** True when `s` holds a character the server refuses in names and ids. */
export function hasInvisible(s) {
  return INVISIBLE.test(s);
}

/**
 * The server's username rule (chat-core `Username::parse`): `{name}` as it will be
 * stored, or `{error}` with the server's own text.
 */
export function parseUsername(raw) {
  const trimmed = trimContent(raw);
  if ([...trimmed].length < USERNAME_MIN_CHARS) {
    return { error: `Username must be at least ${USERNAME_MIN_CHARS} characters` };
  }
  if (hasInvisible(trimmed)) return { error: 'Username contains invisible or control characters' };
  return { name: trimEnd(cutChars(trimmed, USERNAME_MAX_CHARS)) };
}

/**
 * The server's room-name rule (chat-core `RoomName::parse`: trimmed, lower-cased, cut to
 * 30 characters): `{name}` as the server will call the room, or `{error}` with its text.
 */
export function parseRoom(raw) {
  const name = trimEnd(cutChars(trimContent(raw).toLowerCase(), ROOM_MAX_CHARS));
  if (!name) return { error: 'Room name required' };
  if (hasInvisible(name)) return { error: 'Room name contains invisible or control characters' };
  return { name };
}

// ---------------------------------------------------------------------------------
// Commands and display helpers

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

// ---------------------------------------------------------------------------------
// Conversation log

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
}

// ---------------------------------------------------------------------------------
// Matching errors with commands

// For an error without `ref` only: which commands its code can refuse; an error with
// another code (`not_in_room`, `invalid_field`, `too_many_requests`, the store's codes, …)
// refuses the oldest command still waiting, which is the one the server is answering.
const ERROR_TARGETS = {
  invalid_username: ['set_username'],
  username_taken: ['set_username'],
  username_locked: ['set_username'],
  invalid_room: ['join_room'],
  too_many_rooms: ['join_room'],
  user_not_found: ['private_message', 'dm_history'],
  rate_limited: ['chat_message', 'private_message'],
};

/** The command types an error `code` can refuse, or `null` for "the oldest waiting". */
export function errorTargets(code) {
  return ERROR_TARGETS[code] ?? null;
}

/**
 * Codes after which the message may have been stored after all (the store answered too
 * late): the client keeps it and resends it with the same `clientMsgId`, which the server
 * stores at most once.
 */
export const INDETERMINATE_CODES = new Set(['store_timeout']);

/** Commands sent on the current connection that still await their reply or error. */
export class Inflight {
  constructor() {
    this.queue = [];
    this.lastRef = 0;
  }

  /**
   * A fresh request reference: `r1`, `r2`, … — never reused on this page (not even
   * across reconnects), and far inside the server's limit of 64 visible characters.
   */
  nextRef() {
    this.lastRef += 1;
    return `r${this.lastRef}`;
  }

  push(entry) {
    this.queue.push(entry);
  }

  /** Removes and returns the oldest entry of `type` that satisfies `pred`. */
  settle(type, pred = () => true) {
    const i = this.queue.findIndex((e) => e.type === type && pred(e));
    return i < 0 ? null : this.queue.splice(i, 1)[0];
  }

  /**
   * Removes and returns the command an `error` refuses, if it is waiting. `echo` is the
   * error frame: its `ref` names the command exactly (a `ref` matching nothing waiting
   * refuses nothing); without one, its `clientMsgId` names a chat or direct message;
   * only then is the command guessed from `code`.
   */
  forError(code, echo = {}) {
    if (typeof echo.ref === 'string') return this.take((e) => e.ref === echo.ref);
    if (typeof echo.clientMsgId === 'string') {
      const message = this.take((e) => (e.type === 'chat_message' || e.type === 'private_message')
        && e.clientMsgId === echo.clientMsgId);
      if (message) return message;
    }
    const types = errorTargets(code);
    const i = types ? this.queue.findIndex((e) => types.includes(e.type)) : 0;
    return i < 0 || this.queue.length === 0 ? null : this.queue.splice(i, 1)[0];
  }

  /** Removes and returns the oldest entry that satisfies `pred`. */
  take(pred) {
    const i = this.queue.findIndex(pred);
    return i < 0 ? null : this.queue.splice(i, 1)[0];
  }

  clear() {
    this.queue = [];
  }
}
