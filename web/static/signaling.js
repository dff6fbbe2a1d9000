// Signaling for the browser: the same protocol and rules as the Rust core (protocol/src/protocol.md,
// core/src/call/machine.rs; the shared ones in rules.js).
//
// - Frames from the server are numbered: the last `seq` seen goes back in `join.resume`, so nothing
//   is lost or repeated after a reconnect.
// - Frames this page sends are numbered too (all but `join`, `ping` and `quality`) and kept until
//   the server confirms them (`ack` for chat, `joined.last_client_seq` after a reconnect). On each
//   connection they wait for `joined`, then the unconfirmed ones go again in order, then new ones.
// - Reconnects wait reconnectBackoffMs(attempt). A WebSocket that fails to open
//   WEBSOCKET_FAILURES_BEFORE_FALLBACK times in a row moves signaling to the HTTP long-poll
//   fallback; while there, the WebSocket is tried again with the same backoff and signaling goes
//   back to it as soon as one opens (a browser cannot tell a proxy that strips upgrades from a
//   server outage: both just fail to open).
// - Over HTTP, frames are posted one at a time, in order (an offer before its candidates); a post
//   that fails loses the connection, and the reconnect resends what the server did not confirm.
"use strict";

/** Unconfirmed frames kept at most; negotiation frames go first when full (chat is what a person typed). */
const UNCONFIRMED_LIMIT = 512;

class Signaling {
  constructor({ token, websocketPath, signalPath, onFrame, onStatus, onChatPending = () => {} }) {
    Object.assign(this, { token, websocketPath, signalPath, onFrame, onStatus, onChatPending });
    this.lastSeq = 0; // highest server seq handled
    this.joinedOnce = false;
    this.nextSeq = 1;
    this.unconfirmed = []; // { seq, frame }, oldest first
    this.joinedHere = false; // `joined` answered on the current connection
    this.attempts = 0;
    this.transport = "websocket";
    this.websocketFailures = 0; // in a row, never opened
    this.generation = 0; // the current connection; callbacks of older ones are ignored
    this.closed = false;
    this.ws = null;
    this.http = null; // { generation, queue, posting, poll: AbortController, open }
    this.probe = null; // a WebSocket tried while on HTTP
    this.probeAttempts = 0;
    this.httpJoin = null; // the HTTP join's post while in flight
  }

  start() {
    if (this.closed) return;
    this.dropConnections();
    const generation = ++this.generation;
    if (this.transport === "websocket") this.openWebSocket(generation); else this.openHttp(generation);
    this.keepalive = this.keepalive || setInterval(() => this.send({ type: "ping" }), 15000);
  }

  joinFrame() {
    const frame = { type: "join", token: this.token };
    if (this.joinedOnce) frame.resume = { last_seq: this.lastSeq };
    return frame;
  }

  receive(frame) {
    if (typeof frame.seq === "number") {
      if (frame.seq <= this.lastSeq) return; // a replay we already handled
      this.lastSeq = frame.seq;
    }
    if (frame.type === "joined") this.onJoined(frame);
    else if (frame.type === "ack") this.confirm((c) => c.seq !== frame.client_seq);
    this.onFrame(frame);
  }

  onJoined(frame) {
    this.attempts = 0;
    if (!frame.resumed) {
      // A fresh start on the server: a new negotiation follows, stale SDP and candidates go; chat stays.
      this.lastSeq = 0;
      this.unconfirmed = this.unconfirmed.filter((c) => c.frame.type === "chat");
    }
    const handled = frame.last_client_seq || 0;
    if (this.nextSeq <= handled) {
      // The server saw higher numbers from an earlier page (a reload): none of ours reached it.
      const shift = handled + 1 - (this.unconfirmed[0]?.seq ?? this.nextSeq);
      this.unconfirmed.forEach((c) => (c.seq += shift));
      this.nextSeq += shift;
    } else {
      this.unconfirmed = this.unconfirmed.filter((c) => c.seq > handled);
    }
    this.joinedOnce = true;
    this.joinedHere = true;
    this.onStatus("connected");
    this.unconfirmed.forEach((c) => this.transmit({ ...c.frame, seq: c.seq }));
    this.confirm(() => true);
  }

