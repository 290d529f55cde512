// render.js — draws the store into the page; DOM only. It reads the store and never
// changes it (the one exception, `takeAnchor`, reads a one-shot "keep the scroll place"
// flag through state.js), and it knows nothing of the socket.
//
// Why a module of its own: the page is the only part that cannot run in Node, so
// everything that decides *what* to show lives in state.js / handlers.js and this file
// only decides *how*. Every user-provided string reaches the page through textContent
// or attribute values, never through HTML parsing. Elements are cached (per message,
// per list item) so a render after every frame stays cheap and keeps focus and
// selection.

import { typingText } from './protocol.js';
import { activeConv, convKey, isOwn, takeAnchor } from './state.js';

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

// Render-side caches, keyed by the store's objects so they go when those go.
const messageEls = new WeakMap(); // conversation → {version, els: Map<message id, li>}
const pendingEls = new WeakMap(); // pending message → {sig, el}
let stickNext = false;

/** The next render scrolls the message list to the bottom (the user just sent). */
export function stickToBottom() {
  stickNext = true;
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

function messageEl(s, conv, m) {
  const userId = conv.kind === 'room' ? m.userId : m.fromId;
  const author = conv.kind === 'room' ? m.username : m.fromUsername;
  const d = new Date(m.timestamp);
  return h('li', {
    class: isOwn(s, userId) ? 'msg own' : 'msg', 'data-testid': 'message',
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

/** The status line of a pending message: failed ones offer Retry and Discard. */
function pendingStatus(p) {
  const status = h('div', { class: 'status', 'data-testid': 'message-status' });
  if (p.status === 'failed') {
    const wait = p.retryAfterMs ? ` Retry after ${Math.ceil(p.retryAfterMs / 1000)} s.` : '';
    // After store_timeout the server may have stored it: say so rather than "Not sent".
    const what = p.uncertain ? 'Maybe not sent' : 'Not sent';
    status.append(h('span', { class: 'failed', text: `${what}: ${p.error}.${wait}` }), ' ',
      h('button', { type: 'button', class: 'link-button', 'data-action': 'retry', 'data-testid': 'retry-button' }, 'Retry'),
      ' ',
      h('button', { type: 'button', class: 'link-button', 'data-action': 'discard', 'data-testid': 'discard-button' }, 'Discard'));
  } else {
    status.textContent = p.status === 'sending' ? 'Sending…' : 'Waiting for connection…';
  }
  return status;
}

function pendingEl(s, p) {
  const sig = `${p.status}|${p.error}|${p.retryAt}|${p.uncertain}`;
  const cached = pendingEls.get(p);
  if (cached && cached.sig === sig) return cached.el;
  const el = h('li', {
    class: `msg own pending ${p.status}`, 'data-testid': 'message', 'data-pending': 'true',
    'data-status': p.status, 'data-client-msg-id': p.clientMsgId,
  },
  h('div', { class: 'meta' },
    h('span', { class: 'author', 'data-testid': 'message-author', text: s.username ?? '' }),
    h('time', { text: formatTime(p.createdAt.toISOString()) })),
  h('div', { class: 'content', 'data-testid': 'message-content', text: p.content }),
  pendingStatus(p));
  pendingEls.set(p, { sig, el });
  return el;
}

/** The element cache of a conversation's confirmed messages (dropped when its log is replaced). */
function elsOf(conv) {
  let c = messageEls.get(conv);
  if (!c || c.version !== conv.logVersion) {
    c = { version: conv.logVersion, els: new Map() };
    messageEls.set(conv, c);
  }
  return c.els;
}

function renderMessages(s, conv) {
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
  const els = elsOf(conv);
  const nodes = conv.log.items.map((m) => {
    let n = els.get(m.id);
    if (!n) {
      n = m.separator
        ? h('li', { class: 'separator', role: 'separator', 'data-testid': 'history-restarted', text: 'History restarted' })
        : messageEl(s, conv, m);
      els.set(m.id, n);
    }
    return n;
  });
  for (const p of conv.pending) nodes.push(pendingEl(s, p));
  placeChildren(list, nodes);
  if (takeAnchor(conv)) {
    scroller.scrollTop = scroller.scrollHeight - fromBottom;
  } else if (stick || atBottom) {
    scroller.scrollTop = scroller.scrollHeight;
  }
}

/** The connection indicator; `retryAt`: when the next reconnect attempt is due (ms). */
export function renderConnection(s, { retryAt }) {
  const c = $('conn');
  let state = s.connState;
  let text;
  if (state === 'open' && s.wantName && !s.ready) state = 'connecting';
  if (state === 'stopped') state = 'offline';
  switch (state) {
    case 'open': text = 'Online'; break;
    case 'connecting': text = s.reconnects > 0 || s.ready === false && s.username ? 'Reconnecting…' : 'Connecting…'; break;
    case 'reconnecting': text = `Connection lost. ${s.closeInfo} Reconnecting`.replace(/\s+/g, ' '); break;
    default: text = navigator.onLine === false ? 'Offline: waiting for the network' : `Offline. ${s.closeInfo}`;
  }
  c.dataset.state = state;
  if ($('conn-text').textContent !== text) $('conn-text').textContent = text;
  const secs = Math.max(0, Math.ceil((retryAt - Date.now()) / 1000));
  $('conn-countdown').textContent = state === 'reconnecting' ? `in ${secs}s` : '';
  $('reconnect-now').hidden = !(state === 'reconnecting' || (state === 'offline' && s.connState === 'stopped'));
}

function renderField(id, message) {
  const e = $(id);
  e.hidden = message == null;
  if (message != null) e.textContent = message;
}

/**
 * Draws everything. `env`: `retryAt` (see `renderConnection`), and the click actions of
 * the lists, `openRoom(name)`, `openDm(userId)` and `messageMember(userId, username)`.
 */
export function render(s, env) {
  renderConnection(s, env);
  $('login').hidden = s.view.screen !== 'login';
  $('app').hidden = s.view.screen !== 'app';
  renderField('username-error', s.view.usernameError);
  renderField('join-error', s.view.joinError);
  $('banner').hidden = !s.banner;
  $('banner-text').textContent = s.banner?.text ?? '';
  $('whoami').textContent = s.username ?? '';

  const conv = activeConv(s);
  const rooms = [...s.rooms.values()];
  syncList($('room-list'), rooms.map((r) => r.name),
    (name) => navItem('room-item', 'data-room', name, () => env.openRoom(name)),
    (li, name) => {
      const r = s.rooms.get(name);
      li.dataset.status = r.status;
      updateNavItem(li, `# ${name}`, r.unread, conv === r, r.status === 'joined' ? '' : `, ${r.status}`);
    });
  $('rooms-empty').hidden = rooms.length > 0;

  const dms = [...s.dms.values()];
  syncList($('dm-list'), dms.map((d) => d.userId),
    (id) => navItem('dm-item', 'data-user-id', id, () => env.openDm(id)),
    (li, id) => {
      const d = s.dms.get(id);
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
    : isRoom && conv.status !== 'joined' && s.ready ? 'Rejoining…' : '';
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
  renderMessages(s, conv);

  // Members of the active room.
  const members = isRoom ? [...conv.members.entries()] : [];
  members.sort((a, b) => Number(isOwn(s, b[0])) - Number(isOwn(s, a[0])) || a[1].localeCompare(b[1]));
  syncList($('member-list'), members.map(([id]) => id),
    (id) => {
      const li = h('li', { 'data-testid': 'member-item', 'data-user-id': id });
      li.parts = {};
      return li;
    },
    (li, id) => {
      const name = conv.members.get(id) ?? '';
      const own = isOwn(s, id);
      if (li.parts.name === name && li.parts.own === own) return;
      li.parts = { name, own };
      li.replaceChildren(own
        ? h('span', { class: 'member self', text: `${name} (you)` })
        : h('button', { type: 'button', class: 'nav-button member', 'aria-label': `Message ${name}`,
          onclick: () => env.messageMember(id, conv.members.get(id) ?? name) }, name));
    });

  // Typing line of the active room.
  const names = isRoom ? [...conv.typing.values()].map((t) => t.username) : [];
  const line = typingText(names);
  if ($('typing').textContent !== line) $('typing').textContent = line;

  const unread = [...s.rooms.values(), ...s.dms.values()].reduce((n, c) => n + c.unread, 0);
  document.title = unread ? `(${unread}) Chat` : 'Chat';
}
