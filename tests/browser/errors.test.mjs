// The screens a patient meets when something is wrong: camera blocked, no camera, and the connection
// to the clinic lost mid-call (a server crash) and restored.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, startedCall, launchBrowser, screenshot, eventually, chat, assertAccessible, dataset as body } from "./harness.mjs";

test("a missing, a cut-off and a garbage token each get their own page, with nothing behind it and the clinic's contact", async () => {
  const server = await startServer(["--clinic-name", "Harbour Clinic", "--clinic-phone", "+44 20 7946 0000", "--clinic-email", "desk@harbour.example"]);
  const browser = await launchBrowser();
  try {
    const started = await startedCall(server);
    const [address, token] = started.patient_link.split("#token=");
    const cases = [
      ["missing", address, "This link is incomplete"],
      ["cut-off", `${address}#token=${token.slice(0, -10)}`, "This link is cut off"],
      ["garbage", `${address}#token=not-a-token`, "This link is not valid"],
    ];
    const texts = new Set();
    for (const [name, link, heading] of cases) {
      const page = await (await browser.newContext({ viewport: { width: 390, height: 844 } })).newPage();
      await page.goto(link);
      await page.getByRole("heading", { name: heading }).waitFor();
      texts.add(await page.locator("#screen-text").innerText());
      // The way to reach the clinic, as links a phone can call and write to.
      assert.equal(await page.locator("#clinic-contact").innerText(), "Need help? Contact Harbour Clinic: +44 20 7946 0000 · desk@harbour.example");
      assert.equal(await page.getByRole("link", { name: "+44 20 7946 0000" }).getAttribute("href"), "tel:+442079460000");
      assert.equal(await page.getByRole("link", { name: "desk@harbour.example" }).getAttribute("href"), "mailto:desk@harbour.example");
      const backdrop = await page.locator("#screen").evaluate((e) => getComputedStyle(e).backgroundColor);
      assert.match(backdrop, /^rgb\(/, `an opaque page behind the card: ${backdrop}`);
      await screenshot(page, `16-${name}-link`);
      await assertAccessible(page, `the ${name} link's page`);
      await page.context().close();
    }
    assert.equal(texts.size, cases.length, `distinct explanations: ${[...texts].join(" / ")}`);
  } finally {
    await browser.close();
    await server.stop();
  }
});

test("a blocked camera and a missing camera each show what to do", async () => {
  const server = await startServer();
  const blocked = await launchBrowser({ permission: false });
  const noDevices = await launchBrowser({ camera: false });
  try {
    const started = await startedCall(server);
    const page = await (await blocked.newContext()).newPage();
    await page.goto(started.patient_link);
    await page.getByRole("heading", { name: "Camera and microphone blocked" }).waitFor();
    assert.match(await page.locator("#screen-text").innerText(), /Allow camera and microphone/);
    // Without settings the clinic's contact is the demo's placeholder, which reaches nobody.
    assert.equal(await page.locator("#clinic-contact").innerText(), "Need help? Contact Your clinic: +1 555 0100 · help@clinic.example");
    await screenshot(page, "13-camera-blocked");

    const context = await noDevices.newContext();
    await context.grantPermissions(["camera", "microphone"]);
    const other = await context.newPage();
    await other.goto(started.patient_link);
    await other.getByRole("heading", { name: "No camera or microphone found" }).waitFor();
    await screenshot(other, "14-no-camera");
  } finally {
    await blocked.close();
    await noDevices.close();
    await server.stop();
  }
});

test("when the clinic's server goes away mid-call, both see reconnecting, and the call resumes", async () => {
  const server = await startServer();
  const browser = await launchBrowser();
  try {
    const started = await startedCall(server);
    const patient = await (await browser.newContext({ viewport: { width: 390, height: 844 } })).newPage();
    const doctor = await (await browser.newContext()).newPage();
    await patient.goto(started.patient_link);
    await patient.getByRole("heading", { name: "Waiting for your doctor" }).waitFor();
    await doctor.goto(started.doctor_link);
    for (const page of [doctor, patient]) {
      await eventually("connected", async () => (await body(page, "connected")) === "true");
    }

    await eventually("video decoded", async () => Number(await body(patient, "framesDecoded")) > 0);
    await server.crash({ down: true });
    for (const page of [doctor, patient]) {
      await eventually("the reconnecting banner", async () => /reconnecting/.test(await page.locator("#banner").innerText()));
    }
    // Media is peer to peer: it keeps playing while signaling is down.
    const before = Number(await body(patient, "framesDecoded"));
    await eventually("video still decoded", async () => Number(await body(patient, "framesDecoded")) > before + 10);
    await screenshot(patient, "15-patient-reconnecting");

    await server.restart();
    for (const page of [doctor, patient]) {
      await eventually("the banner clears", async () => !(await page.locator("#banner").isVisible()), 30000);
      assert.equal(await body(page, "connected"), "true");
    }
    // Still in the same call: chat goes through the restarted server.
    await chat(patient, doctor, "Back again");

    // A reload rejoins the same call (the token is kept for this tab) and brings the chat history back.
    await patient.reload();
    await eventually("connected after reload", async () => (await body(patient, "connected")) === "true", 30000);
    await patient.getByRole("button", { name: "Chat" }).click();
    await patient.locator("#chat-log li", { hasText: "Back again" }).waitFor();
  } finally {
    await browser.close();
    await server.stop();
  }
});
