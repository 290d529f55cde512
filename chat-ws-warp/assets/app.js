// The chat UI: state, frame handlers and rendering. The connection, backoff and resume
// helpers live in protocol.js. Every user-provided string reaches the page through
// textContent or attribute values, never through HTML parsing.

import {
  CLOSE_REASONS, Connection, Inflight, MessageLog,
  joinCommand, newClientMsgId, trimContent, typingText, wsUrl,
} from './protocol.js';

const TYPING_REFRESH_MS = 3000; // re-send typing_start at most this often while typing
const TYPING_IDLE_MS = 2000; // typing_stop after this long without a keystroke
const TYPING_EXPIRY_MS = 6000; // forget someone's typing state without a refresh
const PAGE = 50;
const NAME_RETRY_MS = 3000; // while a previous connection still holds our name
const NAME_RETRIES = 25;
const STORE_TIMEOUT_RESENDS = 3; // automatic resends after `store_timeout` (same clientMsgId)
const STORE_TIMEOUT_RESEND_MS = 1000; // pause before the n-th resend: n × this

const $ = (id) => document.getElementById(id);

/** Builds an element; `text` sets textContent, other keys are attributes. */
function h(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v == null || v === false) continue;
    if (k === 'text') e.textContent = v;
    else if (k === 'class') e.className = v;
    else if (k === 'onclick') e.addEventListener('click', v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c != null) e.append(c);
  return e;
}

// ---------------------------------------------------------------------------------
// State

const S = {
  myId: null, // this connection's clientId
  myIds: new Set(), // every id this tab has had (anonymous users get a new one per connection)
  username: null, // last confirmed name; kept across reconnects
  wantName: null, // the name to (re)send with set_username
  ready: false, // username_set received on the current connection
  auth: new URLSearchParams(location.search).has('token'),
  nameRetries: 0,
  rooms: new Map(), // name → room; insertion order is the sidebar order
  dms: new Map(), // other user's id → conversation
  active: null, // {kind: 'room' | 'dm', key}
  inflight: new Inflight(),
  banner: null,
  connState: 'connecting',
  closeInfo: '',
  reconnects: 0,
};

function newRoom(name) {
  return {
    kind: 'room', name, log: new MessageLog(), pending: [], els: new Map(),
    epoch: null, lastSeq: 0, hasMore: false, unread: 0,
    members: new Map(), typing: new Map(),
    status: 'joining', // joining | joined | disconnected | error
    resuming: false, awaitingHistory: false, reloaded: false, loadingOlder: false,
    error: null, anchorOlder: false,
  };
}

function newDm(userId, username) {
  return {
    kind: 'dm', userId, username, log: new MessageLog(), pending: [], els: new Map(),
    hasMore: false, unread: 0, loaded: false, loadingOlder: false, anchorOlder: false,
  };
}

function convKey(conv) {
  return conv.kind === 'room' ? `room:${conv.name}` : `dm:${conv.userId}`;
}

function activeConv() {
  if (!S.active) return null;
  return (S.active.kind === 'room' ? S.rooms : S.dms).get(S.active.key) ?? null;
}

function isActive(conv) {
  return activeConv() === conv;
}

function isOwn(userId) {
  return S.myIds.has(userId);
}

// ---------------------------------------------------------------------------------
// Connection

const conn = new Connection(wsUrl(), {
  onFrame: (f) => {
    const handler = HANDLERS[f.type];
    if (handler) handler(f);
    scheduleRender();
  },
  onOpen: () => scheduleRender(),
  onClose: ({ code, fatal }) => {
    onDisconnect();
    S.closeInfo = CLOSE_REASONS.get(code) ?? '';
    if (fatal) showBanner(S.closeInfo);
    scheduleRender();
  },
  onState: (state) => {
    S.connState = state;
    if (state === 'connecting' && conn.opens > 0) S.reconnects++;
    scheduleRender();
  },
});

/** Sends a command; `entry` marks it as awaiting a reply (for error matching). */
function send(frame, entry) {
  if (!conn.send(frame)) return false;
  if (entry) S.inflight.push({ type: frame.type, ...entry });
  return true;
}

function onDisconnect() {
  S.ready = false;
  S.inflight.clear();
  clearTimeout(S.nameTimer);
  stopTyping(false);
  for (const room of S.rooms.values()) {
    if (room.status !== 'error') room.status = 'disconnected';
    room.awaitingHistory = false;
    room.resuming = false;
    room.loadingOlder = false;
    for (const t of room.typing.values()) clearTimeout(t.timer);
    room.typing.clear();
    for (const p of room.pending) if (p.status === 'sending') p.status = 'queued';
  }
  for (const dm of S.dms.values()) {
    dm.loadingOlder = false;
    for (const p of dm.pending) if (p.status === 'sending') p.status = 'queued';
  }
}

