// Browser end-to-end tests of the web client against the real example server:
// chatting in a room, typing indicators, direct messages, HTML injection, keyboard use,
// retrying a refused message.
// One server and one headless Chromium for the file; each scenario has its own browser
// contexts (one per user) and its own room and usernames.

import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import {
  byTestId, eventually, joinRoom, launchBrowser, login, messages, scenario, send, shoot,
  sleep, waitForMembers, waitForMessage,
} from '../lib/browser.mjs';
import { startServer } from '../lib/server.mjs';

let server;
let browser;

before(async () => {
  server = await startServer({ name: 'chat' });
  browser = await launchBrowser();
});

after(async () => {
  await browser?.close().catch(() => {});
  await server?.kill();
});

const TEST = { timeout: 60000 };

test('1. two users chat in a room', TEST, async () => {
  await scenario('01-room-chat', browser, () => server.url, async (user) => {
    const a = await user('alice');
    const b = await user('bob');
    await login(a, 'Alice');
    await login(b, 'Bob');
    await joinRoom(a, 'lobby');
    await joinRoom(b, 'lobby');
    await waitForMembers(a, 2);
    await waitForMembers(b, 2);

    await send(a, 'Hello from Alice');

    const seen = await waitForMessage(b, 'Hello from Alice');
    assert.equal(seen.author, 'Alice');
    assert.equal(seen.userId, a.id);
    assert.equal(seen.own, false, 'not shown as own in Bob\'s browser');

    const own = await waitForMessage(a, 'Hello from Alice');
    assert.equal(own.pending, false);
    assert.equal(own.own, true, 'shown as own in Alice\'s browser');
    assert.equal(own.userId, a.id);
    assert.ok(own.id, 'confirmed: has the server id');
    assert.equal(own.id, seen.id, 'the same message in both browsers');
    assert.equal(own.seq, seen.seq);
    assert.equal(await a.page.locator('[data-testid="message"][data-pending="true"]').count(), 0);

    await send(b, 'Hi Alice, Bob here');
    const reply = await waitForMessage(a, 'Hi Alice, Bob here');
    assert.equal(reply.author, 'Bob');
    assert.ok(reply.seq > own.seq);
    assert.equal((await waitForMessage(b, 'Hi Alice, Bob here')).own, true);
  });
});

test('2. typing shows and clears', TEST, async () => {
  await scenario('02-typing', browser, () => server.url, async (user) => {
    const a = await user('tara');
    const b = await user('theo');
    await login(a, 'Tara');
    await login(b, 'Theo');
    await joinRoom(a, 'typing');
    await joinRoom(b, 'typing');
    await waitForMembers(b, 2);
    const line = byTestId(b.page, 'typing-line');
    const input = byTestId(a.page, 'message-input');
    assert.equal(await line.textContent(), '');

    // Typing → "Tara is typing…" in Bob's browser; never in her own.
    await input.pressSequentially('hel', { delay: 30 });
    await eventually(async () => assert.equal(await line.textContent(), 'Tara is typing…'), { timeout: 3000 });
    await shoot(b, '02-typing-theo-sees-indicator');
    assert.equal(await byTestId(a.page, 'typing-line').textContent(), '');

    // She stops: the client sends typing_stop after 2 s idle; Bob's line clears well
    // before his own 6 s expiry would clear it.
    await eventually(async () => assert.equal(await line.textContent(), ''), { timeout: 4500 });

    // Typing again shows it again; sending clears it at once (before the idle stop).
    await input.pressSequentially('lo there', { delay: 30 });
    await eventually(async () => assert.equal(await line.textContent(), 'Tara is typing…'), { timeout: 3000 });
    await input.press('Enter');
    await eventually(async () => assert.equal(await line.textContent(), ''), { timeout: 1500 });
    await waitForMessage(b, 'hello there');
  });
});

