// Unit tests of handlers.js with the real store (state.js) and commands (commands.js):
// every server event type, every error code the client treats specially, and the
// reconnect path (resume cursor, resend of pending messages with the same clientMsgId).
// No DOM, no socket: `io` records what would be sent, and the clock is fixed.
// Run: node --test chat-ws-warp/assets/tests/

import { test } from 'node:test';
import assert from 'node:assert/strict';

import { HANDLERS, NAME_RETRIES, NAME_RETRY_MS, TYPING_EXPIRY_MS, handleFrame } from '../handlers.js';
import { flushPending, loadOlder, send, sendJoin } from '../commands.js';
import {
  activeConv, chooseUsername, createState, dmFor, expireTyping, markDisconnected, queueMessage,
  requeuePending, setActive,
} from '../state.js';

const NOW = 1_000_000;

/**
 * A store and a send port that records frames; `io.open = false` makes sends fail.
 * `take()` returns the frames sent without their `ref` (refs have tests of their own);
 * `takeWithRefs()` returns them as sent.
 */
function setup({ auth = false } = {}) {
  const s = createState({ auth });
  const io = { open: true, sent: [], send(f) { if (this.open) this.sent.push(f); return this.open; }, now: () => NOW };
  const on = (frame) => handleFrame(s, frame, io);
  const takeWithRefs = () => io.sent.splice(0);
  const take = () => takeWithRefs().map(({ ref, ...frame }) => frame);
  return { s, io, on, take, takeWithRefs };
}

/** Connected as Ann (id `me`), name confirmed. */
function signedIn() {
  const t = setup();
  chooseUsername(t.s, 'Ann', NAME_RETRIES);
  t.on({ type: 'connection', clientId: 'me' });
  t.on({ type: 'username_set', username: 'Ann' });
  t.take();
  return t;
}

/** Signed in and in `room` (joined by the user, history received). */
function inRoom(room = 'lobby', history = {}) {
  const t = signedIn();
  assert.equal(sendJoin(t.s, t.io, room, true), true);
  t.on({ type: 'room_joined', room });
  t.on({ type: 'message_history', room, messages: [], epoch: 'e1', lastSeq: 0, ...history });
  t.take();
  return t;
}

const roomMsg = (seq, extra = {}) => ({
  type: 'message_received', room: 'lobby', id: `m${seq}`, seq, userId: 'bob', username: 'Bob',
  content: `hello ${seq}`, timestamp: '2026-01-01T00:00:00Z', ...extra,
});

/** Writes `content` in the shown conversation and sends it (as the composer does). */
function write(t, content, id = `c-${content}`) {
  const conv = activeConv(t.s);
  queueMessage(conv, id, content, NOW);
  flushPending(t.s, t.io, conv);
  return conv.pending.find((p) => p.clientMsgId === id);
}

test('every server event type of docs/PROTOCOL.md has a handler', () => {
  const types = ['connection', 'username_set', 'room_joined', 'message_history', 'stream_reset', 'room_users',
    'user_joined', 'user_left', 'room_left', 'message_received', 'private_message', 'private_message_sent',
    'dm_history', 'typing_indicator', 'error'];
  assert.deepEqual(Object.keys(HANDLERS).sort(), [...types].sort());
});

test('an unknown type, or one named like an Object property, changes nothing', () => {
  const t = signedIn();
  const before = JSON.stringify([...t.s.rooms.keys(), t.s.banner, t.s.myId]);
  for (const type of ['nope', '__proto__', 'constructor', 'toString', 'hasOwnProperty']) {
    assert.deepEqual(t.on({ type }), [], type);
  }
  assert.equal(JSON.stringify([...t.s.rooms.keys(), t.s.banner, t.s.myId]), before);
});

test('connection: records the id and sends the wanted name, except with a token', () => {
  const t = setup();
  t.on({ type: 'connection', clientId: 'c1' });
  assert.deepEqual(t.take(), [], 'no name chosen yet');
  chooseUsername(t.s, 'Ann', NAME_RETRIES);
  t.on({ type: 'connection', clientId: 'c2' });
  assert.deepEqual(t.take(), [{ type: 'set_username', username: 'Ann' }]);
  assert.equal(t.s.myId, 'c2');
  assert.deepEqual([...t.s.myIds], ['c1', 'c2'], 'older ids stay ours (their messages are own)');

  const a = setup({ auth: true });
  chooseUsername(a.s, 'Ann', NAME_RETRIES);
  a.on({ type: 'connection', clientId: 'u' });
  assert.deepEqual(a.take(), [], 'the token names the user');
});

