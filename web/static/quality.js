// Connection quality from getStats(): the same rule as the Rust core (core/src/call/quality.rs).
//   Lost      — nothing received for 3 s;
//   Excellent — RTT < 150 ms, loss < 1 %, jitter < 30 ms;
//   Good      — RTT < 300 ms, loss < 5 %, jitter < 60 ms;
//   Poor      — anything worse. A missing measurement does not count against the level.
// Hysteresis: the shown level gets worse after 2 consecutive worse samples and better after 5
// consecutive better ones; Lost shows at once and the first sample after Lost shows as it is.
"use strict";

const QUALITY_RANK = { lost: 0, poor: 1, good: 2, excellent: 3 };

function scoreQuality(sample, nowMs) {
  if (sample.lastPacketAtMs == null || nowMs - sample.lastPacketAtMs >= 3000) return "lost";
  const within = (value, limit) => value == null || value < limit;
  if (within(sample.rttMs, 150) && within(sample.lossPercent, 1) && within(sample.jitterMs, 30)) return "excellent";
  if (within(sample.rttMs, 300) && within(sample.lossPercent, 5) && within(sample.jitterMs, 60)) return "good";
  return "poor";
}

class QualityScorer {
  constructor() { this.shown = "good"; this.candidate = "good"; this.streak = 0; }
  update(sample, nowMs) {
    const instant = scoreQuality(sample, nowMs);
    const before = this.shown;
    if (instant === this.shown) {
      this.streak = 0;
    } else if (instant === "lost" || this.shown === "lost") {
      this.shown = instant; this.streak = 0;
    } else {
      if (instant === this.candidate) this.streak += 1; else { this.candidate = instant; this.streak = 1; }
      const needed = QUALITY_RANK[instant] < QUALITY_RANK[this.shown] ? 2 : 5;
      if (this.streak >= needed) { this.shown = instant; this.streak = 0; }
    }
    return this.shown !== before ? this.shown : null;
  }
}

// Reads one sample from an RTCPeerConnection; `previous` holds the last counters.
async function readQualitySample(pc, previous, nowMs) {
  const report = await pc.getStats();
  let rttMs = null, jitterMs = null, estimateBps = null, received = 0, lost = 0, bytes = 0, framesDecoded = 0;
  let frameWidth = 0, frameHeight = 0;
  report.forEach((s) => {
    if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded" && s.currentRoundTripTime != null) {
      rttMs = s.currentRoundTripTime * 1000;
    }
    if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded" && s.availableOutgoingBitrate != null) {
      estimateBps = s.availableOutgoingBitrate; // the congestion controller's estimate, for the ladder
    }
    if (s.type === "inbound-rtp") {
      received += s.packetsReceived || 0;
      lost += Math.max(0, s.packetsLost || 0);
      bytes += s.bytesReceived || 0;
      if (s.jitter != null) jitterMs = Math.max(jitterMs || 0, s.jitter * 1000);
      if (s.kind === "video") {
        framesDecoded += s.framesDecoded || 0;
        frameWidth = Math.max(frameWidth, s.frameWidth || 0);
        frameHeight = Math.max(frameHeight, s.frameHeight || 0);
      }
    }
  });
  const dReceived = received - (previous.received || 0);
  const dLost = lost - (previous.lost || 0);
  const lossPercent = dReceived + dLost > 0 ? (100 * dLost) / (dReceived + dLost) : null;
  const lastPacketAtMs = bytes > (previous.bytes || 0) ? nowMs : previous.lastPacketAtMs ?? null;
  return { rttMs, jitterMs, estimateBps, lossPercent, lastPacketAtMs, received, lost, bytes, framesDecoded, frameWidth, frameHeight };
}
