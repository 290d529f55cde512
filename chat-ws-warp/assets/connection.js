// connection.js — the client's one WebSocket: opens ws(s)://<host>/ws, parses frames,
// and reconnects after every close with exponential backoff and full jitter until told
// to stop (or until a close code says reconnecting cannot help).
//
// Kept apart from the chat logic so that the handlers and the store never touch a socket:
// they receive parsed frames and send through one function. Browser-only (WebSocket,
// window's online/offline events); resume cursors are the handlers' business, not this
// module's.

import { FATAL_CLOSES, backoffDelay } from './protocol.js';

/**
 * One WebSocket at a time, reopened with backoff after every close until `stop()`.
 *
 * Callbacks: `onFrame(obj)` for each JSON object received, `onOpen()`, `onClose(info)`
 * with `{code, reason, fatal}`, and `onState(state)` where state is `connecting`,
 * `open`, `reconnecting` (see `retryAt`), `offline` (the browser is offline; waits for
 * the `online` event) or `stopped`.
 */
export class Connection {
  constructor(url, callbacks) {
    this.url = url;
    this.cb = callbacks;
    this.ws = null;
    this.attempt = 0;
    this.timer = null;
    this.retryAt = 0;
    this.state = 'idle';
    this.stopped = false;
    this.opens = 0;
    window.addEventListener('online', () => {
      if (!this.stopped && this.ws === null) this.connect();
    });
    window.addEventListener('offline', () => {
      if (!this.stopped && this.ws === null) this.setState('offline');
    });
  }

  setState(state) {
    this.state = state;
    this.cb.onState?.(state);
  }

  get isOpen() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  /** Opens now, cancelling any pending retry. */
  connect() {
    clearTimeout(this.timer);
    this.timer = null;
    this.stopped = false;
    if (this.ws) return;
    this.setState('connecting');
    let ws;
    try {
      ws = new WebSocket(this.url);
    } catch {
      this.scheduleRetry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.opens++;
      this.setState('open');
      this.cb.onOpen?.();
    };
    ws.onmessage = (ev) => {
      if (typeof ev.data !== 'string') return;
      let obj;
      try {
        obj = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (obj && typeof obj === 'object' && typeof obj.type === 'string') this.cb.onFrame(obj);
    };
    ws.onclose = (ev) => {
      if (this.ws !== ws) return;
      this.ws = null;
      const fatal = FATAL_CLOSES.has(ev.code);
      this.cb.onClose?.({ code: ev.code, reason: ev.reason, fatal });
      if (fatal) this.stop();
      else if (!this.stopped) this.scheduleRetry();
    };
  }

  /** The session is healthy again: the next outage starts the backoff from the beginning. */
  markHealthy() {
    this.attempt = 0;
  }

  scheduleRetry() {
    if (navigator.onLine === false) {
      this.setState('offline');
      return;
    }
    const delay = backoffDelay(this.attempt++);
    this.retryAt = Date.now() + delay;
    this.timer = setTimeout(() => this.connect(), delay);
    this.setState('reconnecting');
  }

  /** Sends one object; false when the socket is not open (the caller keeps its state). */
  send(obj) {
    if (!this.isOpen) return false;
    this.ws.send(JSON.stringify(obj));
    return true;
  }

  /** Closes the socket; with `reconnect` the usual backoff follows (a test hook). */
  drop(reconnect = true) {
    if (!reconnect) this.stopped = true;
    this.ws?.close(4000, 'client drop');
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = null;
    this.ws?.close(1000);
    this.setState('stopped');
  }
}