  /** Keeps the unconfirmed frames `keep` accepts; tells how many chat messages wait. */
  confirm(keep) {
    this.unconfirmed = this.unconfirmed.filter(keep);
    this.onChatPending(this.unconfirmed.filter((c) => c.frame.type === "chat").length);
  }

  /** Sends a chat message; kept (and resent after reconnects) until the server stored it. */
  sendChat(text) {
    this.send({ type: "chat", text });
  }

  /** Sends a frame: numbered and kept until confirmed, except `ping` and `quality` (only the latest matters). */
  send(frame) {
    if (frame.type === "ping" || frame.type === "quality") {
      if (this.joinedHere) this.transmit(frame);
      return;
    }
    if (this.unconfirmed.length >= UNCONFIRMED_LIMIT) {
      const other = this.unconfirmed.findIndex((c) => c.frame.type !== "chat");
      this.unconfirmed.splice(Math.max(other, 0), 1);
    }
    const numbered = { seq: this.nextSeq++, frame };
    this.unconfirmed.push(numbered);
    if (frame.type === "chat") this.confirm(() => true);
    if (this.joinedHere) this.transmit({ ...frame, seq: numbered.seq });
  }

  /** Puts a frame on the current connection. */
  transmit(frame) {
    if (this.transport === "websocket") {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
    } else if (this.http && this.http.open) {
      this.http.queue.push(frame);
      this.pumpHttp(this.http);
    }
  }

  /** The current connection is gone: reconnect after the backoff. */
  lost(generation) {
    if (generation !== this.generation || this.closed) return;
    this.generation += 1;
    this.joinedHere = false;
    this.dropConnections();
    this.attempts += 1;
    this.onStatus("reconnecting");
    this.reconnectTimer = setTimeout(() => this.start(), reconnectBackoffMs(this.attempts));
  }

  dropConnections() {
    if (this.ws) { const ws = this.ws; this.ws = null; ws.close(); }
    if (this.http) { this.http.poll.abort(); this.http.open = false; this.http = null; }
  }

  // ---------- WebSocket ----------
  openWebSocket(generation) {
    const ws = this.newWebSocket();
    this.ws = ws;
    let opened = false;
    ws.onopen = () => {
      if (generation !== this.generation) return ws.close();
      opened = true;
      this.websocketFailures = 0;
      this.useWebSocket(ws, generation);
    };
    ws.onclose = () => {
      if (generation !== this.generation || this.closed) return;
      if (!opened && ++this.websocketFailures >= WEBSOCKET_FAILURES_BEFORE_FALLBACK) {
        // The WebSocket does not open here (a proxy, or the server is down): try the fallback at once.
        this.ws = null;
        this.setTransport("http");
        this.probeAttempts = 0;
        this.scheduleProbe();
        this.start();
        return;
      }
      this.lost(generation);
    };
  }

  /** The transport signaling uses from now on (`document.body.dataset.signalingTransport`, for tests). */
  setTransport(transport) {
    this.transport = transport;
    document.body.dataset.signalingTransport = transport;
  }