test('username_set: the first one shows the app and focuses the room field; a rename changes the name only', () => {
  const t = setup();
  chooseUsername(t.s, 'Ann', NAME_RETRIES);
  t.on({ type: 'connection', clientId: 'me' });
  const effects = t.on({ type: 'username_set', username: 'Ann' });
  assert.deepEqual(effects, [{ type: 'healthy' }, { type: 'focus', id: 'room-input' }]);
  assert.equal(t.s.ready, true);
  assert.equal(t.s.view.screen, 'app');
  assert.deepEqual(t.on({ type: 'username_set', username: 'Anna' }), []);
  assert.equal(t.s.username, 'Anna');
});

test('room_joined for the user\'s join: the room is shown, the field cleared, the composer focused', () => {
  const t = signedIn();
  sendJoin(t.s, t.io, 'lobby', true);
  assert.deepEqual(t.take(), [{ type: 'join_room', room: 'lobby', keepRooms: true }]);
  const effects = t.on({ type: 'room_joined', room: 'lobby' });
  assert.deepEqual(effects.map((e) => e.type), ['clearInput', 'stopTyping', 'closeDrawers', 'focus']);
  assert.deepEqual(t.s.active, { kind: 'room', key: 'lobby' });
  const room = t.s.rooms.get('lobby');
  assert.equal(room.status, 'joined');
  assert.equal(room.awaitingHistory, true);
});

test('room_joined of a rejoin for a room left meanwhile: leave it again', () => {
  const t = signedIn();
  t.s.inflight.push({ type: 'join_room', room: 'gone', user: false });
  t.on({ type: 'room_joined', room: 'gone' });
  assert.deepEqual(t.take(), [{ type: 'leave_room', room: 'gone' }]);
  assert.equal(t.s.rooms.has('gone'), false);
});

test('message_history as the join reply: history, cursor, hasMore; queued messages go out then', () => {
  const t = signedIn();
  sendJoin(t.s, t.io, 'lobby', true);
  t.on({ type: 'room_joined', room: 'lobby' });
  t.take();
  const p = write(t, 'early');
  assert.equal(p.status, 'queued', 'not sent before the history: the room is not ready');
  assert.deepEqual(t.take(), []);
  t.on({ type: 'message_history', room: 'lobby', messages: [roomMsg(4), roomMsg(5)], epoch: 'e1', lastSeq: 5, hasMore: true });
  const room = t.s.rooms.get('lobby');
  assert.deepEqual(room.log.items.map((m) => m.seq), [4, 5]);
  assert.deepEqual([room.epoch, room.lastSeq, room.hasMore, room.awaitingHistory], ['e1', 5, true, false]);
  assert.deepEqual(t.take(), [{ type: 'chat_message', room: 'lobby', content: 'early', clientMsgId: 'c-early' }]);
  assert.equal(p.status, 'sending');
});

test('message_received: others\' messages count as unread when the room is not shown', () => {
  const t = inRoom('lobby');
  t.on({ type: 'message_received', ...roomMsg(1) });
  assert.equal(t.s.rooms.get('lobby').unread, 0, 'shown');
  sendJoin(t.s, t.io, 'other', true);
  t.on({ type: 'room_joined', room: 'other' });
  t.on({ type: 'message_received', ...roomMsg(2) });
  t.on({ type: 'message_received', ...roomMsg(2) });
  t.on({ type: 'message_received', ...roomMsg(3, { userId: 'me', username: 'Ann' }) });
  const lobby = t.s.rooms.get('lobby');
  assert.equal(lobby.unread, 1, 'a duplicate and our own message do not count');
  assert.equal(lobby.lastSeq, 3);
  assert.equal(t.on({ type: 'message_received', ...roomMsg(9, { room: 'unknown' }) }).length, 0);
});