test('3. a direct message reaches only its target', TEST, async () => {
  await scenario('03-direct-message', browser, () => server.url, async (user) => {
    const a = await user('dana');
    const b = await user('dave');
    const c = await user('carol');
    await login(a, 'Dana');
    await login(b, 'Dave');
    await login(c, 'Carol');
    for (const u of [a, b, c]) await joinRoom(u, 'team');
    for (const u of [a, b, c]) await waitForMembers(u, 3);

    // Dave opens a DM by clicking Dana in the member list.
    await b.page.locator(`[data-testid="member-item"][data-user-id="${a.id}"] button`).click();
    await eventually(async () => assert.equal(await byTestId(b.page, 'pane-title').textContent(), '@ Dana'));
    const secret = 'psst: the launch code is 0000';
    await send(b, secret);
    const sent = await waitForMessage(b, secret);
    assert.equal(sent.own, true);

    // Dana: a DM entry with an unread count, while her pane still shows the room.
    const entry = a.page.locator(`[data-testid="dm-item"][data-user-id="${b.id}"]`);
    await entry.waitFor();
    const badge = entry.locator('[data-testid="unread-count"]');
    await eventually(async () => {
      assert.equal(await badge.isVisible(), true);
      assert.equal(await badge.textContent(), '1');
    });
    assert.match(await entry.textContent(), /Dave/);
    assert.equal(await byTestId(a.page, 'pane-title').textContent(), '# team');
    assert.ok(!(await messages(a)).some((m) => m.content === secret), 'the DM is not in the room pane');
    await shoot(a, '03-direct-message-dana-unread');

    await entry.locator('button').click();
    await eventually(async () => assert.equal(await byTestId(a.page, 'pane-title').textContent(), '@ Dave'));
    const got = await waitForMessage(a, secret);
    assert.equal(got.author, 'Dave');
    assert.equal(got.own, false);
    await eventually(async () => assert.equal(await badge.isVisible(), false, 'read once opened'));

    // Carol, in the same room, sees nothing of it: no DM entry, no text, no frame.
    await sleep(500);
    assert.equal(await byTestId(c.page, 'dm-item').count(), 0);
    assert.ok(!(await c.page.evaluate(() => document.body.innerText)).includes(secret));
    const leaked = c.frames.filter((f) => JSON.stringify(f).includes(secret));
    assert.deepEqual(leaked, [], 'Carol received no frame carrying the DM');
    assert.deepEqual(await c.page.evaluate(() => window.__chat.dms), {});
  });
});

test('4. HTML in messages and names is shown as text, never run', TEST, async () => {
  const payloads = [
    '<img src=x onerror="window.__pwned=1">',
    '<script>window.__pwned=2</script>',
  ];
  await scenario('04-xss', browser, () => server.url, async (user) => {
    const a = await user('mallory');
    const b = await user('victor');
    const evilName = '<i>Mal</i>';
    await login(a, evilName);
    await login(b, 'Victor');
    await joinRoom(a, 'xss');
    await joinRoom(b, 'xss');
    await waitForMembers(b, 2);
    for (const p of payloads) await send(a, p);

    for (const p of payloads) {
      const m = await waitForMessage(b, p);
      assert.equal(m.author, evilName, 'the author is shown literally too');
    }
    await waitForMessage(a, payloads[1]);
    // Give a broken image's onerror (or anything else) time to run, if it could.
    await sleep(500);
    for (const u of [a, b]) {
      assert.equal(await u.page.evaluate(() => typeof window.__pwned), 'undefined', `${u.label}: no script ran`);
      assert.equal(await u.page.locator('[data-testid="message-list"] img').count(), 0);
      assert.equal(await u.page.locator('[data-testid="message-list"] script').count(), 0);
      assert.equal(await u.page.locator('[data-testid="member-list"] i, [data-testid="message-list"] i').count(), 0);
    }
    const members = await byTestId(b.page, 'member-list').textContent();
    assert.ok(members.includes(evilName), `member list shows the name literally: ${members}`);
  });
});

/** Presses Tab until the element with `testid` has the focus (0 presses if it has). */
async function tabTo(page, testid, max = 20) {
  for (let i = 0; i <= max; i++) {
    const focused = await page.evaluate(() => document.activeElement?.dataset?.testid ?? null);
    if (focused === testid) return i;
    await page.keyboard.press('Tab');
  }
  return assert.fail(`${testid} not reached with ${max} Tab presses`);
}

