// app.js — the web client's entry point: it wires the modules together and to the page.
//
//   protocol.js   wire rules as pure functions (trimming, names, resume cursor, logs)
//   state.js      the single store and the functions that change it
//   commands.js   what the client sends, with its bookkeeping
//   handlers.js   one function per server event: store + frame → store + effects
//   render.js     the store drawn into the DOM
//   connection.js the WebSocket, reconnecting with backoff
//
// This file owns what is left: the DOM event listeners (the user's actions), timers, the
// effects the handlers ask for, and the batching of renders. It holds no chat rules of
// its own beyond "which store function does this click mean".

import {
  CLOSE_REASONS, limitContent, newClientMsgId, normalizeContent, parseRoom, parseUsername, wsUrl,
} from './protocol.js';
import { Connection } from './connection.js';
import {
  activeConv, chooseUsername, createState, dismissReloaded, dmFor, expireTyping, hideBanner, markDisconnected,
  queueMessage, removeRoom, requeuePending, resolvePending, setCloseInfo, setConnState,
  setFieldError, showBanner,
} from './state.js';
import { flushPending, loadOlder, send, sendJoin, sendUsername } from './commands.js';
import { NAME_RETRIES, handleFrame, showConversation } from './handlers.js';
import { render, renderConnection, stickToBottom } from './render.js';

const TYPING_REFRESH_MS = 3000; // re-send typing_start at most this often while typing
const TYPING_IDLE_MS = 2000; // typing_stop after this long without a keystroke

const $ = (id) => document.getElementById(id);

const S = createState({ auth: new URLSearchParams(location.search).has('token') });

const conn = new Connection(wsUrl(), {
  onFrame: (f) => {
    runEffects(handleFrame(S, f, io));
    scheduleRender();
  },
  onOpen: () => scheduleRender(),
  onClose: ({ code, fatal }) => {
    clearTimeout(nameTimer);
    stopTyping(false);
    for (const t of typingTimers.values()) clearTimeout(t);
    typingTimers.clear();
    markDisconnected(S);
    setCloseInfo(S, CLOSE_REASONS.get(code) ?? '');
    if (fatal) showBanner(S, S.closeInfo);
    scheduleRender();
  },
  onState: (state) => {
    setConnState(S, state, conn.opens > 0);
    scheduleRender();
  },
});

/** The port the commands and handlers send through. */
const io = { send: (frame) => conn.send(frame), now: () => Date.now() };

// ---------------------------------------------------------------------------------
// Effects asked for by the handlers

let nameTimer = null;
const typingTimers = new Map(); // `${room}\n${userId}` → timer of its expiry

function runEffects(effects) {
  for (const e of effects) {
    switch (e.type) {
      case 'focus':
        render(S, env); // the element may be in a part of the page this render shows
        $(e.id)?.focus();
        break;
      case 'clearInput':
        $(e.id).value = '';
        break;
      case 'healthy':
        conn.markHealthy();
        break;
      case 'retryName':
        clearTimeout(nameTimer);
        nameTimer = setTimeout(() => conn.isOpen && !S.ready && sendUsername(S, io, S.wantName), e.ms);
        break;
      case 'expireTyping': {
        const key = `${e.room}\n${e.userId}`;
        clearTimeout(typingTimers.get(key));
        typingTimers.set(key, setTimeout(() => {
          typingTimers.delete(key);
          expireTyping(S, e.room, e.userId, e.token);
          scheduleRender();
        }, e.ms));
        break;
      }
      case 'stopTyping':
        stopTyping(true);
        break;
      case 'closeDrawers':
        closeDrawers();
        break;
      default:
        throw new Error(`unknown effect ${e.type}`);
    }
  }
}

/** Shows a conversation the user picked. */
function open(target) {
  scheduleRender();
  runEffects(showConversation(S, io, target));
}

const env = {
  get retryAt() { return conn.retryAt; },
  openRoom: (name) => open({ kind: 'room', key: name }),
  openDm: (userId) => open({ kind: 'dm', key: userId }),
  messageMember: (userId, username) => {
    dmFor(S, userId, username);
    open({ kind: 'dm', key: userId });
  },
};

// ---------------------------------------------------------------------------------
// User actions

$('login-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const parsed = parseUsername($('username-input').value);
  if (parsed.error) {
    setFieldError(S, 'usernameError', parsed.error);
  } else {
    chooseUsername(S, parsed.name, NAME_RETRIES); // the user chose this name: no silent retries
    if (!S.myId || !conn.isOpen) {
      setFieldError(S, 'usernameError', 'Not connected yet; your name will be sent when the connection is up.');
    } else {
      sendUsername(S, io, parsed.name);
    }
  }
  scheduleRender();
});