test('message_received: our echo confirms the optimistic message and settles the command', () => {
  const t = inRoom();
  write(t, 'hi');
  t.on({ type: 'message_received', ...roomMsg(1, { userId: 'me', content: 'hi', clientMsgId: 'c-hi' }) });
  const room = t.s.rooms.get('lobby');
  assert.equal(room.pending.length, 0);
  assert.equal(t.s.inflight.queue.length, 0);
  assert.equal(room.log.items.length, 1);
});

test('message_received from someone else with our clientMsgId confirms nothing', () => {
  const t = inRoom();
  write(t, 'hi');
  t.on({ type: 'message_received', ...roomMsg(1, { clientMsgId: 'c-hi' }) });
  assert.equal(t.s.rooms.get('lobby').pending.length, 1);
});

test('resume with recovered: true adds the replay to what is shown', () => {
  const t = inRoom('lobby', { messages: [roomMsg(1), roomMsg(2)], lastSeq: 2 });
  markDisconnected(t.s);
  t.on({ type: 'connection', clientId: 'me2' });
  t.on({ type: 'username_set', username: 'Ann' });
  assert.deepEqual(t.take(), [
    { type: 'set_username', username: 'Ann' },
    { type: 'join_room', room: 'lobby', keepRooms: true, since: 2, epoch: 'e1' },
  ]);
  t.on({ type: 'room_joined', room: 'lobby' });
  t.on({ type: 'message_history', room: 'lobby', messages: [roomMsg(2), roomMsg(3)], epoch: 'e1', lastSeq: 3, recovered: true });
  const room = t.s.rooms.get('lobby');
  assert.deepEqual(room.log.items.map((m) => m.seq), [1, 2, 3]);
  assert.equal(room.reloaded, false);
  assert.equal(room.lastSeq, 3);
  assert.equal(room.status, 'joined');
});

test('resume with recovered: false reloads the room and says so', () => {
  const t = inRoom('lobby', { messages: [roomMsg(1), roomMsg(2)], lastSeq: 2 });
  const version = t.s.rooms.get('lobby').logVersion;
  markDisconnected(t.s);
  t.on({ type: 'connection', clientId: 'me2' });
  t.on({ type: 'username_set', username: 'Ann' });
  t.on({ type: 'room_joined', room: 'lobby' });
  t.on({ type: 'message_history', room: 'lobby', messages: [roomMsg(1, { id: 'n1' })], epoch: 'e2', lastSeq: 1, recovered: false });
  const room = t.s.rooms.get('lobby');
  assert.deepEqual(room.log.items.map((m) => m.id), ['n1']);
  assert.deepEqual([room.epoch, room.lastSeq, room.reloaded], ['e2', 1, true]);
  assert.equal(room.logVersion, version + 1, 'the new stream may reuse ids: rendering starts afresh');
});

test('a resume replay in several frames (continued: true) completes with the last one', () => {
  const t = inRoom('lobby', { lastSeq: 0 });
  markDisconnected(t.s);
  t.on({ type: 'connection', clientId: 'me2' });
  t.on({ type: 'username_set', username: 'Ann' });
  t.on({ type: 'room_joined', room: 'lobby' });
  write(t, 'queued');
  t.take();
  t.on({ type: 'message_history', room: 'lobby', messages: [roomMsg(1), roomMsg(2)], continued: true });
  const room = t.s.rooms.get('lobby');
  assert.equal(room.awaitingHistory, true);
  assert.deepEqual(t.take(), [], 'pending messages wait for the end of the replay');
  t.on({ type: 'message_history', room: 'lobby', messages: [roomMsg(3)], epoch: 'e1', lastSeq: 3, recovered: true });
  assert.deepEqual(room.log.items.map((m) => m.seq), [1, 2, 3]);
  assert.equal(room.awaitingHistory, false);
  assert.deepEqual(t.take().map((f) => f.clientMsgId), ['c-queued']);
});

