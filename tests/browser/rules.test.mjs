// The web page's rules (web/static/rules.js) against the vectors the Rust core's rules pass too
// (core/src/call/rules_vectors.json): reconnect backoff, when to fall back to HTTP, ICE restarts,
// per server error code whether it ends the call and what the user reads, and the adaptation
// steps of the bitrate ladder.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import vm from "node:vm";

const root = new URL("../../", import.meta.url);
const vectors = JSON.parse(readFileSync(new URL("core/src/call/rules_vectors.json", root), "utf8"));
const page = {};
vm.runInNewContext(`${readFileSync(new URL("web/static/rules.js", root), "utf8")}
  Object.assign(this, { reconnectBackoffMs, WEBSOCKET_FAILURES_BEFORE_FALLBACK, ICE_RESTART_EVERY_MS, errorRule, IceRestarts, BitrateLadder });`, page);

test("rules.js waits before each reconnect as the core does", () => {
  for (const { attempt, delay_ms } of vectors.reconnect_backoff) {
    assert.equal(page.reconnectBackoffMs(attempt), delay_ms, `backoff before attempt ${attempt}`);
  }
  assert.equal(page.WEBSOCKET_FAILURES_BEFORE_FALLBACK, vectors.websocket_failures_before_fallback);
  assert.equal(page.ICE_RESTART_EVERY_MS, vectors.ice_restart_every_ms);
});

test("rules.js ends the call on the same error codes as the core, with the same texts", () => {
  for (const v of vectors.errors) {
    const rule = page.errorRule(v.code, vectors.server_message);
    assert.deepEqual({ ...rule }, { endsCall: v.ends_call, retryable: v.retryable, title: v.title, message: v.message }, v.code);
  }
});

test("rules.js restarts ICE when the core does", () => {
  for (const sequence of vectors.ice_restarts) {
    const restarts = new page.IceRestarts(sequence.role);
    const made = sequence.events
      .filter(({ at_ms, event }) => (event === "tick" ? restarts.onTick(at_ms) : restarts.onState(event, at_ms)))
      .map(({ at_ms }) => at_ms);
    assert.deepEqual(made, sequence.restarts_at_ms, sequence.name);
  }
});

test("rules.js moves along the bitrate ladder as the core does", () => {
  for (const sequence of vectors.ladder) {
    const ladder = new page.BitrateLadder(sequence.start, sequence.cap, sequence.preference);
    sequence.samples.forEach((s, i) => {
      const { target, changed } = ladder.update(s.estimate_bps, s.acknowledged_bps, s.at_ms);
      assert.deepEqual([target.rung.name, target.fps, target.bitrateBps, changed], [s.rung, s.fps, s.bitrate_bps, s.changed], `${sequence.name}: sample ${i}`);
    });
  }
});
