// Networks that block WebSockets (some clinic proxies): the call page falls back to HTTP long-polling
// and the visit works the same — waiting room, video both ways, chat both ways, the end.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, startedCall, launchBrowser, screenshot, eventually, chat, endCall, dataset as body } from "./harness.mjs";

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