test('a disconnect re-queues sending messages; the rejoin resends them with the same clientMsgId', () => {
  const t = inRoom();
  const p = write(t, 'hi');
  t.take();
  markDisconnected(t.s);
  assert.equal(p.status, 'queued');
  assert.equal(t.s.rooms.get('lobby').status, 'disconnected');
  assert.equal(t.s.inflight.queue.length, 0);
  t.on({ type: 'connection', clientId: 'me2' });
  t.on({ type: 'username_set', username: 'Ann' });
  t.on({ type: 'room_joined', room: 'lobby' });
  t.take();
  t.on({ type: 'message_history', room: 'lobby', messages: [], epoch: 'e1', lastSeq: 0, recovered: true });
  assert.deepEqual(t.take(), [{ type: 'chat_message', room: 'lobby', content: 'hi', clientMsgId: 'c-hi' }]);
});

test('a message stored before the outage is found in the replay and not sent again', () => {
  const t = inRoom();
  write(t, 'hi');
  markDisconnected(t.s);
  t.on({ type: 'connection', clientId: 'me2' });
  t.on({ type: 'username_set', username: 'Ann' });
  t.on({ type: 'room_joined', room: 'lobby' });
  t.take();
  t.on({ type: 'message_history', room: 'lobby', recovered: true, epoch: 'e1', lastSeq: 1,
    messages: [roomMsg(1, { userId: 'me', clientMsgId: 'c-hi', content: 'hi' })] });
  assert.equal(t.s.rooms.get('lobby').pending.length, 0);
  assert.deepEqual(t.take(), []);
});

test('message_history as a history page: older messages on top, the scroll place kept', () => {
  const t = inRoom('lobby', { messages: [roomMsg(51)], lastSeq: 51, hasMore: true });
  const room = t.s.rooms.get('lobby');
  loadOlder(t.s, t.io);
  assert.deepEqual(t.take(), [{ type: 'history', room: 'lobby', before: 51, limit: 50 }]);
  assert.equal(room.loadingOlder, true);
  loadOlder(t.s, t.io);
  assert.deepEqual(t.take(), [], 'one page at a time');
  t.on({ type: 'message_history', room: 'lobby', messages: [roomMsg(49), roomMsg(50)], hasMore: false });
  assert.deepEqual(room.log.items.map((m) => m.seq), [49, 50, 51]);
  assert.deepEqual([room.hasMore, room.loadingOlder, room.anchorOlder], [false, false, true]);
  assert.equal(t.s.inflight.queue.length, 0);
});

test('stream_reset keeps what is shown above a separator; the new stream counts from 1', () => {
  const t = inRoom('lobby', { messages: [roomMsg(1), roomMsg(2)], lastSeq: 2, hasMore: true });
  t.on({ type: 'stream_reset', room: 'lobby', epoch: 'e2' });
  const room = t.s.rooms.get('lobby');
  assert.deepEqual([room.epoch, room.lastSeq, room.hasMore, room.reloaded], ['e2', 0, false, true]);
  t.on({ type: 'message_received', ...roomMsg(1, { id: 'new1' }) });
  assert.deepEqual(room.log.items.map((m) => m.id), ['m1', 'm2', 'restart-1', 'new1']);
  assert.equal(room.lastSeq, 1, 'the next resume asks from the new stream\'s seq');
  t.on({ type: 'stream_reset', room: 'nope', epoch: 'x' });
});

test('room_users, user_joined and user_left keep the member list', () => {
  const t = inRoom();
  const room = t.s.rooms.get('lobby');
  t.on({ type: 'room_users', room: 'lobby', users: [{ id: 'me', username: 'Ann' }, { id: 'bob', username: 'Bob' }] });
  assert.deepEqual([...room.members.keys()], ['me', 'bob']);
  t.on({ type: 'user_joined', room: 'lobby', userId: 'cy', username: 'Cy' });
  t.on({ type: 'typing_indicator', room: 'lobby', userId: 'cy', username: 'Cy', isTyping: true });
  t.on({ type: 'user_left', room: 'lobby', userId: 'cy', username: 'Cy' });
  assert.deepEqual([...room.members.keys()], ['me', 'bob']);
  assert.equal(room.typing.size, 0, 'who left stops typing');
  t.on({ type: 'room_users', room: 'lobby', users: 'not a list' });
  assert.equal(room.members.size, 2);
});

