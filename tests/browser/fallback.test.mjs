// Networks that block WebSockets (some clinic proxies): the call page falls back to HTTP long-polling
// and the visit works the same — waiting room, video both ways, chat both ways, the end.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, startedCall, launchBrowser, screenshot, eventually, chat, endCall, decodingVideo, dataset as body } from "./harness.mjs";

/** A browser context on a network where no WebSocket ever opens (as behind a proxy that refuses upgrades). */
async function contextWithoutWebSockets(browser, viewport) {
  const context = await browser.newContext({ viewport });
  await context.addInitScript(() => {
    window.WebSocket = class BlockedWebSocket extends EventTarget {
      constructor() {
        super();
        this.readyState = 0;
        setTimeout(() => {
          this.readyState = 3;
          this.onerror?.(new Event("error"));
          this.onclose?.(new CloseEvent("close", { code: 1006 }));
        }, 30);
      }
      send() { throw new DOMException("not open", "InvalidStateError"); }
      close() {}
    };
  });
  return context;
}

test("without WebSockets the visit runs over the HTTP fallback", async () => {
  const server = await startServer();
  const browser = await launchBrowser();
  try {
    const started = await startedCall(server);
    const patient = await (await contextWithoutWebSockets(browser, { width: 390, height: 844 })).newPage();
    const doctor = await (await contextWithoutWebSockets(browser, { width: 1280, height: 800 })).newPage();

    await patient.goto(started.patient_link);
    await patient.getByRole("heading", { name: "Waiting for your doctor" }).waitFor();
    assert.equal(await body(patient, "signaling"), "http", "the patient waits over the HTTP fallback");

    await doctor.goto(started.doctor_link);
    for (const page of [doctor, patient]) {
      await eventually("connected", async () => (await body(page, "connected")) === "true", 30000);
      assert.equal(await body(page, "signaling"), "http");
    }
    for (const page of [doctor, patient]) {
      const first = Number(await eventually("frames decoded", async () => Number(await body(page, "framesDecoded")) > 0 && body(page, "framesDecoded")));
      await eventually("frames decoded increasing", async () => Number(await body(page, "framesDecoded")) > first + 10);
    }
    await screenshot(doctor, "12-doctor-in-call-over-http-fallback");

    await chat(patient, doctor, "Can you hear me through the proxy?");
    await chat(doctor, patient, "Loud and clear");

    await patient.getByRole("button", { name: "Mute", exact: true }).click();
    await eventually("doctor sees the patient muted", async () => (await body(doctor, "peerAudio")) === "false");

    await endCall(doctor);
    for (const page of [doctor, patient]) {
      await page.getByRole("heading", { name: "The call has ended" }).waitFor().catch(async (e) => {
        throw new Error(`${page === doctor ? "doctor" : "patient"} shows "${await page.locator("#screen-title").innerText().catch(() => "?")}" / banner "${await page.locator("#banner").innerText().catch(() => "?")}"; ${e.message}`);
      });
      assert.match(await page.locator("#screen-text").innerText(), /Duration: \d\d:\d\d/);
    }
  } finally {
    await browser.close();
    await server.stop();
  }
});

/**
 * Delays every frame `page` posts to the HTTP fallback by a random 0–300 ms (a slow, jittery
 * proxy), records the frames in the order they go on to the server, and fails the first post of
 * a chat frame whose text is `failChat` (the connection drops as it is sent).
 */
async function jitteryPosts(page, failChat) {
  const arrived = [];
  let failed = false;
  await page.route("**/api/video-call/signal/*", async (route) => {
    if (route.request().method() !== "POST") return route.continue();
    const frame = JSON.parse(route.request().postData());
    await new Promise((r) => setTimeout(r, Math.random() * 300));
    if (frame.type === "chat" && frame.text === failChat && !failed) {
      failed = true;
      return route.abort("connectionreset");
    }
    arrived.push(frame);
    return route.continue();
  });
  return arrived;
}

test("over a jittery HTTP fallback each side's frames reach the server in order, and a failed post is resent once", async () => {
  const server = await startServer();
  const browser = await launchBrowser();
  try {
    const started = await startedCall(server);
    const patient = await (await contextWithoutWebSockets(browser, { width: 390, height: 844 })).newPage();
    const doctor = await (await contextWithoutWebSockets(browser, { width: 1280, height: 800 })).newPage();
    const lost = "Sent as the connection dropped";
    const posted = { patient: await jitteryPosts(patient, lost), doctor: await jitteryPosts(doctor, lost) };

    await patient.goto(started.patient_link);
    await patient.getByRole("heading", { name: "Waiting for your doctor" }).waitFor();
    await doctor.goto(started.doctor_link);
    for (const page of [doctor, patient]) await decodingVideo(page);
    // The doctor's offer reached the patient before its candidates (they were not refused), and
    // so on for every frame: the numbered ones went to the server in order.
    for (const page of [doctor, patient]) assert.equal(await body(page, "candidateErrors"), undefined, "no candidate arrived before its offer");
    for (const [who, frames] of Object.entries(posted)) {
      const seqs = frames.filter((f) => f.seq !== undefined).map((f) => f.seq);
      assert.ok(seqs.length > 3, `${who} posted numbered frames: ${JSON.stringify(frames.map((f) => f.type))}`);
      assert.deepEqual(seqs, [...seqs].sort((a, b) => a - b), `${who}'s frames in order: ${JSON.stringify(frames.map((f) => [f.type, f.seq]))}`);
      const offerOrAnswer = frames.findIndex((f) => f.type === (who === "doctor" ? "offer" : "answer"));
      const firstCandidate = frames.findIndex((f) => f.type === "ice-candidate");
      assert.ok(offerOrAnswer >= 0 && offerOrAnswer < firstCandidate, `${who}: the SDP before its candidates`);
    }

    // The patient's post of a chat message fails: she reconnects, sends it again, and the doctor
    // gets it once.
    await chat(patient, doctor, lost);
    await chat(patient, doctor, "And this one after it");
    await patient.waitForTimeout(1000);
    assert.equal(await doctor.locator("#chat-log li", { hasText: lost }).count(), 1, "the lost chat message arrives once");
    const texts = await doctor.locator("#chat-log li").allInnerTexts();
    assert.ok(texts.findIndex((t) => t.includes(lost)) < texts.findIndex((t) => t.includes("after it")), `in order: ${texts}`);
    assert.equal(await body(patient, "signaling"), "http");
  } finally {
    await browser.close();
    await server.stop();
  }
});