function sendUsername(name) {
  S.wantName = name;
  send({ type: 'set_username', username: name }, {});
}

function sendJoin(room, user) {
  const existing = S.rooms.get(room);
  const cursor = existing && existing.epoch != null ? { epoch: existing.epoch, lastSeq: existing.lastSeq } : null;
  const frame = joinCommand(room, cursor);
  if (existing) existing.status = 'joining';
  return send(frame, { room, user, resume: cursor !== null });
}

/** After username_set: rejoin (resume) every room, resend queued DMs, refresh the open DM. */
function resumeAll() {
  for (const room of S.rooms.values()) sendJoin(room.name, false);
  for (const dm of S.dms.values()) flushPending(dm);
  // DMs have no resume cursor: refetch the open conversation's latest page (merged by id).
  const conv = activeConv();
  if (conv?.kind === 'dm') {
    send({ type: 'dm_history', userId: conv.userId, limit: PAGE }, { userId: conv.userId, quiet: conv.loaded });
  }
}

/** Sends the conversation's queued optimistic messages (same clientMsgId as before). */
function flushPending(conv) {
  if (!S.ready) return;
  if (conv.kind === 'room' && (conv.status !== 'joined' || conv.awaitingHistory)) return;
  for (const p of conv.pending) {
    if (p.status !== 'queued') continue;
    const ok = conv.kind === 'room'
      ? send({ type: 'chat_message', room: conv.name, content: p.content, clientMsgId: p.clientMsgId },
        { room: conv.name, clientMsgId: p.clientMsgId })
      : send({ type: 'private_message', targetId: conv.userId, content: p.content, clientMsgId: p.clientMsgId },
        { userId: conv.userId, clientMsgId: p.clientMsgId });
    if (ok) p.status = 'sending';
  }
}

// ---------------------------------------------------------------------------------
// Server frames

/** Adds a confirmed room message; resolves the optimistic copy it confirms. */
let restarts = 0;

/**
 * The room's history starts again (seq from 1): with `keep` (a `stream_reset`) what is
 * shown stays above a "History restarted" separator; without (a reload) it goes.
 */
function restartRoomLog(room, keep) {
  if (keep && room.log.items.length) {
    room.log.restart({ id: `restart-${++restarts}`, separator: true });
  } else {
    room.log.reset([]);
    room.els.clear();
  }
  room.lastSeq = 0;
}

function addRoomMessage(room, m) {
  if (m.clientMsgId && isOwn(m.userId)) {
    resolvePending(room, m.clientMsgId);
    S.inflight.settle('chat_message', (e) => e.clientMsgId === m.clientMsgId);
  }
  const added = room.log.add(m);
  if (added && typeof m.seq === 'number' && m.seq > room.lastSeq) room.lastSeq = m.seq;
  return added;
}

function resolvePending(conv, clientMsgId) {
  const i = conv.pending.findIndex((p) => p.clientMsgId === clientMsgId);
  if (i >= 0) conv.pending.splice(i, 1);
}

function addDmMessage(dm, m) {
  if (m.clientMsgId && isOwn(m.fromId)) {
    resolvePending(dm, m.clientMsgId);
    S.inflight.settle('private_message', (e) => e.clientMsgId === m.clientMsgId);
  }
  return dm.log.add(m);
}

function dmFor(userId, username) {
  let dm = S.dms.get(userId);
  if (!dm) {
    dm = newDm(userId, username);
    S.dms.set(userId, dm);
  } else if (username) {
    dm.username = username;
  }
  return dm;
}

function clearTyping(room, userId) {
  const t = room.typing.get(userId);
  if (t) clearTimeout(t.timer);
  room.typing.delete(userId);
}