test('room_left removes the room and shows the next one', () => {
  const t = inRoom('a');
  sendJoin(t.s, t.io, 'b', true);
  t.on({ type: 'room_joined', room: 'b' });
  t.s.rooms.get('a').unread = 3;
  t.s.inflight.push({ type: 'leave_room', room: 'b' });
  t.on({ type: 'room_left', room: 'b' });
  assert.deepEqual([...t.s.rooms.keys()], ['a']);
  assert.deepEqual(t.s.active, { kind: 'room', key: 'a' });
  assert.equal(t.s.rooms.get('a').unread, 0);
});

test('private_message and private_message_sent: one conversation per other user', () => {
  const t = signedIn();
  t.on({ type: 'private_message', id: 'd1', fromId: 'bob', fromUsername: 'Bob', toId: 'me', toUsername: 'Ann', content: 'hey' });
  t.on({ type: 'private_message_sent', id: 'd2', fromId: 'me', fromUsername: 'Ann', toId: 'bob', toUsername: 'Bobby', content: 'yo' });
  assert.deepEqual([...t.s.dms.keys()], ['bob']);
  const dm = t.s.dms.get('bob');
  assert.equal(dm.username, 'Bobby', 'the newest name');
  assert.equal(dm.unread, 1, 'only the received one');
  assert.deepEqual(dm.log.items.map((m) => m.id), ['d1', 'd2']);
});

test('dm_history: the first page loads the conversation, older pages go on top', () => {
  const t = signedIn();
  t.on({ type: 'private_message', id: 'd9', fromId: 'bob', fromUsername: 'Bob', toId: 'me', seq: 9 });
  const dm = t.s.dms.get('bob');
  t.s.inflight.push({ type: 'dm_history', userId: 'bob' });
  t.on({ type: 'dm_history', userId: 'bob', messages: [{ id: 'd8', seq: 8, fromId: 'bob' }], hasMore: true });
  assert.deepEqual([dm.loaded, dm.hasMore, dm.anchorOlder], [true, true, false]);
  setActive(t.s, { kind: 'dm', key: 'bob' });
  loadOlder(t.s, t.io);
  assert.deepEqual(t.take(), [{ type: 'dm_history', userId: 'bob', before: 8, limit: 50 }]);
  t.on({ type: 'dm_history', userId: 'bob', messages: [{ id: 'd7', seq: 7, fromId: 'bob' }], hasMore: false });
  assert.deepEqual(dm.log.items.map((m) => m.id), ['d7', 'd8', 'd9']);
  assert.deepEqual([dm.hasMore, dm.anchorOlder, dm.loadingOlder], [false, true, false]);
});

test('typing_indicator: others only, with an expiry that a refresh supersedes', () => {
  const t = inRoom();
  const room = t.s.rooms.get('lobby');
  assert.deepEqual(t.on({ type: 'typing_indicator', room: 'lobby', userId: 'me', username: 'Ann', isTyping: true }), []);
  const [first] = t.on({ type: 'typing_indicator', room: 'lobby', userId: 'bob', username: 'Bob', isTyping: true });
  assert.deepEqual({ ...first, token: 0 }, { type: 'expireTyping', room: 'lobby', userId: 'bob', token: 0, ms: TYPING_EXPIRY_MS });
  const [second] = t.on({ type: 'typing_indicator', room: 'lobby', userId: 'bob', username: 'Bob', isTyping: true });
  expireTyping(t.s, 'lobby', 'bob', first.token);
  assert.equal(room.typing.has('bob'), true, 'the first expiry is stale');
  expireTyping(t.s, 'lobby', 'bob', second.token);
  assert.equal(room.typing.has('bob'), false);
  t.on({ type: 'typing_indicator', room: 'lobby', userId: 'bob', username: 'Bob', isTyping: true });
  t.on({ type: 'message_received', ...roomMsg(1) });
  assert.equal(room.typing.has('bob'), false, 'a message from the typist ends the typing');
  t.on({ type: 'typing_indicator', room: 'lobby', userId: 'bob', username: 'Bob', isTyping: true });
  t.on({ type: 'typing_indicator', room: 'lobby', userId: 'bob', username: 'Bob', isTyping: false });
  assert.equal(room.typing.has('bob'), false);
});

// ---------------------------------------------------------------------------------
// Errors