  newWebSocket() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return new WebSocket(`${scheme}//${location.host}${this.websocketPath}`, ["televisit.v1"]);
  }

  /** `ws` opened for connection `generation`: join on it. */
  useWebSocket(ws, generation) {
    this.ws = ws;
    this.joinedHere = false;
    document.body.dataset.signaling = "websocket";
    ws.onmessage = (event) => {
      if (generation !== this.generation) return;
      let frame;
      try { frame = JSON.parse(event.data); } catch { return; }
      this.receive(frame);
    };
    ws.onclose = () => this.lost(generation);
    ws.send(JSON.stringify(this.joinFrame()));
  }

  /** While on HTTP: try the WebSocket again after the backoff; go back to it when one opens. */
  scheduleProbe() {
    if (this.closed || this.transport !== "http") return;
    this.probeAttempts += 1;
    setTimeout(() => {
      if (this.closed || this.transport !== "http" || this.probe) return;
      const ws = this.newWebSocket();
      this.probe = ws;
      let opened = false;
      ws.onopen = async () => {
        opened = true;
        // A join posted over HTTP and still on its way would replace this connection: let it land first.
        await this.httpJoin;
        this.probe = null;
        if (this.closed || this.transport !== "http") return ws.close();
        clearTimeout(this.reconnectTimer); // this is the reconnection
        this.dropConnections();
        this.setTransport("websocket");
        this.websocketFailures = 0;
        this.useWebSocket(ws, ++this.generation);
      };
      ws.onclose = () => {
        if (opened) return;
        this.probe = null;
        this.scheduleProbe();
      };
    }, reconnectBackoffMs(this.probeAttempts));
  }

  // ---------- HTTP fallback ----------
  async openHttp(generation) {
    const headers = { Authorization: `Bearer ${this.token}`, "Content-Type": "application/json" };
    const http = { generation, headers, queue: [], posting: false, poll: new AbortController(), open: false };
    this.http = http;
    this.joinedHere = false;
    this.httpJoin = fetch(this.signalPath, { method: "POST", headers, body: JSON.stringify(this.joinFrame()) }).catch(() => null);
    const joined = await this.httpJoin;
    this.httpJoin = null;
    if (generation !== this.generation) return;
    if (!joined || !joined.ok) {
      // A refusal (the call ended, the link revoked…) is the `error` frame the WebSocket would
      // have sent: the page decides whether it is the end; otherwise try again later.
      const body = joined ? await joined.json().catch(() => ({})) : {};
      if (body.error) this.receive({ type: "error", code: body.error.code, message: body.error.message });
      return this.lost(generation);
    }
    http.open = true;
    document.body.dataset.signaling = "http";
    let cursor = 0;
    while (!this.closed && generation === this.generation) {
      const response = await fetch(`${this.signalPath}?after=${cursor}`, { headers, signal: http.poll.signal }).catch(() => null);
      if (generation !== this.generation) return;
      if (!response || !response.ok) return this.lost(generation);
      const body = await response.json().catch(() => null);
      if (!body) return this.lost(generation);
      cursor = body.cursor;
      for (const f of body.frames) {
        if (this.closed || generation !== this.generation) return; // the page ended the call on an earlier frame
        this.receive(f);
      }
    }
  }

  /** Posts `http`'s queued frames one at a time, in order. */
  async pumpHttp(http) {
    if (http.posting) return;
    http.posting = true;
    // A connection replaced by a newer one stops; one closed by the page posts what it queued (a `leave`).
    while (http.queue.length > 0 && http.generation === this.generation) {
      const frame = http.queue[0];
      const response = await fetch(this.signalPath, { method: "POST", headers: http.headers, body: JSON.stringify(frame) }).catch(() => null);
      const body = response && !response.ok ? await response.json().catch(() => ({})) : null;
      if (!response || (body && body.error && body.error.code === "not_joined")) {
        // The connection (or the server's session) is gone: the reconnect resends what it misses.
        http.queue = [];
        this.lost(http.generation);
        break;
      }
      http.queue.shift();
      if (body && body.error && http.generation === this.generation) {
        this.receive({ type: "error", code: body.error.code, message: body.error.message });
      }
    }
    http.posting = false;
  }

  close() {
    this.closed = true;
    clearInterval(this.keepalive);
    clearTimeout(this.reconnectTimer);
    if (this.ws) this.ws.close();
    if (this.probe) this.probe.close();
    if (this.http) this.http.poll.abort(); // frames already queued (a `leave`) are still posted
  }
}
