// Makes the README's screenshot of the web client (docs/screenshot.png, 1280×800): two
// users chatting in a room, member list visible. Not part of the test run:
//
//   cargo build -p chat-examples --example server && (cd e2e && npm ci && npm run screenshot)

import assert from 'node:assert/strict';
import path from 'node:path';
import {
  byTestId, eventually, joinRoom, launchBrowser, login, newUser, send, waitForMembers, waitForMessage,
} from './lib/browser.mjs';
import { REPO_ROOT, startServer } from './lib/server.mjs';

const out = path.join(REPO_ROOT, 'docs', 'screenshot.png');
const server = await startServer({ name: 'screenshot' });
const browser = await launchBrowser();
try {
  const alice = await newUser(browser, server.url, 'alice');
  const bob = await newUser(browser, server.url, 'bob');
  await login(alice, 'Alice');
  await login(bob, 'Bob');
  await joinRoom(bob, 'rust');
  await joinRoom(alice, 'general');
  await joinRoom(bob, 'general');
  await waitForMembers(bob, 2);

  const conversation = [
    [alice, 'Morning! Did the new release go out?'],
    [bob, 'Yes, tagged an hour ago. The reconnect fix is in.'],
    [alice, 'Nice. So a dropped connection resumes without losing anything?'],
    [bob, 'Exactly: the client rejoins with its last seq and the server replays what it missed, once and in order.'],
    [alice, 'And if the server restarts?'],
    [bob, 'New epoch, so it reloads the latest history and says so. No silent gaps.'],
  ];
  for (const [who, text] of conversation) {
    await send(who, text);
    await waitForMessage(bob, text);
  }
  // Alice starts typing her answer: the typing line under Bob's messages.
  await byTestId(alice.page, 'message-input').pressSequentially('Great', { delay: 20 });
  await eventually(async () => assert.equal(await byTestId(bob.page, 'typing-line').textContent(), 'Alice is typing…'));
  await bob.page.evaluate(() => document.activeElement?.blur());
  await bob.page.mouse.move(0, 0);
  await bob.page.screenshot({ path: out });
  console.log(`wrote ${out}`);
} finally {
  await browser.close();
  await server.kill();
}