test('error for set_username: back to the name form with the server\'s text', () => {
  for (const code of ['invalid_username', 'username_taken', 'username_locked']) {
    const t = setup();
    chooseUsername(t.s, 'Ann', NAME_RETRIES);
    t.on({ type: 'connection', clientId: 'me' });
    const effects = t.on({ type: 'error', code, message: `text of ${code}` });
    assert.deepEqual(effects, [{ type: 'focus', id: 'username-input' }], code);
    assert.equal(t.s.view.screen, 'login');
    assert.equal(t.s.view.usernameError, `text of ${code}`);
  }
});

test('username_taken after a reconnect: wait for the old connection to let go, then retry', () => {
  const t = signedIn();
  markDisconnected(t.s);
  t.on({ type: 'connection', clientId: 'me2' });
  const effects = t.on({ type: 'error', code: 'username_taken', message: 'taken' });
  assert.deepEqual(effects, [{ type: 'retryName', ms: NAME_RETRY_MS }]);
  assert.equal(t.s.banner.kind, 'name');
  assert.equal(t.s.view.screen, 'app', 'the app stays');
  t.on({ type: 'username_set', username: 'Ann' });
  assert.equal(t.s.banner, null, 'the waiting banner goes with the name');
});

test('username_taken of a name the user just chose: no silent retries', () => {
  const t = signedIn();
  chooseUsername(t.s, 'Bob', NAME_RETRIES);
  t.s.inflight.push({ type: 'set_username' });
  t.on({ type: 'error', code: 'username_taken', message: 'taken' });
  assert.equal(t.s.view.usernameError, 'taken');
});

test('username_locked while signed in with a token changes nothing', () => {
  const t = signedIn();
  t.s.inflight.push({ type: 'set_username' });
  assert.deepEqual(t.on({ type: 'error', code: 'username_locked', message: 'locked' }), []);
  assert.equal(t.s.view.usernameError, null);
});

test('invalid_room / too_many_rooms: a field error for the user\'s join, a room error for a rejoin', () => {
  for (const code of ['invalid_room', 'too_many_rooms']) {
    const t = signedIn();
    sendJoin(t.s, t.io, 'x', true);
    t.on({ type: 'error', code, message: 'no' });
    assert.equal(t.s.view.joinError, 'no');
    assert.equal(t.s.rooms.has('x'), false);

    const r = inRoom();
    markDisconnected(r.s);
    r.on({ type: 'connection', clientId: 'me2' });
    r.on({ type: 'username_set', username: 'Ann' });
    r.on({ type: 'error', code, message: 'full' });
    const room = r.s.rooms.get('lobby');
    assert.deepEqual([room.status, room.error], ['error', 'Could not rejoin: full']);
  }
});

test('rate_limited fails the message with its retry time, not an older command', () => {
  const t = inRoom();
  t.s.inflight.push({ type: 'history', room: 'lobby' });
  const p = write(t, 'fast');
  t.s.inflight.queue.reverse(); // the history request is now the newest
  t.on({ type: 'error', code: 'rate_limited', message: 'Sending messages too fast', retryAfterMs: 1500 });
  assert.deepEqual([p.status, p.error, p.retryAfterMs, p.retryAt, p.uncertain], ['failed', 'Sending messages too fast', 1500, NOW + 1500, false]);
  assert.deepEqual(t.s.inflight.queue.map((e) => e.type), ['history']);
});

test('store_unavailable: the message stays, failed; Retry resends it with the same clientMsgId', () => {
  const t = inRoom();
  const p = write(t, 'hi');
  t.take();
  t.on({ type: 'error', code: 'store_unavailable', message: 'Message not stored' });
  assert.deepEqual([p.status, p.uncertain], ['failed', false]);
  assert.equal(t.s.banner, null);
  requeuePending(t.s.rooms.get('lobby'), 'c-hi');
  flushPending(t.s, t.io, t.s.rooms.get('lobby'));
  assert.deepEqual(t.take(), [{ type: 'chat_message', room: 'lobby', content: 'hi', clientMsgId: 'c-hi' }]);
});