$('join-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const parsed = parseRoom($('room-input').value);
  const known = parsed.name && S.rooms.get(parsed.name);
  if (parsed.error) {
    setFieldError(S, 'joinError', parsed.error);
  } else if (known) {
    $('room-input').value = '';
    setFieldError(S, 'joinError', null);
    open({ kind: 'room', key: known.name });
  } else if (!S.ready || !sendJoin(S, io, parsed.name, true)) {
    setFieldError(S, 'joinError', 'Not connected. Try again when the connection is back.');
  } else {
    setFieldError(S, 'joinError', null);
  }
  scheduleRender();
});

$('leave-room').addEventListener('click', () => {
  const room = activeConv(S);
  if (room?.kind !== 'room') return;
  stopTyping(true);
  if (S.ready && room.status === 'joined') {
    send(S, io, { type: 'leave_room', room: room.name }, { room: room.name });
  } else {
    removeRoom(S, room.name); // not joined on this connection: nothing to tell the server
  }
  scheduleRender();
});

$('rejoin').addEventListener('click', () => {
  const room = activeConv(S);
  if (room?.kind === 'room' && S.ready) sendJoin(S, io, room.name, false);
  scheduleRender();
});

function sendMessage() {
  const conv = activeConv(S);
  const input = $('message-input');
  const content = normalizeContent(input.value);
  if (!conv || !content) return;
  stopTyping(true);
  queueMessage(conv, newClientMsgId(), content, Date.now());
  flushPending(S, io, conv);
  input.value = '';
  autosize();
  stickToBottom();
  scheduleRender();
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
  const input = $('message-input');
  const limited = limitContent(input.value);
  if (limited !== input.value) input.value = limited;
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
  const conv = activeConv(S);
  if (!button || !li || !conv) return;
  const cid = li.dataset.clientMsgId;
  if (button.dataset.action === 'discard') {
    resolvePending(conv, cid);
  } else if (requeuePending(conv, cid)) {
    flushPending(S, io, conv); // retried with the same clientMsgId
  }
  scheduleRender();
});

$('load-older').addEventListener('click', () => {
  loadOlder(S, io);
  scheduleRender();
});

$('banner-dismiss').addEventListener('click', () => {
  hideBanner(S);
  scheduleRender();
});
$('reloaded-dismiss').addEventListener('click', () => {
  const conv = activeConv(S);
  if (conv) dismissReloaded(conv);
  scheduleRender();
});
$('reconnect-now').addEventListener('click', () => conn.connect());

// Our own typing state: start at most every TYPING_REFRESH_MS while keys are pressed,
// stop after TYPING_IDLE_MS without one, on send and on leaving the room.
const typing = { room: null, lastStart: 0, timer: null };

function onTyping() {
  const conv = activeConv(S);
  if (conv?.kind !== 'room' || conv.status !== 'joined' || !S.ready) return;
  if (!normalizeContent($('message-input').value)) {
    stopTyping(true);
    return;
  }
  if (typing.room !== conv.name) stopTyping(true);
  const now = Date.now();
  if (typing.room !== conv.name || now - typing.lastStart >= TYPING_REFRESH_MS) {
    send(S, io, { type: 'typing_start', room: conv.name });
    typing.room = conv.name;
    typing.lastStart = now;
  }
  clearTimeout(typing.timer);
  typing.timer = setTimeout(() => stopTyping(true), TYPING_IDLE_MS);
}

function stopTyping(tell) {
  clearTimeout(typing.timer);
  const room = typing.room && S.rooms.get(typing.room);
  if (tell && room && room.status === 'joined' && S.ready) send(S, io, { type: 'typing_stop', room: room.name });
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
  const opened = !$('app').classList.contains(cls);
  closeDrawers();
  if (!opened) return;
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
// Rendering, batched to one per animation frame

let renderQueued = false;

function scheduleRender() {
  if (renderQueued) return;
  renderQueued = true;
  const run = () => {
    renderQueued = false;
    render(S, env);
  };
  if (document.visibilityState === 'visible') requestAnimationFrame(run);
  else setTimeout(run, 50);
}

// The reconnect countdown ticks once a second.
setInterval(() => {
  if (S.connState === 'reconnecting') renderConnection(S, env);
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
render(S, env);
$('username-input').focus();