const HANDLERS = {
  connection(f) {
    S.myId = f.clientId;
    S.myIds.add(f.clientId);
    S.inflight.clear();
    S.ready = false;
    S.closeInfo = '';
    if (S.wantName && !S.auth) sendUsername(S.wantName);
  },

  username_set(f) {
    S.inflight.settle('set_username');
    S.username = f.username;
    S.wantName = f.username;
    S.nameRetries = 0;
    $('username-error').hidden = true;
    if (S.ready) return; // a rename, or a repeated name: nothing to resume
    S.ready = true;
    conn.markHealthy();
    const first = $('app').hidden;
    $('login').hidden = true;
    $('app').hidden = false;
    if (S.banner?.kind === 'name') hideBanner();
    resumeAll();
    if (first) $('room-input').focus();
  },

  room_joined(f) {
    // The reply to the join of this room (several joins may be in flight).
    const entry = S.inflight.settle('join_room', (e) => e.room === f.room) ?? S.inflight.settle('join_room');
    let room = S.rooms.get(f.room);
    if (!room && !entry?.user) {
      // A rejoin of a room the user left meanwhile.
      send({ type: 'leave_room', room: f.room }, { room: f.room });
      return;
    }
    if (!room) {
      room = newRoom(f.room);
      S.rooms.set(f.room, room);
    }
    room.status = 'joined';
    room.error = null;
    room.resuming = Boolean(entry?.resume);
    room.awaitingHistory = true;
    if (entry?.user) {
      $('room-input').value = '';
      $('join-error').hidden = true;
      activate({ kind: 'room', key: room.name }, true);
    }
  },

  message_history(f) {
    const room = S.rooms.get(f.room);
    if (!room) return;
    const messages = Array.isArray(f.messages) ? f.messages : [];
    if (f.continued === true) {
      // One of several frames of a large resume replay (PROTOCOL.md): add its messages
      // and keep waiting for the last frame, which completes the join as below.
      for (const m of messages) {
        if (addRoomMessage(room, m) && !isOwn(m.userId) && !isActive(room)) room.unread++;
      }
      return;
    }
    if (room.awaitingHistory || 'recovered' in f) {
      // The join reply.
      room.awaitingHistory = false;
      const resumed = room.resuming;
      room.resuming = false;
      if (resumed && f.recovered === true) {
        for (const m of messages) {
          if (addRoomMessage(room, m) && !isOwn(m.userId) && !isActive(room)) room.unread++;
        }
      } else {
        restartRoomLog(room, false);
        for (const m of messages) addRoomMessage(room, m);
        room.hasMore = Boolean(f.hasMore);
        if (resumed) room.reloaded = true;
      }
      if (f.epoch != null) room.epoch = f.epoch;
      if (typeof f.lastSeq === 'number') room.lastSeq = Math.max(room.lastSeq, f.lastSeq);
      // Optimistic messages the server stored before the outage are in this history;
      // the others are sent again with their clientMsgId (the server dedupes).
      for (const p of [...room.pending]) {
        if (room.log.findClientMsgId(p.clientMsgId, S.myIds)) resolvePending(room, p.clientMsgId);
      }
      flushPending(room);
    } else {
      // A `history` page (no `recovered`): older messages go on top.
      S.inflight.settle('history', (e) => e.room === f.room);
      for (const m of messages) addRoomMessage(room, m);
      room.hasMore = Boolean(f.hasMore);
      room.loadingOlder = false;
      room.anchorOlder = true;
    }
  },

  stream_reset(f) {
    // The server's store forgot this room's idle history and started it again under a
    // new epoch: seq counts from 1 again. What is shown stays, above a separator.
    const room = S.rooms.get(f.room);
    if (!room) return;
    restartRoomLog(room, true);
    room.hasMore = false;
    if (f.epoch != null) room.epoch = f.epoch;
    room.reloaded = true;
  },

  room_users(f) {
    const room = S.rooms.get(f.room);
    if (!room || !Array.isArray(f.users)) return;
    room.members = new Map(f.users.map((u) => [u.id, u.username]));
  },

  user_joined(f) {
    const room = S.rooms.get(f.room);
    if (room) room.members.set(f.userId, f.username);
  },

  user_left(f) {
    const room = S.rooms.get(f.room);
    if (!room) return;
    room.members.delete(f.userId);
    clearTyping(room, f.userId);
  },

  room_left(f) {
    S.inflight.settle('leave_room');
    removeRoom(f.room);
  },

  message_received(f) {
    const room = S.rooms.get(f.room);
    if (!room) return;
    clearTyping(room, f.userId);
    if (addRoomMessage(room, f) && !isOwn(f.userId) && !isActive(room)) room.unread++;
  },

  private_message(f) {
    onDm(f);
  },

  private_message_sent(f) {
    onDm(f);
  },

  dm_history(f) {
    const entry = S.inflight.settle('dm_history', (e) => e.userId === f.userId);
    const dm = S.dms.get(f.userId);
    if (!dm) return;
    const older = entry?.before != null;
    for (const m of Array.isArray(f.messages) ? f.messages : []) addDmMessage(dm, m);
    if (older || !dm.loaded) dm.hasMore = Boolean(f.hasMore);
    dm.loaded = true;
    dm.loadingOlder = false;
    if (older) dm.anchorOlder = true;
  },

  typing_indicator(f) {
    const room = S.rooms.get(f.room);
    if (!room || isOwn(f.userId)) return;
    clearTyping(room, f.userId);
    if (f.isTyping) {
      const timer = setTimeout(() => {
        room.typing.delete(f.userId);
        scheduleRender();
      }, TYPING_EXPIRY_MS);
      room.typing.set(f.userId, { username: f.username, timer });
    }
  },

  error(f) {
    const message = typeof f.message === 'string' && f.message ? f.message : 'Something went wrong.';
    const entry = S.inflight.forError(f.code);
    switch (entry?.type) {
      case 'set_username':
        return onUsernameError(f, message);
      case 'join_room':
        if (entry.user) return showFieldError('join-error', message);
        return onRejoinError(entry.room, message);
      case 'chat_message':
        return failPending(S.rooms.get(entry.room), entry.clientMsgId, f, message);
      case 'private_message':
        return failPending(S.dms.get(entry.userId), entry.clientMsgId, f, message);
      case 'leave_room':
        removeRoom(entry.room); // not in it on the server: drop it here too
        return f.code === 'not_in_room' ? undefined : showBanner(message);
      case 'history': {
        const room = S.rooms.get(entry.room);
        if (room) room.loadingOlder = false;
        return showBanner(`Could not load older messages: ${message}`);
      }
      case 'dm_history': {
        const dm = S.dms.get(entry.userId);
        if (dm) dm.loadingOlder = false;
        if (entry.quiet) return undefined;
        return showBanner(`Could not load the conversation: ${message}`);
      }
      default:
        return showBanner(message);
    }
  },
};