test('store_timeout: the message stays pending as "maybe sent" and is resent with the same clientMsgId', () => {
  const t = inRoom();
  const p = write(t, 'hi');
  t.take();
  t.on({ type: 'error', code: 'store_timeout', message: 'May or may not be stored' });
  const room = t.s.rooms.get('lobby');
  assert.deepEqual([p.status, p.uncertain, room.pending.length], ['failed', true, 1]);
  requeuePending(room, 'c-hi');
  assert.equal(p.uncertain, false);
  flushPending(t.s, t.io, room);
  assert.deepEqual(t.take(), [{ type: 'chat_message', room: 'lobby', content: 'hi', clientMsgId: 'c-hi' }]);
  // The server stored the first attempt after all: the retry's echo is the same message.
  t.on({ type: 'message_received', ...roomMsg(1, { userId: 'me', content: 'hi', clientMsgId: 'c-hi' }) });
  assert.equal(room.pending.length, 0);
  assert.equal(room.log.items.length, 1);
});

test('store_timeout, then a reconnect whose replay holds the message: resolved without a resend', () => {
  const t = inRoom();
  write(t, 'hi');
  t.on({ type: 'error', code: 'store_timeout', message: 'May or may not be stored' });
  markDisconnected(t.s);
  t.on({ type: 'connection', clientId: 'me2' });
  t.on({ type: 'username_set', username: 'Ann' });
  t.on({ type: 'room_joined', room: 'lobby' });
  t.take();
  t.on({ type: 'message_history', room: 'lobby', recovered: true, epoch: 'e1', lastSeq: 1,
    messages: [roomMsg(1, { userId: 'me', clientMsgId: 'c-hi', content: 'hi' })] });
  assert.equal(t.s.rooms.get('lobby').pending.length, 0);
  assert.deepEqual(t.take(), []);
});

test('store_timeout and user_not_found on a direct message', () => {
  for (const [code, uncertain] of [['store_timeout', true], ['user_not_found', false], ['store_unavailable', false]]) {
    const t = signedIn();
    const dm = dmFor(t.s, 'bob', 'Bob');
    setActive(t.s, { kind: 'dm', key: 'bob' });
    const p = write(t, 'psst');
    assert.deepEqual(t.take(), [{ type: 'private_message', targetId: 'bob', content: 'psst', clientMsgId: 'c-psst' }]);
    t.on({ type: 'error', code, message: code });
    assert.deepEqual([p.status, p.uncertain, dm.pending.length], ['failed', uncertain, 1], code);
  }
});

test('an error for a message no longer pending becomes a banner', () => {
  const t = inRoom();
  write(t, 'hi');
  t.s.rooms.get('lobby').pending.length = 0; // discarded meanwhile
  t.on({ type: 'error', code: 'store_unavailable', message: 'Message not stored' });
  assert.deepEqual(t.s.banner, { text: 'Message not stored', kind: 'error' });
});

test('not_in_room for leave_room drops the room quietly; another code also says why', () => {
  const t = inRoom();
  t.s.inflight.push({ type: 'leave_room', room: 'lobby' });
  t.on({ type: 'error', code: 'not_in_room', message: 'Not in room' });
  assert.equal(t.s.rooms.has('lobby'), false);
  assert.equal(t.s.banner, null);
  const u = inRoom();
  u.s.inflight.push({ type: 'leave_room', room: 'lobby' });
  u.on({ type: 'error', code: 'too_many_requests', message: 'Slow down' });
  assert.equal(u.s.rooms.has('lobby'), false);
  assert.equal(u.s.banner.text, 'Slow down');
});

test('errors for history pages: a banner, and the button usable again; a quiet DM refresh says nothing', () => {
  const t = inRoom('lobby', { messages: [roomMsg(5)], lastSeq: 5, hasMore: true });
  loadOlder(t.s, t.io);
  t.on({ type: 'error', code: 'store_unavailable', message: 'down' });
  assert.equal(t.s.rooms.get('lobby').loadingOlder, false);
  assert.equal(t.s.banner.text, 'Could not load older messages: down');

  const d = signedIn();
  dmFor(d.s, 'bob', 'Bob');
  d.s.inflight.push({ type: 'dm_history', userId: 'bob', quiet: true });
  d.on({ type: 'error', code: 'user_not_found', message: 'gone' });
  assert.equal(d.s.banner, null);
  d.s.inflight.push({ type: 'dm_history', userId: 'bob' });
  d.on({ type: 'error', code: 'user_not_found', message: 'gone' });
  assert.equal(d.s.banner.text, 'Could not load the conversation: gone');
});

