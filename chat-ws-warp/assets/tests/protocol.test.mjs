// Unit tests of protocol.js: the server's text rules (trimming, cuts in characters and
// bytes, names), the resume command, backoff, ids, the message log and error matching.
// Run: node --test chat-ws-warp/assets/tests/  (Node 20, no dependencies, no DOM).
//
// The expectations come from the server (chat-core `ids.rs` `Content::parse`,
// `Username::parse`, `RoomName::parse`, `protocol/client.rs`); where JavaScript's
// built-ins disagree with Rust the test names the difference.

import { test } from 'node:test';
import assert from 'node:assert/strict';

import {
  CLOSE_REASONS, CONTENT_MAX_BYTES, FATAL_CLOSES, INDETERMINATE_CODES, Inflight, MessageLog,
  backoffDelay, cutChars, cutUtf8, errorTargets, hasInvisible, joinCommand, limitContent, newClientMsgId,
  normalizeContent, parseRoom, parseUsername, trimContent, typingText, utf8Length, wsUrl,
} from '../protocol.js';

const cp = (n) => String.fromCodePoint(n);

// Rust's `char::is_whitespace` (Unicode White_Space), listed by
// `(0..=0x10FFFF).filter_map(char::from_u32).filter(|c| c.is_whitespace())`.
const RUST_WHITE_SPACE = [
  0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x20, 0x85, 0xa0, 0x1680, 0x2000, 0x2001, 0x2002, 0x2003,
  0x2004, 0x2005, 0x2006, 0x2007, 0x2008, 0x2009, 0x200a, 0x2028, 0x2029, 0x202f, 0x205f, 0x3000,
];

test('trimContent strips exactly the code points Rust str::trim strips', () => {
  const ws = new Set(RUST_WHITE_SPACE);
  const wrong = [];
  for (let n = 0; n <= 0x10ffff; n++) {
    if (n >= 0xd800 && n <= 0xdfff) continue; // not scalar values; Rust strings cannot hold them
    const c = cp(n);
    if ((trimContent(`${c}x${c}`) === 'x') !== ws.has(n)) wrong.push(n.toString(16));
  }
  assert.deepEqual(wrong, []);
});

test('U+FEFF: the server keeps it, so trimContent keeps it (JavaScript trim() would not)', () => {
  const raw = '\uFEFF hi \uFEFF';
  assert.equal(raw.trim(), 'hi', 'the built-in the client used to agree with');
  assert.equal(trimContent(raw), raw, 'Rust: "\\u{feff} hi \\u{feff}".trim() is unchanged');
  assert.equal(normalizeContent('  \uFEFF  '), '\uFEFF', 'a BOM-only message is not empty to the server');
  assert.equal(trimContent('\u0085hi\u0085'), 'hi', 'U+0085 (NEL) is White_Space; JavaScript \\s misses it');
});

test('trimContent keeps inner white space and line breaks', () => {
  assert.equal(trimContent('\n  line one\n\n  line two \t'), 'line one\n\n  line two');
});

test('utf8Length and cutUtf8 count bytes as the server does, never splitting a character', () => {
  assert.deepEqual(['a', 'é', '€', '😀'].map(utf8Length), [1, 2, 3, 4]);
  assert.equal(utf8Length('a😀'), 5);
  assert.equal('a😀'.length, 3, 'UTF-16 units, not bytes');
  assert.equal(cutUtf8('a😀', 4), 'a');
  assert.equal(cutUtf8('a😀', 5), 'a😀');
  assert.equal(cutUtf8('ééé', 5), 'éé');
});

test('cutChars counts characters (code points), not UTF-16 units', () => {
  assert.equal(cutChars('😀😀😀', 2), '😀😀');
  assert.equal(cutChars('abc', 5), 'abc');
  assert.equal(cutChars('a😀b', 2), 'a😀');
});

test('normalizeContent: 1000 characters, not 1000 UTF-16 units', () => {
  const emoji = normalizeContent('😀'.repeat(1001));
  assert.equal([...emoji].length, 1000);
  assert.equal(emoji.length, 2000, 'two UTF-16 units each; a naive slice(0, 1000) keeps 500');
  const mixed = normalizeContent(`${'a'.repeat(999)}😀😀`);
  assert.equal(mixed, `${'a'.repeat(999)}😀`, 'the cut never leaves half a surrogate pair');
});

test('normalizeContent trims before the cut and again after it', () => {
  assert.equal(normalizeContent(`     ${'a'.repeat(1000)}`), 'a'.repeat(1000), 'leading space does not count');
  assert.equal(normalizeContent(`${'a'.repeat(999)} b`), 'a'.repeat(999), 'the space the cut leaves at the end goes');
  assert.equal(normalizeContent(' \n\t '), '', 'white space only: nothing to send');
});