function onDm(f) {
  const other = isOwn(f.fromId) ? f.toId : f.fromId;
  const otherName = isOwn(f.fromId) ? f.toUsername : f.fromUsername;
  const dm = dmFor(other, otherName);
  if (addDmMessage(dm, f) && !isOwn(f.fromId) && !isActive(dm)) dm.unread++;
}

function onUsernameError(f, message) {
  if (f.code === 'username_locked' && S.ready) return; // the name comes from a token
  if (f.code === 'username_taken' && S.username && S.nameRetries < NAME_RETRIES) {
    // Reconnected before the server noticed the old connection was gone.
    S.nameRetries++;
    showBanner('Waiting for the server to release your username…', 'name');
    S.nameTimer = setTimeout(() => conn.isOpen && !S.ready && sendUsername(S.wantName), NAME_RETRY_MS);
    return;
  }
  $('login').hidden = false;
  $('app').hidden = true;
  showFieldError('username-error', message);
  $('username-input').focus();
}

function onRejoinError(name, message) {
  const room = S.rooms.get(name);
  if (!room) return;
  room.status = 'error';
  room.error = `Could not rejoin: ${message}`;
}

function failPending(conv, clientMsgId, f, message) {
  const p = conv?.pending.find((x) => x.clientMsgId === clientMsgId);
  if (!p) return showBanner(message);
  if (f.code === 'store_timeout' && (p.timeouts = (p.timeouts ?? 0) + 1) <= STORE_TIMEOUT_RESENDS) {
    // "May or may not be stored": resending with the same clientMsgId is safe (the
    // server answers with the stored original if the first attempt landed), so the
    // message stays pending and goes out again after a growing pause.
    p.status = 'queued';
    p.error = null;
    setTimeout(() => {
      flushPending(conv);
      scheduleRender();
    }, STORE_TIMEOUT_RESEND_MS * p.timeouts);
    return undefined;
  }
  p.status = 'failed';
  p.error = message;
  p.retryAt = typeof f.retryAfterMs === 'number' ? Date.now() + f.retryAfterMs : 0;
  p.retryAfterMs = f.retryAfterMs;
  return undefined;
}

function removeRoom(name) {
  const room = S.rooms.get(name);
  if (!room) return;
  for (const t of room.typing.values()) clearTimeout(t.timer);
  S.rooms.delete(name);
  if (S.active?.kind === 'room' && S.active.key === name) {
    const next = S.rooms.keys().next();
    S.active = next.done ? null : { kind: 'room', key: next.value };
    const conv = activeConv();
    if (conv) conv.unread = 0;
  }
}

// ---------------------------------------------------------------------------------
// User actions

function showFieldError(id, message) {
  const e = $(id);
  e.textContent = message;
  e.hidden = false;
}

function showBanner(text, kind = 'error') {
  S.banner = { text, kind };
  scheduleRender();
}

function hideBanner() {
  S.banner = null;
  scheduleRender();
}

function activate(target, focusComposer = false) {
  const prev = activeConv();
  S.active = target;
  const conv = activeConv();
  if (prev !== conv) stopTyping(true);
  if (conv) conv.unread = 0;
  if (conv?.kind === 'dm' && !conv.loaded && S.ready) {
    send({ type: 'dm_history', userId: conv.userId, limit: PAGE }, { userId: conv.userId });
  }
  closeDrawers();
  scheduleRender();
  if (focusComposer) $('message-input').focus();
}

