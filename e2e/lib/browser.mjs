// Headless Chromium (Debian's /usr/bin/chromium, driven by playwright-core, which never
// downloads a browser) and small helpers that speak the web client's data-testids.

import assert from 'node:assert/strict';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { ARTIFACTS } from './server.mjs';

export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

// No network but the loopback: every background service of Chromium stays off.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export const VIEWPORT = { width: 1280, height: 800 };

/** Default bound of every wait, in ms. */
export const WAIT = 10000;

export function launchBrowser() {
  return chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, timeout: 30000 });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
export { sleep };

/**
 * Retries `fn` (which throws, e.g. an assert) until it passes or `timeout` ms elapse;
 * then rethrows its last error. The bounded-wait primitive of these tests.
 */
export async function eventually(fn, { timeout = WAIT, interval = 100 } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    try {
      return await fn();
    } catch (e) {
      if (Date.now() + interval > deadline) {
        e.message = `(still failing after ${timeout} ms) ${e.message}`;
        throw e;
      }
      await sleep(interval);
    }
  }
}

/**
 * A user: its own browser context (own storage, own WebSocket) and page at 1280×800.
 * `frames` records every server frame the page receives (parsed JSON, with the index of
 * the WebSocket it came on), `errors` every uncaught page error.
 */
export async function newUser(browser, baseUrl, label) {
  const context = await browser.newContext({ viewport: VIEWPORT, colorScheme: 'light', locale: 'en-US' });
  context.setDefaultTimeout(WAIT);
  const page = await context.newPage();
  const user = { label, context, page, frames: [], sockets: 0, errors: [] };
  page.on('pageerror', (e) => user.errors.push(String(e)));
  page.on('websocket', (ws) => {
    const socket = ++user.sockets;
    ws.on('framereceived', ({ payload }) => {
      try {
        user.frames.push({ socket, ...JSON.parse(String(payload)) });
      } catch {
        user.frames.push({ socket, type: '(not json)', payload: String(payload) });
      }
    });
  });
  await page.goto(baseUrl);
  return user;
}

export const byTestId = (page, id) => page.locator(`[data-testid="${id}"]`);

/** The open connection's state as the UI shows it. */
export function connectionState(user) {
  return byTestId(user.page, 'connection-state').getAttribute('data-state');
}

export async function waitForConnection(user, state, timeout = WAIT) {
  await user.page.locator(`[data-testid="connection-state"][data-state="${state}"]`).waitFor({ timeout });
}

/** Picks a username and waits for the app (sidebar, composer) to show. */
export async function login(user, name) {
  const { page } = user;
  await waitForConnection(user, 'open');
  await byTestId(page, 'username-input').fill(name);
  await byTestId(page, 'username-submit').click();
  await byTestId(page, 'join-form').waitFor({ state: 'visible' });
  await eventually(async () => assert.equal(await byTestId(page, 'current-user').textContent(), name));
  user.name = name;
  user.id = await page.evaluate(() => window.__chat.myId);
  assert.ok(user.id, `${name} has a clientId`);
}

/** Joins a room through the join form and waits until it is joined and shown. */
export async function joinRoom(user, room) {
  const { page } = user;
  await byTestId(page, 'room-input').fill(room);
  await byTestId(page, 'room-join-submit').click();
  await page.locator(`[data-testid="room-item"][data-room="${room}"][data-status="joined"]`).waitFor();
  await eventually(async () => assert.equal(await byTestId(page, 'pane-title').textContent(), `# ${room}`));
}

/** Waits until `user` sees `count` members in the active room. */
export async function waitForMembers(user, count) {
  await eventually(async () => assert.equal(await byTestId(user.page, 'member-item').count(), count,
    `${user.label} sees ${count} members`));
}

/** Types a message in the composer and sends it with the Send button. */
export async function send(user, text) {
  await byTestId(user.page, 'message-input').fill(text);
  await byTestId(user.page, 'send-button').click();
}

/** The message list as the DOM shows it. */
export function messages(user) {
  return user.page.$$eval('[data-testid="message-list"] > [data-testid="message"]', (els) => els.map((e) => ({
    id: e.dataset.id ?? null,
    seq: e.dataset.seq == null ? null : Number(e.dataset.seq),
    userId: e.dataset.userId ?? null,
    pending: e.dataset.pending === 'true',
    status: e.dataset.status ?? null,
    own: e.classList.contains('own'),
    author: e.querySelector('[data-testid="message-author"]')?.textContent ?? null,
    content: e.querySelector('[data-testid="message-content"]')?.textContent ?? null,
  })));
}

/** Waits until the confirmed (not pending) message with `content` is in the list. */
export async function waitForMessage(user, content, timeout = WAIT) {
  return eventually(async () => {
    const found = (await messages(user)).filter((m) => m.content === content && !m.pending);
    assert.equal(found.length, 1, `${user.label} shows ${JSON.stringify(content)} exactly once, confirmed`);
    return found[0];
  }, { timeout });
}

/** Asserts the list has no duplicate id or seq and that seqs strictly increase. */
export async function assertGaplessOrder(user) {
  const list = (await messages(user)).filter((m) => !m.pending);
  const ids = list.map((m) => m.id);
  assert.equal(new Set(ids).size, ids.length, `${user.label}: duplicate data-id in ${JSON.stringify(ids)}`);
  const seqs = list.map((m) => m.seq);
  for (let i = 1; i < seqs.length; i++) {
    assert.ok(seqs[i] > seqs[i - 1], `${user.label}: seqs not strictly increasing: ${JSON.stringify(seqs)}`);
  }
  return list;
}

export async function shoot(user, name) {
  await user.page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`) });
}

/**
 * Runs one scenario: `body(makeUser)` creates users with `makeUser(label)`. Afterwards
 * (pass or fail) every user's page is saved as `<slug>-<label>.png` (`-FAILED` on
 * failure) and every context is closed; a page that threw an uncaught error fails it.
 */
export async function scenario(slug, browser, baseUrl, body) {
  const users = [];
  const makeUser = async (label) => {
    const u = await newUser(browser, typeof baseUrl === 'function' ? baseUrl() : baseUrl, label);
    users.push(u);
    return u;
  };
  try {
    await body(makeUser);
    for (const u of users) await shoot(u, `${slug}-${u.label}`);
    for (const u of users) assert.deepEqual(u.errors, [], `uncaught errors in ${u.label}'s page`);
  } catch (e) {
    for (const u of users) await shoot(u, `${slug}-${u.label}-FAILED`).catch(() => {});
    throw e;
  } finally {
    for (const u of users) await u.context.close().catch(() => {});
  }
}
