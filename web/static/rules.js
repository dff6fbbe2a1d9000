// The rules the web page shares with the Rust core (core/src/call/machine.rs, core/src/error.rs,
// core/src/call/transport.rs). Both are checked against the same vectors
// (core/src/call/rules_vectors.json) by the core's tests and tests/browser/rules.test.mjs: change a
// rule here and there, and in the vectors, together.
"use strict";

/** Backoff before reconnect attempt `attempt` (from 1): 250 ms doubling up to 8 s. */
function reconnectBackoffMs(attempt) {
  return Math.min(8000, 250 * 2 ** Math.min(Math.max(attempt - 1, 0), 5));
}

/** WebSocket attempts that never open, in a row, before the page uses the HTTP fallback. */
const WEBSOCKET_FAILURES_BEFORE_FALLBACK = 3;

/** While the peer connection is failed, the doctor restarts ICE this often (ms). */
const ICE_RESTART_EVERY_MS = 5000;

// What each server error code means for the call: whether it ends it (the link cannot be used any
// more, or another connection took over), whether trying again can help, and what the user reads
// (the core's `CallError::title` and message). `message` gets the server's own message.
const ERROR_RULES = (() => {
  const notAllowed = { endsCall: false, retryable: false, title: "Not allowed", message: (m) => `not allowed: ${m}` };
  return {
    invalid_token: { endsCall: true, retryable: false, title: "This link is not valid", message: () => "this link is not valid: check it, or ask the clinic for a new one" },
    token_expired: { endsCall: true, retryable: false, title: "This link has expired", message: () => "this link has expired: ask the clinic for a new one" },
    token_revoked: { endsCall: true, retryable: false, title: "This link was replaced", message: () => "this link was replaced by a newer one: use the latest link from the clinic" },
    call_ended: { endsCall: true, retryable: false, title: "This call has ended", message: () => "this call has ended" },
    call_not_started: { endsCall: false, retryable: true, title: "The call has not started yet", message: () => "the doctor has not started this call yet: try again in a moment" },
    replaced: { endsCall: true, retryable: false, title: "The call continued elsewhere", message: () => "this call continued on another device" },
    forbidden: notAllowed, not_found: notAllowed, origin_not_allowed: notAllowed,
  };
})();

/** The rule for server error `code` with the server's `serverMessage`: `{ endsCall, retryable, title, message }`. */
function errorRule(code, serverMessage) {
  const rule = ERROR_RULES[code] || {
    endsCall: false, retryable: false, title: "Something went wrong", message: (m) => `the server refused: ${m} (${code})`,
  };
  return { endsCall: rule.endsCall, retryable: rule.retryable, title: rule.title, message: rule.message(serverMessage) };
}

/** A message as a sentence to show: capital first letter, full stop. */
function asSentence(message) {
  const text = String(message || "");
  return text ? `${text[0].toUpperCase()}${text.slice(1)}${/[.!?]$/.test(text) ? "" : "."}` : text;
}

// ICE restarts, as the core's call machine does them: when the peer connection fails, the doctor
// (the side that offers) restarts ICE at once, then every ICE_RESTART_EVERY_MS while it stays
// failed, until it is connected again. "disconnected" alone waits (it often recovers by itself).
// The peer's own restart offer, accepted, puts the next timed one off.
class IceRestarts {
  constructor(role) { this.role = role; this.failedAt = null; this.lastRestartAt = null; }

  /** The peer connection's state changed; true when an ICE restart should be made now. */
  onState(state, now) {
    if (state === "connected") { this.failedAt = null; return false; }
    if (state !== "failed" || this.failedAt !== null) return false;
    this.failedAt = now;
    if (this.role !== "doctor") return false;
    this.lastRestartAt = now;
    return true;
  }

  /** The clock ticked; true when an ICE restart should be made now. */
  onTick(now) {
    if (this.failedAt === null || this.role !== "doctor") return false;
    if (now - (this.lastRestartAt ?? this.failedAt) < ICE_RESTART_EVERY_MS) return false;
    this.lastRestartAt = now;
    return true;
  }

  /** The peer's offer was accepted: while failed, it is a restart of its own. */
  onPeerOffer(now) { if (this.failedAt !== null) this.lastRestartAt = now; }

  /** A new peer connection: nothing failed yet. */
  reset() { this.failedAt = null; }
}