test('normalizeContent applies the decoder\'s 16 KiB byte cut before trimming', () => {
  assert.equal(CONTENT_MAX_BYTES, 16384);
  assert.equal(normalizeContent(`${' '.repeat(CONTENT_MAX_BYTES)}x`), '', 'the x is past the byte cut');
  assert.equal(normalizeContent(`${' '.repeat(CONTENT_MAX_BYTES - 1)}x`), 'x');
  const fourByte = normalizeContent('😀'.repeat(5000)); // 20,000 bytes
  assert.equal([...fourByte].length, 1000);
});

test('limitContent: the composer holds 1000 characters, not 1000 UTF-16 units', () => {
  const emoji = '😀'.repeat(600);
  assert.equal(limitContent(emoji), emoji, '1200 UTF-16 units, 600 characters: all kept');
  assert.equal(limitContent('😀'.repeat(1001)), '😀'.repeat(1000));
  assert.equal(limitContent(`  \n${'a'.repeat(1005)}`), `  \n${'a'.repeat(1000)}`, 'leading space does not count');
  assert.equal(limitContent('short  '), 'short  ', 'what fits is left alone, trailing space too');
});

test('normalizeContent replaces lone surrogates, which the server refuses as invalid JSON', () => {
  assert.equal(normalizeContent('a\uD800b'), 'a\uFFFDb');
  assert.equal(normalizeContent('😀'), '😀');
});

test('hasInvisible matches the server\'s is_invisible', () => {
  for (const c of ['\u0000', '\u001F', '\u007F', '\u0085', '\u00AD', '\u061C', '\u180E', '\u200B', '\u200F',
    '\u2028', '\u202E', '\u2060', '\u2066', '\uFEFF', '\uFFF9', cp(0xe0001), cp(0xe007f)]) {
    assert.equal(hasInvisible(`a${c}b`), true, `U+${c.codePointAt(0).toString(16)}`);
  }
  for (const c of [' ', '\u00A0', '\u3000', 'é', '😀', '\u200A', '\u2010', '\uFFFD', cp(0xe0080)]) {
    assert.equal(hasInvisible(`a${c}b`), false, `U+${c.codePointAt(0).toString(16)}`);
  }
});

test('parseUsername: trim, at least 2 characters, cut to 20, no invisible characters', () => {
  assert.deepEqual(parseUsername('  Ann \n'), { name: 'Ann' });
  assert.deepEqual(parseUsername('A'), { error: 'Username must be at least 2 characters' });
  assert.deepEqual(parseUsername(' A '), { error: 'Username must be at least 2 characters' });
  assert.deepEqual(parseUsername('😀'), { error: 'Username must be at least 2 characters' }, 'one character, two UTF-16 units');
  assert.deepEqual(parseUsername('😀😀'), { name: '😀😀' });
  assert.deepEqual(parseUsername('x'.repeat(25)), { name: 'x'.repeat(20) });
  assert.deepEqual(parseUsername(`${'x'.repeat(19)} yz`), { name: 'x'.repeat(19) }, 'trimmed again after the cut');
  assert.deepEqual(parseUsername('😀'.repeat(25)), { name: '😀'.repeat(20) });
  assert.deepEqual(parseUsername('\u0085Bob\u3000'), { name: 'Bob' });
  assert.deepEqual(parseUsername('Al\u00A0Bo'), { name: 'Al\u00A0Bo' });
  const invisible = { error: 'Username contains invisible or control characters' };
  assert.deepEqual(parseUsername('\uFEFFBob'), invisible, 'JavaScript trim() would strip the BOM; the server refuses it');
  assert.deepEqual(parseUsername('Bo\u200Bb'), invisible);
  assert.deepEqual(parseUsername('Bo\u202Eb'), invisible);
  assert.deepEqual(parseUsername('Bo\tb'), invisible);
});

test('parseRoom: trim, lower-case, cut to 30 characters, not empty, no invisible characters', () => {
  assert.deepEqual(parseRoom('  General '), { name: 'general' });
  assert.deepEqual(parseRoom(''), { error: 'Room name required' });
  assert.deepEqual(parseRoom(' \u3000\n'), { error: 'Room name required' });
  assert.deepEqual(parseRoom('R'.repeat(40)), { name: 'r'.repeat(30) });
  assert.deepEqual(parseRoom('😀'.repeat(31)), { name: '😀'.repeat(30) }, '30 characters, 60 UTF-16 units');
  assert.deepEqual(parseRoom(`${'a'.repeat(29)} b`), { name: 'a'.repeat(29) });
  assert.deepEqual(parseRoom('ΣΊΣΥΦΟΣ'), { name: 'σίσυφος' }, 'final sigma, as Rust to_lowercase');
  assert.deepEqual(parseRoom('a\u200Bb'), { error: 'Room name contains invisible or control characters' });
  assert.deepEqual(parseRoom('\uFEFF'), { error: 'Room name contains invisible or control characters' });
});

