// Signaling for the browser: the same protocol as the Rust core (core/src/protocol.md).
// A WebSocket with reconnect, backoff and resume; the HTTP long-poll fallback when the WebSocket
// cannot connect at all (networks that block it). Frames from the server are numbered: the last
// `seq` seen is sent back in `join.resume` so nothing is lost or repeated after a reconnect.
// Chat is numbered too and kept until the server acknowledges it stored (`ack`); after a
// reconnect, what `joined.last_client_seq` does not cover is sent again (the server stores it once).
"use strict";

class Signaling {
  constructor({ token, websocketPath, signalPath, onFrame, onStatus, onChatPending = () => {} }) {
    this.token = token;
    this.websocketPath = websocketPath;
    this.signalPath = signalPath;
    this.onFrame = onFrame;
    this.onStatus = onStatus;
    this.onChatPending = onChatPending;
    this.nextSeq = 1;
    this.unackedChat = []; // { seq (null until first sent), text }, oldest first
    this.inRoom = false; // joined on the current connection
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
      this.resendChat(frame.last_client_seq || 0);
    } else if (frame.type === "ack") {
      this.unackedChat = this.unackedChat.filter((c) => c.seq !== frame.client_seq);
      this.onChatPending(this.unackedChat.length);
    }
    this.onFrame(frame);
  }

  // Sends a chat message now if in the room, else after the next `joined`; kept until acknowledged.
  sendChat(text) {
    const chat = { seq: null, text };
    this.unackedChat.push(chat);
    this.onChatPending(this.unackedChat.length);
    if (this.inRoom) this.sendNumbered(chat);
  }

  sendNumbered(chat) {
    if (chat.seq === null) chat.seq = this.nextSeq++;
    this.send({ type: "chat", seq: chat.seq, text: chat.text });
  }

  resendChat(handledThrough) {
    this.unackedChat = this.unackedChat.filter((c) => c.seq === null || c.seq > handledThrough);
    // After a reload the server has seen higher numbers from the earlier page: continue above them.
    if (this.nextSeq <= handledThrough) this.nextSeq = handledThrough + 1;
    this.inRoom = true;
    this.unackedChat.forEach((c) => this.sendNumbered(c));
    this.onChatPending(this.unackedChat.length);
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
      this.inRoom = false;
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
    if (!joined || !joined.ok) {
      // A refusal (the call ended, the link revoked…) is the `error` frame the WebSocket would
      // have sent: the page decides whether it is the end; otherwise try again later.
      const body = joined ? await joined.json().catch(() => ({})) : {};
      if (body.error) this.receive({ type: "error", code: body.error.code, message: body.error.message });
      this.scheduleReconnect();
      return;
    }
    this.httpHeaders = headers;
    document.body.dataset.signaling = "http";
    const pending = this.queue; this.queue = [];
    pending.forEach((f) => this.send(f));
    while (!this.closed && this.mode === "http") {
      const response = await fetch(`${this.signalPath}?after=${this.pollCursor}`, { headers }).catch(() => null);
      if (!response || !response.ok) { this.httpHeaders = null; this.inRoom = false; this.scheduleReconnect(); return; }
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