function openDm(userId, username) {
  dmFor(userId, username);
  activate({ kind: 'dm', key: userId }, true);
}

$('login-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const name = $('username-input').value.trim();
  if ([...name].length < 2) {
    showFieldError('username-error', 'Username must be at least 2 characters');
    return;
  }
  $('username-error').hidden = true;
  S.wantName = name;
  S.nameRetries = NAME_RETRIES; // the user chose this name: no silent retries
  if (!S.myId || !conn.isOpen) {
    showFieldError('username-error', 'Not connected yet; your name will be sent when the connection is up.');
    return;
  }
  sendUsername(name);
});

$('join-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const raw = $('room-input').value;
  const name = raw.trim();
  if (!name) {
    showFieldError('join-error', 'Room name required');
    return;
  }
  const known = S.rooms.get(name.toLowerCase().slice(0, 30));
  if (known) {
    $('room-input').value = '';
    $('join-error').hidden = true;
    activate({ kind: 'room', key: known.name }, true);
    return;
  }
  if (!S.ready || !sendJoin(name, true)) {
    showFieldError('join-error', 'Not connected. Try again when the connection is back.');
    return;
  }
  $('join-error').hidden = true;
});

$('leave-room').addEventListener('click', () => {
  const room = activeConv();
  if (room?.kind !== 'room') return;
  stopTyping(true);
  if (S.ready && room.status === 'joined') {
    send({ type: 'leave_room', room: room.name }, { room: room.name });
  } else {
    removeRoom(room.name); // not joined on this connection: nothing to tell the server
    scheduleRender();
  }
});

$('rejoin').addEventListener('click', () => {
  const room = activeConv();
  if (room?.kind === 'room' && S.ready) sendJoin(room.name, false);
  scheduleRender();
});

function sendMessage() {
  const conv = activeConv();
  const input = $('message-input');
  const content = trimContent(input.value);
  if (!conv || !content) return;
  stopTyping(true);
  conv.pending.push({ clientMsgId: newClientMsgId(), content, status: 'queued', createdAt: new Date() });
  flushPending(conv);
  input.value = '';
  autosize();
  scheduleRender({ stick: true });
}

$('composer').addEventListener('submit', (ev) => {
  ev.preventDefault();
  sendMessage();
});

$('message-input').addEventListener('keydown', (ev) => {
  if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) {
    ev.preventDefault();
    sendMessage();
  }
});

$('message-input').addEventListener('input', () => {
  autosize();
  onTyping();
});

function autosize() {
  const t = $('message-input');
  t.style.height = 'auto';
  t.style.height = `${Math.min(t.scrollHeight, 160)}px`;
}

$('messages').addEventListener('click', (ev) => {
  const button = ev.target.closest('button[data-action]');
  const li = button?.closest('li[data-client-msg-id]');
  const conv = activeConv();
  if (!button || !li || !conv) return;
  const cid = li.dataset.clientMsgId;
  const p = conv.pending.find((x) => x.clientMsgId === cid);
  if (!p) return;
  if (button.dataset.action === 'discard') {
    resolvePending(conv, cid);
  } else {
    p.status = 'queued'; // retried with the same clientMsgId
    p.error = null;
    flushPending(conv);
  }
  scheduleRender();
});

$('load-older').addEventListener('click', () => {
  const conv = activeConv();
  if (!conv || conv.loadingOlder || !S.ready) return;
  const before = conv.log.oldestSeq;
  if (before == null) return;
  const ok = conv.kind === 'room'
    ? send({ type: 'history', room: conv.name, before, limit: PAGE }, { room: conv.name })
    : send({ type: 'dm_history', userId: conv.userId, before, limit: PAGE }, { userId: conv.userId, before });
  if (ok) conv.loadingOlder = true;
  scheduleRender();
});

$('banner-dismiss').addEventListener('click', hideBanner);
$('reloaded-dismiss').addEventListener('click', () => {
  const conv = activeConv();
  if (conv) conv.reloaded = false;
  scheduleRender();
});
$('reconnect-now').addEventListener('click', () => conn.connect());

// Typing: start at most every TYPING_REFRESH_MS while keys are pressed, stop after
// TYPING_IDLE_MS without one, on send and on leaving the room.
const typing = { room: null, lastStart: 0, timer: null };

function onTyping() {
  const conv = activeConv();
  if (conv?.kind !== 'room' || conv.status !== 'joined' || !S.ready) return;
  if (!trimContent($('message-input').value)) {
    stopTyping(true);
    return;
  }
  if (typing.room !== conv.name) stopTyping(true);
  const now = Date.now();
  if (typing.room !== conv.name || now - typing.lastStart >= TYPING_REFRESH_MS) {
    send({ type: 'typing_start', room: conv.name });
    typing.room = conv.name;
    typing.lastStart = now;
  }
  clearTimeout(typing.timer);
  typing.timer = setTimeout(() => stopTyping(true), TYPING_IDLE_MS);
}

