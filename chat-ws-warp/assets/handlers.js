// handlers.js — one function per server event type (docs/PROTOCOL.md), keyed by `type`.
//
// A handler takes the store, the frame and the send port (`handle(s, frame, io)`), changes
// the store through state.js, sends follow-up commands through commands.js, and returns
// the effects it wants from the page as plain data:
//
//   {type: 'focus', id}             focus an element (after the next render)
//   {type: 'clearInput', id}        empty an input
//   {type: 'healthy'}               the session works: reset the reconnect backoff
//   {type: 'retryName', ms}         send set_username again after `ms` if still not ready
//   {type: 'expireTyping', room, userId, token, ms}  forget a typing state after `ms`
//   {type: 'stopTyping'}            the shown conversation changed: stop our typing state
//   {type: 'closeDrawers'}          close the sidebar / member drawers (narrow screens)
//
// Why: the rules of the client (what a resume replay does, which pending message an
// error fails — the one its `ref` names —, when a room counts as rejoined) are then testable in Node without a page
// or a socket (tests/handlers.test.mjs), and app.js only wires frames to handlers and
// effects to the DOM.

import { INDETERMINATE_CODES } from './protocol.js';
import { activate, flushPending, resumeAll, send, sendUsername } from './commands.js';
import {
  activeConv, addDmMessage, addRoom, addRoomMessage, clearTyping, confirmUsername, countUnread,
  dmFor, failPending, isOwn, markReady, removeRoom, restartRoomLog, setConnected,
  setFieldError, setScreen, setTyping, showBanner, hideBanner,
} from './state.js';

/** Forget someone's typing state without a refresh after this long. */
export const TYPING_EXPIRY_MS = 6000;
/** While a previous connection still holds our name: retry this often, this many times. */
export const NAME_RETRY_MS = 3000;
export const NAME_RETRIES = 25;

const NONE = Object.freeze([]);

/** Handles one server frame; unknown types change nothing. Returns the effects. */
export function handleFrame(s, frame, io) {
  const handler = Object.hasOwn(HANDLERS, frame.type) ? HANDLERS[frame.type] : null;
  return (handler && handler(s, frame, io)) || NONE;
}

/**
 * Shows a conversation the user picked (or joined): effects to close the drawers of
 * narrow screens, stop our typing state when the conversation changed, and focus the
 * composer.
 */
export function showConversation(s, io, target) {
  const prev = activate(s, io, target);
  const effects = [{ type: 'closeDrawers' }, { type: 'focus', id: 'message-input' }];
  if (prev !== activeConv(s)) effects.unshift({ type: 'stopTyping' });
  return effects;
}

