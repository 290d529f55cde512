// Reconnects as a person would live them: the connection drops and comes back (resume,
// `recovered: true`, nothing reloaded), and the server is killed and restarted on the
// same port (in-memory store: a new epoch, `recovered: false`, "history reloaded").
// Either way every message sent while a client was away, or after the restart, reaches
// it exactly once and in order.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  assertGaplessOrder, byTestId, eventually, joinRoom, launchBrowser, login, messages, scenario,
  send, shoot, waitForConnection, waitForMembers, waitForMessage,
} from '../lib/browser.mjs';
import { startServer } from '../lib/server.mjs';

let browser;
const servers = [];

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close().catch(() => {});
  for (const s of servers) await s.kill();
});

async function start(name, port = 0, args = []) {
  const s = await startServer({ name, port, args });
  servers.push(s);
  return s;
}

const TEST = { timeout: 90000 };
const RECONNECT_WAIT = 30000; // backoff with full jitter, capped at 15 s

/** The join replies (`message_history` with `recovered`) `user` received for `room`. */
const joinReplies = (user, room) => user.frames.filter((f) => f.type === 'message_history' && f.room === room && 'recovered' in f);

const contents = async (user) => (await messages(user)).map((m) => m.content);

async function waitRejoined(user, room) {
  await waitForConnection(user, 'open', RECONNECT_WAIT);
  await user.page.locator(`[data-testid="room-item"][data-room="${room}"][data-status="joined"]`)
    .waitFor({ timeout: RECONNECT_WAIT });
}

test('5a. a dropped connection resumes: missed messages once, in order, no reload', TEST, async () => {
  const server = await start('drop');
  await scenario('05a-drop-resume', browser, server.url, async (user) => {
    const a = await user('anna');
    const b = await user('ben');
    await login(a, 'Anna');
    await login(b, 'Ben');
    await joinRoom(a, 'resume');
    await joinRoom(b, 'resume');
    await waitForMembers(a, 2);
    const before = ['one', 'two'];
    for (const t of before) await send(a, t);
    for (const t of before) await waitForMessage(b, t);
    const cursor = await b.page.evaluate(() => window.__chat.rooms.resume);
    assert.equal(cursor.lastSeq, 2);

    // Ben's connection drops, and stays down (the browser is offline) while Anna sends,
    // so the three messages can only reach him through the resume.
    await b.context.setOffline(true);
    await b.page.evaluate(() => window.__chat.dropConnection());
    await eventually(async () => assert.notEqual(await b.page.evaluate(() => window.__chat.connection), 'open'));
    await waitForMembers(a, 1); // the server saw him go
    const missed = ['three', 'four', 'five'];
    for (const t of missed) await send(a, t);
    for (const t of missed) await waitForMessage(a, t);
    assert.ok(!(await contents(b)).includes('three'), 'Ben cannot have it yet');
    await shoot(b, '05a-drop-resume-ben-offline');

    await b.context.setOffline(false);
    await waitRejoined(b, 'resume');
    await eventually(async () => assert.deepEqual(await contents(b), [...before, ...missed]));
    const list = await assertGaplessOrder(b);
    assert.deepEqual(list.map((m) => m.seq), [1, 2, 3, 4, 5]);

    const replies = joinReplies(b, 'resume');
    const last = replies.at(-1);
    assert.equal(replies.length, 2, 'one join reply per connection');
    assert.equal(last.recovered, true, 'the rejoin resumed');
    assert.equal(last.epoch, cursor.epoch);
    assert.deepEqual(last.messages.map((m) => m.content), missed, 'exactly the missed messages were replayed');
    assert.equal(await byTestId(b.page, 'history-reloaded').isVisible(), false, 'no reload notice');
    assert.equal((await b.page.evaluate(() => window.__chat.rooms.resume)).epoch, cursor.epoch);

    // Live traffic goes on after the resume, both ways.
    await send(a, 'six');
    await waitForMessage(b, 'six');
    await send(b, 'back');
    await waitForMessage(a, 'back');
    await assertGaplessOrder(b);
    await assertGaplessOrder(a);
  });
});