test('an error that answers no waiting command is shown as it is; an empty one gets a text', () => {
  const t = signedIn();
  t.on({ type: 'error', code: 'invalid_json', message: 'Invalid JSON: …' });
  assert.equal(t.s.banner.text, 'Invalid JSON: …');
  t.on({ type: 'error' });
  assert.equal(t.s.banner.text, 'Something went wrong.');
});

test('sends that fail (socket closed) leave messages queued and record nothing in flight', () => {
  const t = inRoom();
  t.io.open = false;
  const p = write(t, 'later');
  assert.equal(p.status, 'queued');
  assert.equal(t.s.inflight.queue.length, 0);
  assert.equal(sendJoin(t.s, t.io, 'x', true), false);
});

test('every command carries a fresh ref, recorded with the commands that await a reply', () => {
  const t = inRoom();
  write(t, 'a');
  write(t, 'b');
  send(t.s, t.io, { type: 'typing_start', room: 'lobby' });
  const sent = t.takeWithRefs();
  const refs = sent.map((f) => f.ref);
  assert.equal(new Set(refs).size, refs.length, 'unique');
  for (const ref of refs) assert.match(ref, /^r[0-9]{1,20}$/, 'short and visible');
  assert.deepEqual(t.s.inflight.queue.map((e) => e.ref).slice(-2), refs.slice(0, 2), 'recorded with the entry');
  // A reconnect clears what is in flight but never reuses a ref.
  markDisconnected(t.s);
  t.on({ type: 'connection', clientId: 'me2' });
  t.on({ type: 'username_set', username: 'Ann' });
  for (const f of t.takeWithRefs()) assert.ok(!refs.includes(f.ref), f.ref);
});

test('an error is attributed by its ref, not guessed from its code', () => {
  const t = inRoom();
  const a = write(t, 'a');
  const b = write(t, 'b');
  const [, second] = t.takeWithRefs();
  // store_unavailable without a ref would fail the oldest command: message a.
  t.on({ type: 'error', code: 'store_unavailable', message: 'not stored', ref: second.ref });
  assert.deepEqual([a.status, b.status], ['sending', 'failed']);
  assert.deepEqual(t.s.inflight.queue.map((e) => e.clientMsgId), ['c-a']);
});

test('a ref names a join even when the code would point at a message', () => {
  const t = inRoom();
  const p = write(t, 'hi');
  sendJoin(t.s, t.io, 'other', true);
  const join = t.takeWithRefs().find((f) => f.type === 'join_room');
  // rate_limited without a ref would fail the chat message.
  t.on({ type: 'error', code: 'rate_limited', message: 'Joining rooms too fast', retryAfterMs: 900, ref: join.ref });
  assert.equal(t.s.view.joinError, 'Joining rooms too fast');
  assert.equal(p.status, 'sending');
});

test('an error whose ref matches nothing waiting refuses nothing and is shown', () => {
  const t = inRoom();
  const p = write(t, 'hi');
  t.on({ type: 'error', code: 'store_unavailable', message: 'not stored', ref: 'r999999' });
  assert.equal(p.status, 'sending');
  assert.equal(t.s.inflight.queue.length, 1);
  assert.equal(t.s.banner.text, 'not stored');
});

test('without a ref, an echoed clientMsgId names the message', () => {
  const t = inRoom();
  const a = write(t, 'a');
  const b = write(t, 'b');
  t.on({ type: 'error', code: 'store_unavailable', message: 'not stored', clientMsgId: 'c-b' });
  assert.deepEqual([a.status, b.status], ['sending', 'failed']);
});

test('an error about a command that awaits no reply (typing) fails no message', () => {
  const t = inRoom();
  const p = write(t, 'hi');
  send(t.s, t.io, { type: 'typing_start', room: 'lobby' });
  const typing = t.takeWithRefs().find((f) => f.type === 'typing_start');
  // rate_limited without a ref would be taken for the message's refusal.
  t.on({ type: 'error', code: 'rate_limited', message: 'Typing updates too fast', retryAfterMs: 400, ref: typing.ref });
  assert.equal(p.status, 'sending');
  assert.equal(t.s.inflight.queue.length, 1);
});
