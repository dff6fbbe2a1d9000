// The web page's connection-quality rule (web/static/quality.js) against the vectors the Rust
// core's rule passes too (core/src/call/quality_vectors.json): one rule, two implementations.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import vm from "node:vm";

const root = new URL("../../", import.meta.url);
const vectors = JSON.parse(readFileSync(new URL("core/src/call/quality_vectors.json", root), "utf8"));
const page = {};
vm.runInNewContext(`${readFileSync(new URL("web/static/quality.js", root), "utf8")}
  this.scoreQuality = scoreQuality; this.QualityScorer = QualityScorer;`, page);

const sample = (v) => ({ rttMs: v.rtt_ms, lossPercent: v.loss_percent, jitterMs: v.jitter_ms, lastPacketAtMs: v.last_packet_at_ms });

test("quality.js scores each shared vector as the core does", () => {
  vectors.scores.forEach((v, i) => assert.equal(page.scoreQuality(sample(v), v.now_ms), v.level, `score vector ${i}`));
});

test("quality.js applies the same hysteresis as the core", () => {
  for (const sequence of vectors.sequences) {
    const scorer = new page.QualityScorer();
    sequence.steps.forEach((step, i) => {
      scorer.update(sample(step), step.now_ms);
      assert.equal(scorer.shown, step.shown, `${sequence.name}: step ${i}`);
    });
  }
});