export const HANDLERS = {
  connection(s, f, io) {
    setConnected(s, f.clientId);
    if (s.wantName && !s.auth) sendUsername(s, io, s.wantName);
  },

  username_set(s, f, io) {
    s.inflight.settle('set_username');
    confirmUsername(s, f.username);
    if (s.ready) return NONE; // a rename, or a repeated name: nothing to resume
    markReady(s);
    const first = s.view.screen !== 'app';
    setScreen(s, 'app');
    if (s.banner?.kind === 'name') hideBanner(s);
    resumeAll(s, io);
    const effects = [{ type: 'healthy' }];
    if (first) effects.push({ type: 'focus', id: 'room-input' });
    return effects;
  },

  room_joined(s, f, io) {
    // The reply to the join of this room (several joins may be in flight).
    const entry = s.inflight.settle('join_room', (e) => e.room === f.room) ?? s.inflight.settle('join_room');
    if (!s.rooms.has(f.room) && !entry?.user) {
      // A rejoin of a room the user left meanwhile.
      send(s, io, { type: 'leave_room', room: f.room }, { room: f.room });
      return NONE;
    }
    const room = addRoom(s, f.room);
    room.status = 'joined';
    room.error = null;
    room.resuming = Boolean(entry?.resume);
    room.awaitingHistory = true;
    if (!entry?.user) return NONE;
    setFieldError(s, 'joinError', null);
    return [{ type: 'clearInput', id: 'room-input' }, ...showConversation(s, io, { kind: 'room', key: room.name })];
  },

  message_history(s, f, io) {
    const room = s.rooms.get(f.room);
    if (!room) return;
    const messages = Array.isArray(f.messages) ? f.messages : [];
    const addCounting = () => {
      for (const m of messages) if (addRoomMessage(s, room, m)) countUnread(s, room, m.userId);
    };
    if (f.continued === true) {
      // One of several frames of a large resume replay (PROTOCOL.md): add its messages
      // and keep waiting for the last frame, which completes the join as below.
      addCounting();
      return;
    }
    if (room.awaitingHistory || 'recovered' in f) {
      // The join reply.
      room.awaitingHistory = false;
      const resumed = room.resuming;
      room.resuming = false;
      if (resumed && f.recovered === true) {
        addCounting();
      } else {
        restartRoomLog(s, room, false);
        for (const m of messages) addRoomMessage(s, room, m);
        room.hasMore = Boolean(f.hasMore);
        if (resumed) room.reloaded = true;
      }
      if (f.epoch != null) room.epoch = f.epoch;
      if (typeof f.lastSeq === 'number') room.lastSeq = Math.max(room.lastSeq, f.lastSeq);
      // Optimistic messages the server stored before the outage (or after a
      // store_timeout) were resolved as this history added them (`addRoomMessage`);
      // the others are sent again with their clientMsgId (the server dedupes).
      flushPending(s, io, room);
    } else {
      // A `history` page (no `recovered`): older messages go on top.
      s.inflight.settle('history', (e) => e.room === f.room);
      for (const m of messages) addRoomMessage(s, room, m);
      room.hasMore = Boolean(f.hasMore);
      room.loadingOlder = false;
      room.anchorOlder = true;
    }
  },

  stream_reset(s, f) {
    // The server's store forgot this room's idle history and started it again under a
    // new epoch: seq counts from 1 again. What is shown stays, above a separator.
    const room = s.rooms.get(f.room);
    if (!room) return;
    restartRoomLog(s, room, true);
    room.hasMore = false;
    if (f.epoch != null) room.epoch = f.epoch;
    room.reloaded = true;
  },

  room_users(s, f) {
    const room = s.rooms.get(f.room);
    if (!room || !Array.isArray(f.users)) return;
    room.members = new Map(f.users.map((u) => [u.id, u.username]));
  },

  user_joined(s, f) {
    s.rooms.get(f.room)?.members.set(f.userId, f.username);
  },

  user_left(s, f) {
    const room = s.rooms.get(f.room);
    if (!room) return;
    room.members.delete(f.userId);
    clearTyping(room, f.userId);
  },

  room_left(s, f) {
    s.inflight.settle('leave_room');
    removeRoom(s, f.room);
  },

  message_received(s, f) {
    const room = s.rooms.get(f.room);
    if (!room) return;
    clearTyping(room, f.userId);
    if (addRoomMessage(s, room, f)) countUnread(s, room, f.userId);
  },

  private_message: onDm,

  private_message_sent: onDm,

  dm_history(s, f) {
    const entry = s.inflight.settle('dm_history', (e) => e.userId === f.userId);
    const dm = s.dms.get(f.userId);
    if (!dm) return;
    const older = entry?.before != null;
    for (const m of Array.isArray(f.messages) ? f.messages : []) addDmMessage(s, dm, m);
    if (older || !dm.loaded) dm.hasMore = Boolean(f.hasMore);
    dm.loaded = true;
    dm.loadingOlder = false;
    if (older) dm.anchorOlder = true;
  },

  typing_indicator(s, f) {
    const room = s.rooms.get(f.room);
    if (!room || isOwn(s, f.userId)) return NONE;
    clearTyping(room, f.userId);
    if (!f.isTyping) return NONE;
    const token = setTyping(s, room, f.userId, f.username);
    return [{ type: 'expireTyping', room: room.name, userId: f.userId, token, ms: TYPING_EXPIRY_MS }];
  },

  error(s, f, io) {
    const message = typeof f.message === 'string' && f.message ? f.message : 'Something went wrong.';
    // Attributed by the echoed `ref` (or `clientMsgId`); guessed from the code only when
    // the server sent neither.
    const entry = s.inflight.forError(f.code, f);
    switch (entry?.type) {
      case 'set_username':
        return onUsernameError(s, f, message);
      case 'join_room':
        if (entry.user) return setFieldError(s, 'joinError', message);
        return onRejoinError(s, entry.room, message);
      case 'chat_message':
        return onMessageError(s, s.rooms.get(entry.room), entry.clientMsgId, f, message, io);
      case 'private_message':
        return onMessageError(s, s.dms.get(entry.userId), entry.clientMsgId, f, message, io);
      case 'leave_room':
        removeRoom(s, entry.room); // not in it on the server: drop it here too
        return f.code === 'not_in_room' ? undefined : showBanner(s, message);
      case 'history': {
        const room = s.rooms.get(entry.room);
        if (room) room.loadingOlder = false;
        return showBanner(s, `Could not load older messages: ${message}`);
      }
      case 'dm_history': {
        const dm = s.dms.get(entry.userId);
        if (dm) dm.loadingOlder = false;
        if (entry.quiet) return undefined;
        return showBanner(s, `Could not load the conversation: ${message}`);
      }
      default:
        return showBanner(s, message);
    }
  },
};

function onDm(s, f) {
  const own = isOwn(s, f.fromId);
  const dm = dmFor(s, own ? f.toId : f.fromId, own ? f.toUsername : f.fromUsername);
  if (addDmMessage(s, dm, f)) countUnread(s, dm, f.fromId);
}

function onUsernameError(s, f, message) {
  if (f.code === 'username_locked' && s.ready) return NONE; // the name comes from a token
  if (f.code === 'username_taken' && s.username && s.nameRetries < NAME_RETRIES) {
    // Reconnected before the server noticed the old connection was gone.
    s.nameRetries++;
    showBanner(s, 'Waiting for the server to release your username…', 'name');
    return [{ type: 'retryName', ms: NAME_RETRY_MS }];
  }
  setScreen(s, 'login');
  setFieldError(s, 'usernameError', message);
  return [{ type: 'focus', id: 'username-input' }];
}

function onRejoinError(s, name, message) {
  const room = s.rooms.get(name);
  if (!room) return;
  room.status = 'error';
  room.error = `Could not rejoin: ${message}`;
}

/**
 * A chat or direct message was refused or not stored: it stays in the conversation as
 * failed, with Retry (the same clientMsgId) and Discard. After `store_timeout` it may
 * have been stored: it is kept and marked so (`uncertain`); the echo of a retry, or the
 * history of the next rejoin, resolves it either way because the server stores one
 * clientMsgId once.
 */
function onMessageError(s, conv, clientMsgId, f, message, io) {
  const uncertain = INDETERMINATE_CODES.has(f.code);
  const failed = failPending(conv, clientMsgId, { message, retryAfterMs: f.retryAfterMs, uncertain }, io.now());
  if (!failed) showBanner(s, message);
}