test('joinCommand: a plain join, or a resume from the cursor', () => {
  assert.deepEqual(joinCommand('lobby', null), { type: 'join_room', room: 'lobby', keepRooms: true });
  assert.deepEqual(joinCommand('lobby', { epoch: 'e1', lastSeq: 7 }),
    { type: 'join_room', room: 'lobby', keepRooms: true, since: 7, epoch: 'e1' });
  assert.deepEqual(joinCommand('lobby', { epoch: 'e1', lastSeq: 0 }).since, 0, 'an empty room resumes from 0');
  assert.deepEqual(joinCommand('lobby', { epoch: 'e1' }).since, 0);
  assert.equal('since' in joinCommand('lobby', { epoch: null, lastSeq: 3 }), false, 'no epoch: nothing to resume');
});

test('backoffDelay: full jitter under an exponential cap', () => {
  assert.equal(backoffDelay(0, 500, 15000, () => 0), 0);
  assert.equal(backoffDelay(0, 500, 15000, () => 0.999), 499);
  assert.equal(backoffDelay(3, 500, 15000, () => 0.5), 2000);
  assert.equal(backoffDelay(10, 500, 15000, () => 0.999), 14985, 'capped');
  assert.equal(backoffDelay(5000, 500, 15000, () => 0.5), 7500, 'no overflow for huge attempts');
});

test('close codes: 4001 is fatal, the others reconnect', () => {
  assert.deepEqual([...FATAL_CLOSES.keys()], [4001]);
  for (const code of [1001, 1008, 1009, 1011, 1013, 4001]) assert.ok(CLOSE_REASONS.get(code), `${code}`);
});

test('wsUrl: same origin, ws or wss, the page token passed on', () => {
  assert.equal(wsUrl({ protocol: 'http:', host: 'h:8080', search: '' }), 'ws://h:8080/ws');
  assert.equal(wsUrl({ protocol: 'https:', host: 'h', search: '?x=1' }), 'wss://h/ws');
  assert.equal(wsUrl({ protocol: 'https:', host: 'h', search: '?token=a%2Bb&x=1' }), 'wss://h/ws?token=a%2Bb');
});

test('newClientMsgId: a v4 UUID the server accepts as clientMsgId, with or without randomUUID', () => {
  const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
  const fallback = newClientMsgId({ getRandomValues: (b) => b.fill(0xff) });
  assert.match(fallback, uuid);
  assert.match(newClientMsgId(), uuid);
  assert.notEqual(newClientMsgId(), newClientMsgId());
  assert.ok(fallback.length <= 64 && !hasInvisible(fallback), 'within the server\'s clientMsgId rule');
});

test('typingText names one, two, then several', () => {
  assert.equal(typingText([]), '');
  assert.equal(typingText(['Ann']), 'Ann is typing…');
  assert.equal(typingText(['Ann', 'Bo']), 'Ann and Bo are typing…');
  assert.equal(typingText(['Ann', 'Bo', 'Cy']), 'Several people are typing…');
});

const msg = (id, seq, extra = {}) => ({ id, seq, content: id, ...extra });

test('MessageLog keeps seq order and drops duplicates by id or by seq', () => {
  const log = new MessageLog();
  assert.equal(log.add(msg('c', 3)), true);
  assert.equal(log.add(msg('a', 1)), true);
  assert.equal(log.add(msg('b', 2)), true);
  assert.equal(log.add(msg('b', 2)), false, 'same id');
  assert.equal(log.add(msg('b2', 2)), false, 'same seq: a replay overlapping what is shown');
  assert.equal(log.add(msg('dm', undefined)), true, 'DMs have no seq: they go last');
  assert.deepEqual(log.items.map((m) => m.id), ['a', 'b', 'c', 'dm']);
  assert.equal(log.oldestSeq, 1);
  log.reset([msg('x', 9)]);
  assert.deepEqual(log.items.map((m) => m.id), ['x']);
  assert.equal(log.add(msg('a', 1)), true, 'reset forgets ids and seqs');
});

