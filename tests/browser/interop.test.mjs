// Chromium ↔ the Rust headless client: the doctor in Chromium (signs in, starts the call), the
// patient is `televisit join <patient link>` (the core's software codec path: live VP8 of the test
// pattern and an Opus tone). Media are decoded both ways: Chromium plays the Rust pictures, its
// canvas reads their frame counter and Web Audio hears the tone; the Rust client decodes Chromium's
// fake camera and microphone.
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { startServer, setUpVisit, signInAndStartCall, launchBrowser, screenshot, eventually, readCounterInPage, endCall, BINARY, PATIENT_NAME } from "./harness.mjs";

const body = (page, key) => page.evaluate((k) => document.body.dataset[k], key);

/** `televisit join` as a child process; its output lines are collected as they come. */
function joinHeadless(link) {
  const child = spawn(BINARY, ["join", link, "--udp", "127.0.0.1:0", "--seconds", "60"], { stdio: ["ignore", "pipe", "pipe"] });
  const out = { lines: [], stderr: "", exit: null };
  let partial = "";
  child.stdout.on("data", (data) => {
    const text = partial + data;
    const lines = text.split("\n");
    partial = lines.pop();
    out.lines.push(...lines);
  });
  child.stderr.on("data", (data) => (out.stderr += data));
  out.exited = new Promise((resolve) => child.on("exit", (code) => { out.exit = code; resolve(code); }));
  out.kill = () => child.kill("SIGKILL");
  return out;
}

/** The last stats line of the Rust client, parsed. */
function lastStats(out) {
  const line = [...out.lines].reverse().find((l) => l.startsWith("stats: "));
  const match = line && line.match(/video frames received (\d+), decoded (\d+) at (\S+) .*audio frames received (\d+), decoded (\d+)/);
  if (!match) return null;
  const [width, height] = match[3].split("x").map(Number);
  return { received: +match[1], decoded: +match[2], width, height, audioReceived: +match[4], audioDecoded: +match[5] };
}

/** The loudest frequency of the remote stream's audio over half a second (Web Audio analyser). */
async function listenForTone() {
  const stream = document.getElementById("remote-video").srcObject;
  if (!stream || stream.getAudioTracks().length === 0) return null;
  const context = new AudioContext();
  await context.resume();
  const analyser = context.createAnalyser();
  analyser.fftSize = 8192;
  context.createMediaStreamSource(stream).connect(analyser);
  await new Promise((resolve) => setTimeout(resolve, 500));
  const bins = new Float32Array(analyser.frequencyBinCount);
  analyser.getFloatFrequencyData(bins);
  let peak = 1;
  for (let i = 2; i < bins.length; i++) if (bins[i] > bins[peak]) peak = i;
  const found = { hz: (peak * context.sampleRate) / analyser.fftSize, db: bins[peak] };
  await context.close();
  return found;
}

test("Chromium and the Rust headless client decode each other's video and audio", async () => {
  const server = await startServer();
  const browser = await launchBrowser();
  let patient;
  try {
    await setUpVisit(server);
    const doctor = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    const patientLink = await signInAndStartCall(doctor, server);

    // The patient joins from the terminal and waits.
    patient = joinHeadless(patientLink);
    await eventually("the Rust patient in the waiting room", async () => patient.lines.some((l) => l.includes("waiting room")));

    // The doctor joins in Chromium.
    await doctor.getByRole("button", { name: `Join video call with ${PATIENT_NAME}` }).click();
    await doctor.waitForURL(/video-call\/$/);
    await eventually("connected", async () => (await body(doctor, "connected")) === "true");
    await eventually("the Rust side connected", async () => patient.lines.includes("event: state Connected"));

    // Chromium decodes the Rust client's VP8: frames counted, the ladder climbing from 360p to HD as
    // Chromium acknowledges what arrives, and the pattern's counter read from the played pictures
    // increases.
    const first = await eventually("frames decoded in Chromium", async () => {
      const n = await doctor.locator("#remote-video").evaluate((v) => v.getVideoPlaybackQuality().totalVideoFrames);
      return n > 0 && n;
    }, 20000);
    await eventually("Chromium's decoded frames increase", async () =>
      (await doctor.locator("#remote-video").evaluate((v) => v.getVideoPlaybackQuality().totalVideoFrames)) > first + 30, 20000);
    await eventually("the Rust patient's camera climbs to 720p or more", async () =>
      (await doctor.locator("#remote-video").evaluate((v) => v.videoWidth)) >= 1280, 20000);
    await eventually("framesDecoded in the page's stats", async () => Number(await body(doctor, "framesDecoded")) > 30);
    const counters = [];
    await eventually("increasing picture counters read in Chromium", async () => {
      const counter = await doctor.evaluate(readCounterInPage);
      if (counter !== null && counter !== counters.at(-1)) counters.push(counter);
      return counters.length >= 5;
    }, 20000);
    assert.ok(counters.every((c) => c >>> 28 === 2), `the patient's pictures: ${counters.map((c) => c.toString(16))}`);
    assert.ok(counters.every((c, i) => i === 0 || c > counters[i - 1]), `counters increase: ${counters}`);
    await screenshot(doctor, "20-chromium-doctor-sees-rust-patient");

    // Chromium decodes the Rust client's Opus: the remote stream carries the 440 Hz tone.
    const tone = await eventually("the 440 Hz tone in Chromium", async () => {
      const found = await doctor.evaluate(listenForTone);
      return found && Math.abs(found.hz - 440) < 20 && found.db > -60 && found;
    }, 15000);
    assert.ok(tone);

    // The Rust client decodes Chromium's fake camera (VP8) and microphone (Opus).
    const before = await eventually("Rust decodes Chromium's video", async () => {
      const s = lastStats(patient);
      return s && s.decoded > 0 && s;
    }, 20000);
    const after = await eventually("Rust's decoded frames increase", async () => {
      const s = lastStats(patient);
      return s && s.decoded >= before.decoded + 30 && s;
    }, 20000);
    assert.ok(after.width >= 320 && after.height >= 180 && after.width <= 1920, `picture size ${after.width}x${after.height}`);
    assert.ok(after.audioDecoded > 0 && after.audioDecoded >= after.audioReceived - 5, `audio decoded ${after.audioDecoded}/${after.audioReceived}`);

    // The doctor ends the call; the Rust client exits 0.
    await endCall(doctor);
    assert.equal(await patient.exited, 0, patient.lines.join("\n") + patient.stderr);
    assert.ok(patient.lines.some((l) => l.includes("ended: CallEnded")), patient.lines.join("\n"));
    const summary = patient.lines.find((l) => l.startsWith("summary: "));
    const stats = [...patient.lines].reverse().find((l) => l.startsWith("stats: "));
    console.log(`Rust client: ${stats}\nRust client: ${summary}\nChromium read counters: ${counters.map((c) => "0x" + c.toString(16)).join(" ")}\nChromium hears ${tone.hz.toFixed(0)} Hz at ${tone.db.toFixed(0)} dB`);
  } finally {
    if (patient && patient.exit === null) patient.kill();
    await browser.close();
    await server.stop();
  }
});
