// commands.js — what the client sends, and the bookkeeping each send needs: every frame
// carries a fresh `ref`, which the server echoes on the `error` that refuses it
// (docs/PROTOCOL.md, "Errors"); the store records the commands that await a reply as in
// flight under that `ref`, and marks messages `sending` only when the frame really left.
//
// Every function takes the store `s` and a port `io`: `io.send(frame)` returns false when
// the socket is not open, `io.now()` is the clock in ms. app.js passes the Connection and
// Date.now, the unit tests a recorder and a fixed time: no socket, timer or DOM is
// reached from here.

import { joinCommand } from './protocol.js';
import { activeConv, roomCursor, setActive } from './state.js';

/** Messages per `history` / `dm_history` page. */
export const PAGE = 50;

/**
 * Sends a command with a fresh `ref`; `entry` marks it as awaiting a reply under that
 * `ref`, so that an error can be attributed to it. A command without an entry (typing)
 * still carries a `ref`: an error about it then names no waiting command, instead of
 * being taken for the refusal of one.
 */
export function send(s, io, frame, entry) {
  const ref = s.inflight.nextRef();
  if (!io.send({ ...frame, ref })) return false;
  if (entry) s.inflight.push({ type: frame.type, ref, ...entry });
  return true;
}

export function sendUsername(s, io, name) {
  s.wantName = name;
  return send(s, io, { type: 'set_username', username: name }, {});
}

/** `join_room`, resuming from the room's cursor when it has one; `user`: the user asked. */
export function sendJoin(s, io, name, user) {
  const cursor = roomCursor(s, name);
  const existing = s.rooms.get(name);
  if (existing) existing.status = 'joining';
  return send(s, io, joinCommand(name, cursor), { room: name, user, resume: cursor !== null });
}

/** Sends the conversation's queued optimistic messages (same clientMsgId as before). */
export function flushPending(s, io, conv) {
  if (!s.ready) return;
  if (conv.kind === 'room' && (conv.status !== 'joined' || conv.awaitingHistory)) return;
  for (const p of conv.pending) {
    if (p.status !== 'queued') continue;
    const ok = conv.kind === 'room'
      ? send(s, io, { type: 'chat_message', room: conv.name, content: p.content, clientMsgId: p.clientMsgId },
        { room: conv.name, clientMsgId: p.clientMsgId })
      : send(s, io, { type: 'private_message', targetId: conv.userId, content: p.content, clientMsgId: p.clientMsgId },
        { userId: conv.userId, clientMsgId: p.clientMsgId });
    if (ok) p.status = 'sending';
  }
}

/** After username_set: rejoin (resume) every room, resend queued DMs, refresh the open DM. */
export function resumeAll(s, io) {
  for (const room of s.rooms.values()) sendJoin(s, io, room.name, false);
  for (const dm of s.dms.values()) flushPending(s, io, dm);
  // DMs have no resume cursor: refetch the open conversation's latest page (merged by id).
  const conv = activeConv(s);
  if (conv?.kind === 'dm') {
    send(s, io, { type: 'dm_history', userId: conv.userId, limit: PAGE }, { userId: conv.userId, quiet: conv.loaded });
  }
}

/**
 * Shows a conversation; a DM never loaded asks for its latest page. Returns the
 * conversation shown before (the caller stops its typing state when it changed).
 */
export function activate(s, io, target) {
  const prev = setActive(s, target);
  const conv = activeConv(s);
  if (conv?.kind === 'dm' && !conv.loaded && s.ready) {
    send(s, io, { type: 'dm_history', userId: conv.userId, limit: PAGE }, { userId: conv.userId });
  }
  return prev;
}

/** "Load older messages" of the shown conversation. */
export function loadOlder(s, io) {
  const conv = activeConv(s);
  if (!conv || conv.loadingOlder || !s.ready) return;
  const before = conv.log.oldestSeq;
  if (before == null) return;
  const ok = conv.kind === 'room'
    ? send(s, io, { type: 'history', room: conv.name, before, limit: PAGE }, { room: conv.name })
    : send(s, io, { type: 'dm_history', userId: conv.userId, before, limit: PAGE }, { userId: conv.userId, before });
  if (ok) conv.loadingOlder = true;
}
