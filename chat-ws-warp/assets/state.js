// state.js — the client's single store: one plain object (`createState`) and the
// functions that change it. Nothing else assigns to the store's fields, so every change
// has a name that says what it means (`markDisconnected`, `addRoomMessage`, …).
//
// Why: the handlers (handlers.js) and the user actions (app.js) reason about the same
// data, and the rendering (render.js) only reads it. No DOM, no socket, no timers here:
// anything time-based takes `now` as an argument, so the store loads and is tested in Node.

import { Inflight, MessageLog } from './protocol.js';

/** A fresh store. `auth`: the page carries a `?token=` (the server names the user). */
export function createState({ auth = false } = {}) {
  return {
    myId: null, // this connection's clientId
    myIds: new Set(), // every id this tab has had (anonymous users get a new one per connection)
    username: null, // last confirmed name; kept across reconnects
    wantName: null, // the name to (re)send with set_username
    ready: false, // username_set received on the current connection
    auth,
    nameRetries: 0,
    rooms: new Map(), // name → room; insertion order is the sidebar order
    dms: new Map(), // other user's id → conversation
    active: null, // {kind: 'room' | 'dm', key}
    inflight: new Inflight(),
    banner: null, // {text, kind}
    connState: 'connecting',
    closeInfo: '',
    reconnects: 0,
    restarts: 0, // "History restarted" separators made so far (their ids)
    typingTokens: 0, // ids of typing states, so a stale expiry timer changes nothing
    view: { screen: 'login', usernameError: null, joinError: null },
  };
}

export function newRoom(name) {
  return {
    kind: 'room', name, log: new MessageLog(), pending: [],
    logVersion: 0, // bumped when the log is replaced: ids of a new stream may repeat
    epoch: null, lastSeq: 0, hasMore: false, unread: 0,
    members: new Map(), typing: new Map(),
    status: 'joining', // joining | joined | disconnected | error
    resuming: false, awaitingHistory: false, reloaded: false, loadingOlder: false,
    error: null, anchorOlder: false,
  };
}

export function newDm(userId, username) {
  return {
    kind: 'dm', userId, username, log: new MessageLog(), pending: [], logVersion: 0,
    hasMore: false, unread: 0, loaded: false, loadingOlder: false, anchorOlder: false,
  };
}

// ---------------------------------------------------------------------------------
// Reading

export function convKey(conv) {
  return conv.kind === 'room' ? `room:${conv.name}` : `dm:${conv.userId}`;
}

export function activeConv(s) {
  if (!s.active) return null;
  return (s.active.kind === 'room' ? s.rooms : s.dms).get(s.active.key) ?? null;
}

export function isActive(s, conv) {
  return activeConv(s) === conv;
}

export function isOwn(s, userId) {
  return s.myIds.has(userId);
}

/** The resume cursor of a room (`null` before its first join reply). */
export function roomCursor(s, name) {
  const room = s.rooms.get(name);
  return room && room.epoch != null ? { epoch: room.epoch, lastSeq: room.lastSeq } : null;
}

// ---------------------------------------------------------------------------------
// Connection and user

/** A new connection said hello (`connection {clientId}`). */
export function setConnected(s, clientId) {
  s.myId = clientId;
  s.myIds.add(clientId);
  s.inflight.clear();
  s.ready = false;
  s.closeInfo = '';
}

/** The socket closed: nothing is in flight, rooms wait for their rejoin. */
export function markDisconnected(s) {
  s.ready = false;
  s.inflight.clear();
  for (const room of s.rooms.values()) {
    if (room.status !== 'error') room.status = 'disconnected';
    room.awaitingHistory = false;
    room.resuming = false;
    room.loadingOlder = false;
    room.typing.clear();
    for (const p of room.pending) if (p.status === 'sending') p.status = 'queued';
  }
  for (const dm of s.dms.values()) {
    dm.loadingOlder = false;
    for (const p of dm.pending) if (p.status === 'sending') p.status = 'queued';
  }
}

export function setConnState(s, state, hadOpened) {
  s.connState = state;
  if (state === 'connecting' && hadOpened) s.reconnects++;
}

export function setCloseInfo(s, text) {
  s.closeInfo = text;
}

/** `username_set`: the name is confirmed. */
export function confirmUsername(s, name) {
  s.username = name;
  s.wantName = name;
  s.nameRetries = 0;
  s.view.usernameError = null;
}

/** The user typed a name: send it, without silent retries when it is taken. */
export function chooseUsername(s, name, maxRetries) {
  s.wantName = name;
  s.nameRetries = maxRetries;
  s.view.usernameError = null;
}

export function showBanner(s, text, kind = 'error') {
  s.banner = { text, kind };
}

export function hideBanner(s) {
  s.banner = null;
}

/** `field`: `usernameError` or `joinError`; `null` hides it. */
export function setFieldError(s, field, message) {
  s.view[field] = message;
}

export function setScreen(s, screen) {
  s.view.screen = screen;
}

// ---------------------------------------------------------------------------------
// Conversations