function stopTyping(tell) {
  clearTimeout(typing.timer);
  const room = typing.room && S.rooms.get(typing.room);
  if (tell && room && room.status === 'joined' && S.ready) send({ type: 'typing_stop', room: room.name });
  typing.room = null;
}

// Narrow screens: the sidebar and the member list are drawers.
function closeDrawers() {
  $('app').classList.remove('nav-open', 'members-open');
  $('sidebar-toggle').setAttribute('aria-expanded', 'false');
  $('members-toggle').setAttribute('aria-expanded', 'false');
  $('scrim').hidden = true;
}

function toggleDrawer(cls, button, focusSel) {
  const open = !$('app').classList.contains(cls);
  closeDrawers();
  if (!open) return;
  $('app').classList.add(cls);
  button.setAttribute('aria-expanded', 'true');
  $('scrim').hidden = false;
  document.querySelector(focusSel)?.focus();
}

$('sidebar-toggle').addEventListener('click', (ev) => toggleDrawer('nav-open', ev.currentTarget, '#room-input'));
$('members-toggle').addEventListener('click', (ev) => toggleDrawer('members-open', ev.currentTarget, '#member-list button'));
$('scrim').addEventListener('click', closeDrawers);
document.addEventListener('keydown', (ev) => {
  if (ev.key === 'Escape' && $('app').matches('.nav-open, .members-open')) {
    const toggle = $('app').classList.contains('nav-open') ? 'sidebar-toggle' : 'members-toggle';
    closeDrawers();
    $(toggle).focus();
  }
});

// ---------------------------------------------------------------------------------
// Rendering (batched; message elements are cached per conversation)

let renderQueued = false;
let stickNext = false;

function scheduleRender(opts) {
  if (opts?.stick) stickNext = true;
  if (renderQueued) return;
  renderQueued = true;
  const run = () => {
    renderQueued = false;
    render();
  };
  if (document.visibilityState === 'visible') requestAnimationFrame(run);
  else setTimeout(run, 50);
}

/** Keeps `ul`'s children equal to one element per key, reusing existing ones. */
function syncList(ul, keys, make, update) {
  ul.cache ??= new Map();
  const nodes = keys.map((k) => {
    let n = ul.cache.get(k);
    if (!n) {
      n = make(k);
      ul.cache.set(k, n);
    }
    update(n, k);
    return n;
  });
  for (const k of [...ul.cache.keys()]) if (!keys.includes(k)) ul.cache.delete(k);
  placeChildren(ul, nodes);
}

function placeChildren(parent, nodes) {
  nodes.forEach((n, i) => {
    const cur = parent.children[i];
    if (cur !== n) parent.insertBefore(n, cur ?? null);
  });
  while (parent.children.length > nodes.length) parent.lastElementChild.remove();
}

function navItem(testid, dataKey, value, onclick) {
  const label = h('span', { class: 'label' });
  const badge = h('span', { class: 'badge', 'data-testid': 'unread-count', hidden: true });
  const button = h('button', { type: 'button', class: 'nav-button', onclick }, label, badge);
  const li = h('li', { 'data-testid': testid, [dataKey]: value }, button);
  li.parts = { label, badge, button };
  return li;
}

function updateNavItem(li, text, unread, current, extra = '') {
  li.parts.label.textContent = text;
  li.parts.badge.textContent = String(unread);
  li.parts.badge.hidden = unread === 0;
  li.parts.button.setAttribute('aria-label', `${text}${unread ? `, ${unread} unread` : ''}${extra}`);
  if (current) li.parts.button.setAttribute('aria-current', 'page');
  else li.parts.button.removeAttribute('aria-current');
}

function formatTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const time = d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  return d.toDateString() === new Date().toDateString() ? time : `${d.toLocaleDateString()} ${time}`;
}

function messageEl(conv, m) {
  const userId = conv.kind === 'room' ? m.userId : m.fromId;
  const author = conv.kind === 'room' ? m.username : m.fromUsername;
  const d = new Date(m.timestamp);
  return h('li', {
    class: isOwn(userId) ? 'msg own' : 'msg', 'data-testid': 'message',
    'data-id': m.id, 'data-seq': m.seq, 'data-user-id': userId,
  },
  h('div', { class: 'meta' },
    h('span', { class: 'author', 'data-testid': 'message-author', text: author }),
    h('time', {
      'data-testid': 'message-time', datetime: m.timestamp,
      title: Number.isNaN(d.getTime()) ? null : d.toLocaleString(), text: formatTime(m.timestamp),
    })),
  h('div', { class: 'content', 'data-testid': 'message-content', text: m.content }));
}