test('6. keyboard only: name, room and message without the mouse', TEST, async () => {
  await scenario('06-keyboard', browser, () => server.url, async (user) => {
    const a = await user('kim');
    const { page } = a;
    await page.locator('[data-testid="connection-state"][data-state="open"]').waitFor();
    // Start from the top of the document rather than the autofocused field.
    await page.evaluate(() => document.activeElement?.blur());
    await tabTo(page, 'username-input');
    await page.keyboard.type('Kim');
    await page.keyboard.press('Enter');
    await byTestId(page, 'join-form').waitFor({ state: 'visible' });

    await tabTo(page, 'room-input');
    await page.keyboard.type('keys');
    await page.keyboard.press('Enter');
    await page.locator('[data-testid="room-item"][data-room="keys"][data-status="joined"]').waitFor();

    await tabTo(page, 'message-input');
    await page.keyboard.type('typed, not clicked');
    await page.keyboard.press('Enter');
    const m = await waitForMessage(a, 'typed, not clicked');
    assert.equal(m.own, true);
    assert.equal(m.author, 'Kim');
    assert.equal(await byTestId(page, 'message-input').inputValue(), '', 'the composer is cleared');
  });
});

test('7. a refused message stays with Retry and Discard; Retry resends it under the same clientMsgId', TEST, async () => {
  await scenario('07-retry', browser, () => server.url, async (user) => {
    const a = await user('rita');
    await login(a, 'Rita');
    await joinRoom(a, 'retry');
    // More than the default burst of 10 at once: the rest is refused with rate_limited.
    const texts = Array.from({ length: 13 }, (_, i) => `burst ${i}`);
    await a.page.evaluate((list) => {
      const input = document.querySelector('[data-testid="message-input"]');
      const form = document.querySelector('[data-testid="composer"]');
      for (const text of list) {
        input.value = text;
        form.requestSubmit();
      }
    }, texts);
    const failed = a.page.locator('[data-testid="message"][data-status="failed"]');
    await eventually(async () => assert.ok((await failed.count()) >= 1, 'some of the burst is refused'));
    await eventually(async () => assert.equal(
      (await messages(a)).filter((m) => m.pending && m.status !== 'failed').length, 0, 'the rest is confirmed'));
    const status = await failed.first().locator('[data-testid="message-status"]').textContent();
    assert.match(status, /^Not sent: .+\. Retry after \d+ s\./);

    // Keep the first refused message, discard the others.
    const keep = await failed.first().getAttribute('data-client-msg-id');
    const keptText = await failed.first().locator('[data-testid="message-content"]').textContent();
    // One at a time, each click after the render of the previous one: a render removes a
    // row, and a click aimed before it could land on the row that moved into its place.
    for (let n = await failed.count(); n > 1; n--) {
      await failed.last().locator('[data-testid="discard-button"]').click();
      await eventually(async () => assert.equal(await failed.count(), n - 1));
    }

    // Retry until the rate limit lets it through (each refusal says when to try again).
    const kept = a.page.locator(`[data-client-msg-id="${keep}"]`);
    await eventually(async () => {
      if ((await kept.getAttribute('data-status', { timeout: 1000 }).catch(() => null)) === 'failed') {
        await kept.locator('[data-testid="retry-button"]').click();
      }
      await waitForMessage(a, keptText, 200);
    }, { timeout: 15000, interval: 500 });
    const echoes = a.frames.filter((f) => f.type === 'message_received' && f.clientMsgId === keep);
    assert.equal(echoes.length, 1, 'stored once, under the id of the first attempt');
    assert.equal(echoes[0].content, keptText);
    const shown = (await messages(a)).filter((m) => !m.pending).map((m) => m.content);
    const discarded = texts.filter((t) => !shown.includes(t));
    assert.ok(discarded.length >= 1, 'the discarded ones are gone');
    assert.equal(await a.page.locator('[data-testid="message"][data-pending="true"]').count(), 0);
    await shoot(a, '07-retry');
  });
});
