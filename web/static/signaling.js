// Signaling for the browser: the same protocol as the Rust core (core/src/protocol.md).
// A WebSocket with reconnect, backoff and resume; the HTTP long-poll fallback when the WebSocket
// cannot connect at all (networks that block it). Frames from the server are numbered: the last
// `seq` seen is sent back in `join.resume` so nothing is lost or repeated after a reconnect.
"use strict";

class Signaling {
  constructor({ token, websocketPath, signalPath, onFrame, onStatus }) {
    this.token = token;
    this.websocketPath = websocketPath;
    this.signalPath = signalPath;
    this.onFrame = onFrame;
    this.onStatus = onStatus;
    this.lastSeq = 0;
    this.joinedOnce = false;
    this.attempts = 0;
    this.failuresBeforeOpen = 0;
    this.mode = "websocket";
    this.closed = false;
    this.queue = [];
    this.pollCursor = 0;
  }

  start() {
    if (this.mode === "websocket") this.openWebSocket(); else this.openHttp();
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
    if (frame.type === "joined") {
      this.joinedOnce = true;
      if (!frame.resumed) this.lastSeq = 0;
      this.attempts = 0;
      this.onStatus("connected");
    }
    this.onFrame(frame);
  }

  openWebSocket() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let opened = false;
    const ws = new WebSocket(`${scheme}//${location.host}${this.websocketPath}`, ["televisit.v1"]);
    this.ws = ws;
    ws.onopen = () => {
      opened = true;
      document.body.dataset.signaling = "websocket";
      this.failuresBeforeOpen = 0;
      ws.send(JSON.stringify(this.joinFrame()));
      const pending = this.queue; this.queue = [];
      pending.forEach((f) => ws.send(JSON.stringify(f)));
    };
    ws.onmessage = (event) => {
      let frame;
      try { frame = JSON.parse(event.data); } catch { return; }
      this.receive(frame);
    };
    ws.onclose = () => {
      if (this.ws !== ws || this.closed) return;
      this.ws = null;
      if (!opened && ++this.failuresBeforeOpen >= 2) {
        this.mode = "http"; // the WebSocket never opens here: use the fallback
        this.openHttp();
        return;
      }
      this.scheduleReconnect();
    };
    this.keepalive = this.keepalive || setInterval(() => this.send({ type: "ping" }), 15000);
  }

  scheduleReconnect() {
    if (this.closed) return;
    this.attempts += 1;
    this.onStatus("reconnecting");
    const delay = Math.min(8000, 250 * 2 ** Math.min(this.attempts - 1, 5));
    setTimeout(() => this.start(), delay);
  }

  async openHttp() {
    const headers = { Authorization: `Bearer ${this.token}`, "Content-Type": "application/json" };
    const joined = await fetch(this.signalPath, { method: "POST", headers, body: JSON.stringify(this.joinFrame()) }).catch(() => null);
    if (!joined || !joined.ok) { this.scheduleReconnect(); return; }
    this.httpHeaders = headers;
    document.body.dataset.signaling = "http";
    const pending = this.queue; this.queue = [];
    pending.forEach((f) => this.send(f));
    while (!this.closed && this.mode === "http") {
      const response = await fetch(`${this.signalPath}?after=${this.pollCursor}`, { headers }).catch(() => null);
      if (!response || !response.ok) { this.httpHeaders = null; this.scheduleReconnect(); return; }
      const body = await response.json();
      this.pollCursor = body.cursor;
      for (const f of body.frames) {
        if (this.closed) break; // the page ended the call on an earlier frame of this batch
        this.receive(f);
      }
    }
  }

  send(frame) {
    if (this.mode === "websocket") {
      if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
      else if (frame.type !== "ping") this.queue.push(frame);
    } else if (this.httpHeaders) {
      fetch(this.signalPath, { method: "POST", headers: this.httpHeaders, body: JSON.stringify(frame) }).catch(() => {});
    } else if (frame.type !== "ping") {
      this.queue.push(frame);
    }
  }

  close() {
    this.closed = true;
    clearInterval(this.keepalive);
    if (this.ws) this.ws.close();
  }
}