function pendingEl(p) {
  const sig = `${p.status}|${p.error}|${p.retryAt}`;
  if (p.el && p.sig === sig) return p.el;
  const status = h('div', { class: 'status', 'data-testid': 'message-status' });
  if (p.status === 'failed') {
    const wait = p.retryAfterMs ? ` Retry after ${Math.ceil(p.retryAfterMs / 1000)} s.` : '';
    status.append(h('span', { class: 'failed', text: `Not sent: ${p.error}.${wait}` }), ' ',
      h('button', { type: 'button', class: 'link-button', 'data-action': 'retry', 'data-testid': 'retry-button' }, 'Retry'),
      ' ',
      h('button', { type: 'button', class: 'link-button', 'data-action': 'discard', 'data-testid': 'discard-button' }, 'Discard'));
  } else {
    status.textContent = p.status === 'sending' ? 'Sending…' : 'Waiting for connection…';
  }
  p.sig = sig;
  p.el = h('li', {
    class: `msg own pending ${p.status}`, 'data-testid': 'message', 'data-pending': 'true',
    'data-status': p.status, 'data-client-msg-id': p.clientMsgId,
  },
  h('div', { class: 'meta' },
    h('span', { class: 'author', 'data-testid': 'message-author', text: S.username ?? '' }),
    h('time', { text: formatTime(p.createdAt.toISOString()) })),
  h('div', { class: 'content', 'data-testid': 'message-content', text: p.content }),
  status);
  return p.el;
}

function renderMessages(conv) {
  const list = $('messages');
  const scroller = $('scroller');
  const key = conv ? convKey(conv) : '';
  let stick = stickNext;
  stickNext = false;
  if (list.dataset.conv !== key) {
    list.replaceChildren();
    list.dataset.conv = key;
    stick = true;
  }
  const atBottom = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 60;
  const fromBottom = scroller.scrollHeight - scroller.scrollTop;
  if (!conv) return;
  const nodes = conv.log.items.map((m) => {
    let n = conv.els.get(m.id);
    if (!n) {
      n = m.separator
        ? h('li', { class: 'separator', role: 'separator', 'data-testid': 'history-restarted', text: 'History restarted' })
        : messageEl(conv, m);
      conv.els.set(m.id, n);
    }
    return n;
  });
  for (const p of conv.pending) nodes.push(pendingEl(p));
  placeChildren(list, nodes);
  if (conv.anchorOlder) {
    conv.anchorOlder = false;
    scroller.scrollTop = scroller.scrollHeight - fromBottom;
  } else if (stick || atBottom) {
    scroller.scrollTop = scroller.scrollHeight;
  }
}

function renderConnection() {
  const c = $('conn');
  let state = S.connState;
  let text;
  if (state === 'open' && S.wantName && !S.ready) state = 'connecting';
  if (state === 'stopped') state = 'offline';
  switch (state) {
    case 'open': text = 'Online'; break;
    case 'connecting': text = S.reconnects > 0 || S.ready === false && S.username ? 'Reconnecting…' : 'Connecting…'; break;
    case 'reconnecting': text = `Connection lost. ${S.closeInfo} Reconnecting`.replace(/\s+/g, ' '); break;
    default: text = navigator.onLine === false ? 'Offline: waiting for the network' : `Offline. ${S.closeInfo}`;
  }
  c.dataset.state = state;
  if ($('conn-text').textContent !== text) $('conn-text').textContent = text;
  const secs = Math.max(0, Math.ceil((conn.retryAt - Date.now()) / 1000));
  $('conn-countdown').textContent = state === 'reconnecting' ? `in ${secs}s` : '';
  $('reconnect-now').hidden = !(state === 'reconnecting' || (state === 'offline' && S.connState === 'stopped'));
}