test('MessageLog.restart keeps what is shown before the separator; the new stream counts from 1', () => {
  const log = new MessageLog();
  log.add(msg('a', 4));
  log.add(msg('b', 5));
  log.restart({ id: 'sep', separator: true });
  assert.deepEqual(log.items.map((m) => [m.id, m.seq]), [['a', -2], ['b', -1], ['sep', 0]]);
  assert.equal(log.oldestSeq, null, 'messages of the old stream are not a `before` of the new one');
  assert.equal(log.add(msg('n', 1)), true);
  assert.deepEqual(log.items.map((m) => m.id), ['a', 'b', 'sep', 'n']);
  assert.equal(log.oldestSeq, 1);
  assert.equal(log.newestSeq, 1);
});

test('Inflight.settle takes the oldest matching entry', () => {
  const q = new Inflight();
  q.push({ type: 'join_room', room: 'a' });
  q.push({ type: 'join_room', room: 'b' });
  assert.equal(q.settle('join_room', (e) => e.room === 'b').room, 'b');
  assert.equal(q.settle('join_room').room, 'a');
  assert.equal(q.settle('join_room'), null);
});

test('Inflight.forError: each targeted code refuses its commands, skipping older others', () => {
  const cases = {
    invalid_username: 'set_username', username_taken: 'set_username', username_locked: 'set_username',
    invalid_room: 'join_room', too_many_rooms: 'join_room',
    user_not_found: 'private_message', rate_limited: 'chat_message',
  };
  for (const [code, type] of Object.entries(cases)) {
    const q = new Inflight();
    q.push({ type: 'history', room: 'x' });
    q.push({ type: 'leave_room', room: 'x' });
    q.push({ type });
    q.push({ type: 'chat_message' });
    assert.equal(q.forError(code)?.type, type, code);
    assert.ok(errorTargets(code).includes(type), code);
  }
  const q = new Inflight();
  q.push({ type: 'dm_history', userId: 'u' });
  assert.equal(q.forError('user_not_found').type, 'dm_history', 'user_not_found also answers dm_history');
  q.push({ type: 'chat_message' });
  assert.equal(q.forError('username_taken'), null, 'no set_username waiting: refuses nothing');
  assert.equal(q.queue.length, 1, 'and takes nothing');
});

test('Inflight.forError: untargeted codes refuse the oldest waiting command', () => {
  for (const code of ['store_unavailable', 'store_timeout', 'not_in_room', 'invalid_field', 'too_many_requests',
    'username_required', 'invalid_json', undefined]) {
    const q = new Inflight();
    q.push({ type: 'leave_room', room: 'a' });
    q.push({ type: 'chat_message' });
    assert.equal(errorTargets(code), null, String(code));
    assert.equal(q.forError(code).type, 'leave_room', String(code));
  }
  assert.equal(new Inflight().forError('store_unavailable'), null, 'nothing waiting');
});

test('Inflight.nextRef: short, visible, never repeated (not even after clear)', () => {
  const q = new Inflight();
  const refs = new Set();
  for (let i = 0; i < 1000; i++) {
    if (i === 500) q.clear();
    const ref = q.nextRef();
    assert.ok(ref.length >= 1 && ref.length <= 64 && /^[\x21-\x7e]+$/.test(ref), ref);
    refs.add(ref);
  }
  assert.equal(refs.size, 1000);
});

test('Inflight.forError: a ref takes exactly its command, whatever the code and the order', () => {
  const q = new Inflight();
  q.push({ type: 'leave_room', room: 'a', ref: 'r1' });
  q.push({ type: 'chat_message', clientMsgId: 'm', ref: 'r2' });
  q.push({ type: 'set_username', ref: 'r3' });
  assert.equal(q.forError('username_taken', { ref: 'r2' }).ref, 'r2', 'not the set_username the code points at');
  assert.equal(q.forError('store_unavailable', { ref: 'r3' }).ref, 'r3', 'not the oldest');
  assert.equal(q.forError('store_unavailable', { ref: 'r2' }), null, 'already taken: nothing');
  assert.deepEqual(q.queue.map((e) => e.ref), ['r1']);
  // No ref: a clientMsgId names a message; otherwise the code decides, as before.
  q.push({ type: 'private_message', clientMsgId: 'd', ref: 'r4' });
  assert.equal(q.forError('store_unavailable', { clientMsgId: 'd' }).ref, 'r4');
  assert.equal(q.forError('store_unavailable', { clientMsgId: 'unknown' }).ref, 'r1', 'falls back to the oldest');
});

test('store_timeout is the one indeterminate code', () => {
  assert.deepEqual([...INDETERMINATE_CODES], ['store_timeout']);
});