export function addRoom(s, name) {
  let room = s.rooms.get(name);
  if (!room) {
    room = newRoom(name);
    s.rooms.set(name, room);
  }
  return room;
}

/** The DM conversation with `userId`, created on first use; a known name is refreshed. */
export function dmFor(s, userId, username) {
  let dm = s.dms.get(userId);
  if (!dm) {
    dm = newDm(userId, username);
    s.dms.set(userId, dm);
  } else if (username) {
    dm.username = username;
  }
  return dm;
}

/** Shows `target`; returns the conversation that was shown before. */
export function setActive(s, target) {
  const prev = activeConv(s);
  s.active = target;
  const conv = activeConv(s);
  if (conv) conv.unread = 0;
  return prev;
}

export function removeRoom(s, name) {
  if (!s.rooms.has(name)) return;
  s.rooms.delete(name);
  if (s.active?.kind === 'room' && s.active.key === name) {
    const next = s.rooms.keys().next();
    s.active = next.done ? null : { kind: 'room', key: next.value };
    const conv = activeConv(s);
    if (conv) conv.unread = 0;
  }
}

/**
 * The room's history starts again (seq from 1): with `keep` (a `stream_reset`) what is
 * shown stays above a "History restarted" separator; without (a reload) it goes.
 */
export function restartRoomLog(s, room, keep) {
  if (keep && room.log.items.length) {
    room.log.restart({ id: `restart-${++s.restarts}`, separator: true });
  } else {
    room.log.reset([]);
    room.logVersion++;
  }
  room.lastSeq = 0;
}

/** Adds a confirmed room message and resolves the optimistic copy it confirms. */
export function addRoomMessage(s, room, m) {
  if (m.clientMsgId && isOwn(s, m.userId)) {
    resolvePending(room, m.clientMsgId);
    s.inflight.settle('chat_message', (e) => e.clientMsgId === m.clientMsgId);
  }
  const added = room.log.add(m);
  if (added && typeof m.seq === 'number' && m.seq > room.lastSeq) room.lastSeq = m.seq;
  return added;
}

export function addDmMessage(s, dm, m) {
  if (m.clientMsgId && isOwn(s, m.fromId)) {
    resolvePending(dm, m.clientMsgId);
    s.inflight.settle('private_message', (e) => e.clientMsgId === m.clientMsgId);
  }
  return dm.log.add(m);
}

/** The user closed the "history reloaded" notice. */
export function dismissReloaded(conv) {
  conv.reloaded = false;
}

/** Older messages were added on top: the view should keep its place once (read and cleared). */
export function takeAnchor(conv) {
  const anchor = conv.anchorOlder;
  conv.anchorOlder = false;
  return anchor;
}

/** The session works: the name is confirmed on this connection. */
export function markReady(s) {
  s.ready = true;
}

/** Counts `m` as unread when it is someone else's and its conversation is not shown. */
export function countUnread(s, conv, authorId) {
  if (!isOwn(s, authorId) && !isActive(s, conv)) conv.unread++;
}

// ---------------------------------------------------------------------------------
// Optimistic messages

/** A message the user wrote, shown at once and sent when the conversation can take it. */
export function queueMessage(conv, clientMsgId, content, now) {
  const p = { clientMsgId, content, status: 'queued', createdAt: new Date(now) };
  conv.pending.push(p);
  return p;
}

export function resolvePending(conv, clientMsgId) {
  const i = conv.pending.findIndex((p) => p.clientMsgId === clientMsgId);
  if (i >= 0) conv.pending.splice(i, 1);
}

/**
 * The server refused or could not store the message: it stays, `failed`, with a retry
 * (same clientMsgId) and a discard. `uncertain`: it may have been stored after all
 * (`store_timeout`); a later echo or history with its clientMsgId resolves it.
 * False when no such pending message exists.
 */
export function failPending(conv, clientMsgId, { message, retryAfterMs, uncertain = false }, now) {
  const p = conv?.pending.find((x) => x.clientMsgId === clientMsgId);
  if (!p) return false;
  p.status = 'failed';
  p.error = message;
  p.uncertain = uncertain;
  p.retryAt = typeof retryAfterMs === 'number' ? now + retryAfterMs : 0;
  p.retryAfterMs = retryAfterMs;
  return true;
}

/** Retry: the message goes back to the queue under the same clientMsgId. */
export function requeuePending(conv, clientMsgId) {
  const p = conv.pending.find((x) => x.clientMsgId === clientMsgId);
  if (!p) return false;
  p.status = 'queued';
  p.error = null;
  p.uncertain = false;
  return true;
}

// ---------------------------------------------------------------------------------
// Typing of others

/** Marks `userId` typing in `room`; returns the token its expiry must present. */
export function setTyping(s, room, userId, username) {
  const token = ++s.typingTokens;
  room.typing.set(userId, { username, token });
  return token;
}

export function clearTyping(room, userId) {
  room.typing.delete(userId);
}

/** The expiry of typing state `token`: a newer state (a refresh) is left alone. */
export function expireTyping(s, roomName, userId, token) {
  const room = s.rooms.get(roomName);
  if (room && room.typing.get(userId)?.token === token) room.typing.delete(userId);
}
