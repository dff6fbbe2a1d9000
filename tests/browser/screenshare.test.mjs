// Screen sharing between a browser and the core, with the track roles of the protocol
// (protocol/src/protocol.md, "Track roles"): the doctor's `screen-share` frame names the stream of its
// screen track, so the other side tells the screen from the camera whatever the sender calls its
// tracks. A Chromium doctor's `getDisplayMedia` screen (a random stream id) reaches the core
// (`televisit join`) as screen frames, its camera still as camera frames; the core doctor's
// synthetic screen (`--share-screen-after-seconds`) shows in a Chromium patient's page as the
// shared screen, with its caption, and its camera stays the camera.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, setUpVisit, startedCall, signInAndStartCall, launchBrowser, screenshot, eventually, readCounterInPage, endCall, joinHeadless, dataset as body, PATIENT_NAME } from "./harness.mjs";

/** The last stats line of the core, parsed: camera and screen frames received and decoded. */
function lastStats(core) {
  const line = [...core.lines].reverse().find((l) => l.line.startsWith("stats: "))?.line;
  const match = line && line.match(/video frames received (\d+), decoded (\d+) at (\S+) .*screen frames received (\d+), decoded (\d+) at (\S+),/);
  if (!match) return null;
  return { camera: { received: +match[1], decoded: +match[2], size: match[3] }, screen: { received: +match[4], decoded: +match[5], size: match[6] } };
}

test("a Chromium doctor's shared screen reaches the core as screen frames, its camera as camera", async () => {
  const server = await startServer();
  const browser = await launchBrowser();
  let core;
  try {
    await setUpVisit(server);
    const doctor = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    const patientLink = await signInAndStartCall(doctor, server);
    core = joinHeadless(patientLink, { seconds: 60 });
    await eventually("the core patient waits", async () => core.lines.some((l) => l.line.includes("waiting room")));
    await doctor.getByRole("button", { name: `Join video call with ${PATIENT_NAME}` }).click();
    await doctor.waitForURL(/video-call\/$/);
    await eventually("connected", async () => (await body(doctor, "connected")) === "true");
    const before = await eventually("the core decodes the doctor's camera", async () => {
      const stats = lastStats(core);
      return stats && stats.camera.decoded > 10 && stats;
    }, 20000);
    assert.equal(before.screen.received, 0, "no screen before sharing");

    await doctor.getByRole("button", { name: "Share screen" }).click();
    await doctor.getByRole("button", { name: "Stop sharing" }).waitFor();
    await eventually("the core hears the doctor shares", async () => core.lines.some((l) => l.line === "event: peer screen share on"));
    const sharing = await eventually("the core decodes screen frames", async () => {
      const stats = lastStats(core);
      return stats && stats.screen.decoded > 10 && stats;
    }, 20000);
    // The camera goes on as the camera beside the screen: its frames keep coming and keep its size.
    const later = await eventually("the camera goes on", async () => {
      const stats = lastStats(core);
      return stats && stats.camera.decoded > sharing.camera.decoded + 30 && stats.screen.decoded > sharing.screen.decoded && stats;
    }, 20000);
    // The screen keeps its detail: sent as "detail" content that keeps its resolution, and decoded
    // by the core at the size it was captured.
    const shared = await doctor.evaluate(() => {
      const track = state.screenStream.getVideoTracks()[0]; // eslint-disable-line no-undef
      const { width, height } = track.getSettings();
      return { size: `${width}x${height}`, hint: track.contentHint, preference: state.screenSender.getParameters().degradationPreference }; // eslint-disable-line no-undef
    });
    assert.deepEqual([shared.hint, shared.preference], ["detail", "maintain-resolution"]);
    assert.equal(later.screen.size, shared.size, "the screen decoded at its captured size");
    await screenshot(doctor, "70-chromium-doctor-shares-to-the-core");

    await endCall(doctor);
    assert.equal(await core.exited, 0, core.lines.map((l) => l.line).join("\n") + core.stderr);
    const summary = core.lines.find((l) => l.line.startsWith("summary: ")).line;
    console.log(`the core received the Chromium doctor's screen: ${[...core.lines].reverse().find((l) => l.line.startsWith("stats: ")).line}`);
    assert.match(summary, /screen frames received [1-9]\d*, screen pictures decoded [1-9]/, summary);
  } finally {
    core?.kill();
    await browser.close();
    await server.stop();
  }
});

test("a core doctor's shared screen shows in a Chromium patient's page as the screen, with its caption", async () => {
  const server = await startServer();
  const browser = await launchBrowser();
  let core;
  try {
    const call = await startedCall(server);
    const patient = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    await patient.goto(call.patient_link);
    await patient.getByRole("heading", { name: "Waiting for your doctor" }).waitFor();
    core = joinHeadless(call.doctor_link, { seconds: 60, args: ["--share-screen-after-seconds", "2"] });
    await eventually("connected", async () => (await body(patient, "connected")) === "true", 30000);
    await eventually("the patient hears the doctor shares", async () => (await body(patient, "peerSharing")) === "true", 20000);
    assert.equal(await body(patient, "screenStream"), "televisit-screen", "the stream the core's screen-share frame named");
    // The screen's pictures count from 0x3000_0000, the doctor's camera's from 0x1000_0000.
    await eventually("the screen plays in the screen's place", async () => {
      const counter = await patient.evaluate(readCounterInPage, "screen-video");
      return counter !== null && counter >>> 28 === 3;
    }, 20000);
    await eventually("the camera plays in the camera's place", async () => {
      const counter = await patient.evaluate(readCounterInPage, "remote-video");
      return counter !== null && counter >>> 28 === 1;
    }, 20000);
    assert.equal(await patient.locator("#screen-video").isVisible(), true);
    assert.equal(await patient.locator("#screen-caption").innerText(), "The doctor's shared screen");
    assert.equal(await patient.locator("#screen-caption").isVisible(), true);
    await screenshot(patient, "71-chromium-patient-sees-the-core-doctors-screen");

    // The patient reloads her page mid-share: the core doctor names its screen again for the new page.
    await patient.reload();
    await eventually("the reloaded page hears the doctor shares", async () => (await body(patient, "peerSharing")) === "true", 30000);
    assert.equal(await body(patient, "screenStream"), "televisit-screen");
    await eventually("the screen plays in the screen's place again", async () => {
      const counter = await patient.evaluate(readCounterInPage, "screen-video");
      return counter !== null && counter >>> 28 === 3;
    }, 20000);
  } finally {
    core?.kill();
    await browser.close();
    await server.stop();
  }
});