test('5c. messages racing a reconnect arrive once and in order', TEST, async (t) => {
  // No offline emulation here: Anna's messages race Ben's close, reconnect and resume,
  // so some may be replayed and some arrive live. (Rate limit off: many sends quickly.)
  const server = await start('race', 0, ['--message-rate', 'off']);
  await scenario('05c-reconnect-race', browser, server.url, async (user) => {
    const a = await user('ada');
    const b = await user('bo');
    await login(a, 'Ada');
    await login(b, 'Bo');
    await joinRoom(a, 'race');
    await joinRoom(b, 'race');
    await waitForMembers(a, 2);
    await send(a, 'start');
    await waitForMessage(b, 'start');
    const epoch = (await b.page.evaluate(() => window.__chat.rooms.race)).epoch;

    const expected = ['start'];
    const burst = (list) => a.page.evaluate((texts) => {
      const input = document.querySelector('[data-testid="message-input"]');
      const form = document.querySelector('[data-testid="composer"]');
      for (const text of texts) {
        input.value = text;
        form.requestSubmit();
      }
    }, list);
    // Anna's burst goes out at a different moment of Bo's reconnect each round: as the
    // old socket closes, as the new one opens, and as the new one's rejoin is sent.
    const moments = {
      'at the drop': async () => {},
      'as the new socket opens': (sockets) => eventually(() => assert.ok(b.sockets > sockets),
        { timeout: RECONNECT_WAIT, interval: 5 }),
      'as the rejoin is sent': (sockets) => eventually(() => assert.ok(
        b.frames.some((f) => f.socket > sockets && f.type === 'username_set'),
      ), { timeout: RECONNECT_WAIT, interval: 5 }),
    };
    let round = 0;
    for (const [moment, wait] of Object.entries(moments)) {
      round++;
      const texts = [1, 2, 3].map((i) => `round ${round} message ${i}`);
      expected.push(...texts);
      const sockets = b.sockets;
      await b.page.evaluate(() => window.__chat.dropConnection());
      await wait(sockets);
      await burst(texts);
      await eventually(() => assert.ok(b.sockets > sockets, 'Bo reconnected'), { timeout: RECONNECT_WAIT });
      await waitRejoined(b, 'race');
      await eventually(async () => assert.deepEqual(await contents(b), expected), { timeout: 15000 });
      await assertGaplessOrder(b);
      const last = joinReplies(b, 'race').at(-1);
      assert.equal(last.recovered, true, `round ${round}: resumed`);
      assert.equal(last.epoch, epoch);
      t.diagnostic(`${moment}: ${last.messages.length} of 3 replayed by the resume, ${3 - last.messages.length} live`);
    }
    assert.equal(await byTestId(b.page, 'history-reloaded').isVisible(), false, 'no reload notice');
    const seqs = (await messages(b)).map((m) => m.seq);
    assert.deepEqual(seqs, expected.map((_, i) => i + 1));
  });
});

test('5b. a server restart: clients reconnect, rejoin, reload; nothing after it is lost', TEST, async () => {
  let server = await start('restart-1');
  const { port } = server;
  await scenario('05b-server-restart', browser, server.url, async (user) => {
    const a = await user('rita');
    const b = await user('rob');
    await login(a, 'Rita');
    await login(b, 'Rob');
    await joinRoom(a, 'lobby');
    await joinRoom(b, 'lobby');
    await waitForMembers(b, 2);
    await send(a, 'before 1');
    await send(b, 'before 2');
    await send(a, 'before 3');
    for (const t of ['before 1', 'before 2', 'before 3']) await waitForMessage(b, t);
    const oldEpoch = (await b.page.evaluate(() => window.__chat.rooms.lobby)).epoch;

    // Crash: SIGKILL, no close frames. Both browsers notice and keep retrying.
    await server.kill('SIGKILL');
    await waitForConnection(b, 'reconnecting');
    await waitForConnection(a, 'reconnecting');
    // Rita writes while the server is down: the message waits in her browser.
    await send(a, 'during the outage');
    await a.page.locator('[data-testid="message"][data-pending="true"][data-status="queued"]').waitFor();
    await shoot(b, '05b-server-restart-rob-reconnecting');

    // The same port, a fresh process: its in-memory store has a new epoch.
    server = await start('restart-2', port);
    await waitRejoined(a, 'lobby');
    await waitRejoined(b, 'lobby');
    for (const u of [a, b]) {
      await byTestId(u.page, 'history-reloaded').waitFor({ timeout: 5000 });
      await waitForMembers(u, 2);
    }
    const last = joinReplies(b, 'lobby').at(-1);
    assert.equal(last.recovered, false, 'a new epoch cannot be resumed');
    assert.notEqual(last.epoch, oldEpoch);
    assert.notEqual((await b.page.evaluate(() => window.__chat.rooms.lobby)).epoch, oldEpoch);

    // The message queued during the outage is delivered once, then new ones live.
    await waitForMessage(b, 'during the outage', 15000);
    const after = ['after 1', 'after 2', 'after 3'];
    for (const t of after) await send(a, t);
    for (const t of after) await waitForMessage(b, t);
    const expected = ['during the outage', ...after];
    await eventually(async () => assert.deepEqual(await contents(b), expected));
    await eventually(async () => assert.deepEqual(await contents(a), expected));
    const list = await assertGaplessOrder(b);
    assert.deepEqual(list.map((m) => m.seq), [1, 2, 3, 4]);
    await assertGaplessOrder(a);
    assert.equal(await a.page.locator('[data-testid="message"][data-pending="true"]').count(), 0);
  });
});

test('5d. a stream_reset keeps what is shown, above a "History restarted" separator', TEST, async () => {
  // A tiny store budget: filling another room evicts the idle one's stream.
  const server = await start('reset', 0, ['--store-max-bytes', '3000', '--message-rate', 'off']);
  await scenario('05d-stream-reset', browser, server.url, async (user) => {
    const a = await user('anna');
    const b = await user('ben');
    await login(a, 'Anna');
    await login(b, 'Ben');
    await joinRoom(a, 'keep');
    await joinRoom(b, 'keep');
    await waitForMembers(b, 2);
    await send(a, 'old one');
    await waitForMessage(b, 'old one');
    await joinRoom(a, 'fill');
    for (let i = 0; i < 15; i++) {
      await send(a, `fill ${i} ${'x'.repeat(200)}`);
    }
    await waitForMessage(a, `fill 14 ${'x'.repeat(200)}`);
    await send(b, 'new one');
    await waitForMessage(b, 'new one');
    await eventually(async () => assert.ok(b.frames.some((f) => f.type === 'stream_reset' && f.room === 'keep')));
    assert.deepEqual(await contents(b), ['old one', 'new one'], 'the old message stays');
    assert.equal(await byTestId(b.page, 'history-restarted').isVisible(), true);
    await shoot(b, '05d-stream-reset-separator');
  });
});
