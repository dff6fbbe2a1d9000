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

// ---------- adaptive video: the core's bitrate ladder (core/src/call/ladder.rs) ----------
// Audio is reserved first; the video gets the rest (the budget). A step is a rung (a picture
// size) at a frame rate. Down at once to the best step the budget fits; up one step at a time,
// after the budget fitted the next step with a quarter to spare for LADDER_UP_AFTER_MS and the
// receiver acknowledged most of what is sent. The examination mode ("detail") lowers the frame
// rate (halved, twice) before the picture size.
const AUDIO_RESERVE_BPS = 64000;
const LADDER_UP_AFTER_MS = 2000;
const LADDER = [
  { name: "1080p", width: 1920, height: 1080, fps: 30, targetBps: 3000000, minBps: 1800000, maxBps: 5000000 },
  { name: "720p", width: 1280, height: 720, fps: 30, targetBps: 1500000, minBps: 900000, maxBps: 2600000 },
  { name: "540p", width: 960, height: 540, fps: 30, targetBps: 900000, minBps: 500000, maxBps: 1400000 },
  { name: "360p", width: 640, height: 360, fps: 30, targetBps: 500000, minBps: 250000, maxBps: 800000 },
  { name: "180p", width: 320, height: 180, fps: 15, targetBps: 200000, minBps: 80000, maxBps: 300000 },
  { name: "audio-only", width: 0, height: 0, fps: 0, targetBps: 0, minBps: 0, maxBps: 0 },
];
const DETAIL_FRAME_RATES = [[1, 1.0], [2, 0.6], [4, 0.35]];

class BitrateLadder {
  /** Starts at rung `start` with `cap` the best allowed, "balanced" or "detail". */
  constructor(start, cap, preference = "balanced") {
    const find = (name, fallback) => { const i = LADDER.findIndex((r) => r.name === name); return i < 0 ? fallback : i; };
    const top = find(cap, 0);
    const first = Math.max(find(start, 3), top);
    this.last = null;
    this.aboveSince = null;
    this.setSteps(top, preference);
    this.current = Math.max(0, this.steps.findIndex((s) => s.rung === first && s.divisor === 1));
  }

  setSteps(top, preference) {
    const divisors = preference === "detail" ? DETAIL_FRAME_RATES : DETAIL_FRAME_RATES.slice(0, 1);
    this.steps = [];
    for (let rung = top; rung < LADDER.length; rung++) {
      for (const [divisor, share] of LADDER[rung].fps === 0 ? divisors.slice(0, 1) : divisors) {
        this.steps.push({ rung, divisor, minBps: Math.trunc(LADDER[rung].minBps * share) });
      }
    }
  }

  /** What to give up first from now on; the current picture size is kept, at full frame rate. */
  setPreference(preference) {
    const rung = this.steps[this.current].rung;
    this.setSteps(this.steps[0].rung, preference);
    this.current = Math.max(0, this.steps.findIndex((s) => s.rung === rung && s.divisor === 1));
    this.aboveSince = null;
  }

  rung() { return LADDER[this.steps[this.current].rung]; }

  /** One sample: the congestion controller's estimate and the acknowledged rate (bit/s, null if unknown). */
  update(estimateBps, acknowledgedBps, now) {
    const budget = Math.max(0, estimateBps - AUDIO_RESERVE_BPS);
    const before = this.current;
    if (budget < this.steps[this.current].minBps) {
      const rung = this.steps[this.current].rung;
      const fits = this.steps.findIndex((s) => s.rung >= rung && s.minBps <= budget);
      this.current = fits < 0 ? this.steps.length - 1 : fits;
      this.aboveSince = null;
    } else if (this.current > 0) {
      const next = this.steps[this.current - 1];
      const headroom = budget * 4 >= next.minBps * 5;
      const sending = (this.last ? this.last.bitrateBps : 0) + AUDIO_RESERVE_BPS;
      const delivered = acknowledgedBps == null || this.current + 1 === this.steps.length || acknowledgedBps >= sending * 0.75;
      if (headroom && delivered) {
        if (this.aboveSince === null) this.aboveSince = now;
        if (now - this.aboveSince >= LADDER_UP_AFTER_MS) { this.current -= 1; this.aboveSince = null; }
      } else {
        this.aboveSince = null;
      }
    }
    const step = this.steps[this.current];
    const rung = LADDER[step.rung];
    this.last = { rung, fps: Math.trunc(rung.fps / step.divisor), bitrateBps: Math.max(Math.min(budget, rung.maxBps), Math.min(step.minBps, budget)) };
    return { target: this.last, changed: this.current !== before };
  }
}