function render() {
  renderConnection();
  $('banner').hidden = !S.banner;
  $('banner-text').textContent = S.banner?.text ?? '';
  $('whoami').textContent = S.username ?? '';

  const conv = activeConv();
  const rooms = [...S.rooms.values()];
  syncList($('room-list'), rooms.map((r) => r.name),
    (name) => navItem('room-item', 'data-room', name, () => activate({ kind: 'room', key: name }, true)),
    (li, name) => {
      const r = S.rooms.get(name);
      li.dataset.status = r.status;
      updateNavItem(li, `# ${name}`, r.unread, conv === r, r.status === 'joined' ? '' : `, ${r.status}`);
    });
  $('rooms-empty').hidden = rooms.length > 0;

  const dms = [...S.dms.values()];
  syncList($('dm-list'), dms.map((d) => d.userId),
    (id) => navItem('dm-item', 'data-user-id', id, () => activate({ kind: 'dm', key: id }, true)),
    (li, id) => {
      const d = S.dms.get(id);
      updateNavItem(li, `@ ${d.username}`, d.unread, conv === d);
    });
  $('dms-empty').hidden = dms.length > 0;

  // Pane header, notices, load-older.
  const isRoom = conv?.kind === 'room';
  $('pane-title').textContent = !conv ? 'No room selected' : isRoom ? `# ${conv.name}` : `@ ${conv.username}`;
  $('leave-room').hidden = !isRoom;
  if (isRoom) $('leave-room').setAttribute('aria-label', `Leave room ${conv.name}`);
  $('members-toggle').hidden = !isRoom;
  $('members-toggle').textContent = isRoom ? `Members (${conv.members.size})` : 'Members';
  $('members').hidden = !isRoom;
  $('reloaded').hidden = !(isRoom && conv.reloaded);
  const notice = isRoom && conv.status === 'error' ? conv.error
    : isRoom && conv.status !== 'joined' && S.ready ? 'Rejoining…' : '';
  $('pane-notice').hidden = !notice;
  $('pane-notice-text').textContent = notice;
  $('rejoin').hidden = !(isRoom && conv.status === 'error');
  const older = $('load-older');
  older.hidden = !conv || !conv.hasMore || conv.log.items.length === 0;
  older.disabled = Boolean(conv?.loadingOlder);
  older.textContent = conv?.loadingOlder ? 'Loading…' : 'Load older messages';
  const empty = !conv ? 'Join a room to start chatting.'
    : conv.log.items.length || conv.pending.length || conv.hasMore ? ''
      : isRoom && conv.awaitingHistory ? 'Loading…' : 'No messages yet.';
  $('empty-pane').hidden = !empty;
  $('empty-pane').textContent = empty;
  $('composer').hidden = !conv;
  $('message-input').placeholder = !conv ? '' : isRoom ? `Message #${conv.name}` : `Message @${conv.username}`;
  renderMessages(conv);

  // Members of the active room.
  const members = isRoom ? [...conv.members.entries()] : [];
  members.sort((a, b) => Number(isOwn(b[0])) - Number(isOwn(a[0])) || a[1].localeCompare(b[1]));
  syncList($('member-list'), members.map(([id]) => id),
    (id) => {
      const li = h('li', { 'data-testid': 'member-item', 'data-user-id': id });
      li.parts = {};
      return li;
    },
    (li, id) => {
      const name = conv.members.get(id) ?? '';
      if (li.parts.name === name && li.parts.own === isOwn(id)) return;
      li.parts = { name, own: isOwn(id) };
      li.replaceChildren(isOwn(id)
        ? h('span', { class: 'member self', text: `${name} (you)` })
        : h('button', { type: 'button', class: 'nav-button member', 'aria-label': `Message ${name}`,
          onclick: () => openDm(id, conv.members.get(id) ?? name) }, name));
    });

  // Typing line of the active room.
  const names = isRoom ? [...conv.typing.values()].map((t) => t.username) : [];
  const line = typingText(names);
  if ($('typing').textContent !== line) $('typing').textContent = line;

  const unread = [...S.rooms.values(), ...S.dms.values()].reduce((n, c) => n + c.unread, 0);
  document.title = unread ? `(${unread}) Chat` : 'Chat';
}

// The reconnect countdown and retry-after texts tick once a second.
setInterval(() => {
  if (S.connState === 'reconnecting') renderConnection();
}, 1000);

// Read-only state for tests and debugging.
Object.defineProperty(window, '__chat', {
  value: Object.freeze({
    get myId() { return S.myId; },
    get myIds() { return [...S.myIds]; },
    get username() { return S.username; },
    get ready() { return S.ready; },
    get connection() { return $('conn').dataset.state; },
    get reconnects() { return S.reconnects; },
    get active() { return S.active ? { ...S.active } : null; },
    get rooms() {
      return Object.fromEntries([...S.rooms.values()].map((r) => [r.name, {
        lastSeq: r.lastSeq, epoch: r.epoch, status: r.status, unread: r.unread, hasMore: r.hasMore,
        messages: r.log.items.length, pending: r.pending.length, members: r.members.size,
      }]));
    },
    get dms() {
      return Object.fromEntries([...S.dms.values()].map((d) => [d.userId, {
        username: d.username, unread: d.unread, messages: d.log.items.length, pending: d.pending.length,
      }]));
    },
    /** Test hook: closes the socket as a network failure would (the client reconnects). */
    dropConnection() { conn.drop(true); },
  }),
});

conn.connect();
render();
$('username-input').focus();
