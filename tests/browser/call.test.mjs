// A whole visit in two browser contexts: the doctor signs in and starts the call, the patient waits,
// both see each other, use the controls and chat, and the doctor ends the call.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, setUpVisit, startedCall, signInAndStartCall, launchBrowser, screenshot, eventually, chat, endCall, assertAccessible, dataset as body, PATIENT_NAME } from "./harness.mjs";

test("a video visit from sign-in to the end, in two browsers", async () => {
  const server = await startServer();
  const browser = await launchBrowser();
  try {
    await setUpVisit(server);
    const doctorContext = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const patientContext = await browser.newContext({ viewport: { width: 390, height: 844 } }); // a phone
    const doctor = await doctorContext.newPage();
    const patient = await patientContext.newPage();

    // The doctor signs in and starts the call.
    const patientLink = await signInAndStartCall(doctor, server, { shots: true });
    assert.match(patientLink, /\/video-call\/#token=tv1\./);

    // The patient opens the link and waits; the token leaves the address bar.
    await patient.goto(patientLink);
    await patient.getByRole("heading", { name: "Waiting for your doctor" }).waitFor();
    assert.ok(!patient.url().includes("token"), "the token is removed from the address bar");
    assert.equal(await patient.getByRole("button", { name: "Share screen" }).count(), 0, "no share button for patients");
    await screenshot(patient, "03-patient-waiting-room");
    // A second tab keeps the doctor's list open; its call status follows the call without a reload.
    const list = await doctorContext.newPage();
    await list.goto(`${server.base}/medical/appointments/`);
    assert.equal(await list.locator("td.status").innerText(), "Patient waiting");

    // The doctor joins; both see the other's video playing in HD.
    await doctor.getByRole("button", { name: `Join video call with ${PATIENT_NAME}` }).click();
    await doctor.waitForURL(/video-call\/$/);
    for (const page of [doctor, patient]) {
      await eventually("connected", async () => (await body(page, "connected")) === "true");
    }
    await patient.getByRole("heading", { name: "Waiting for your doctor" }).waitFor({ state: "hidden" });
    for (const page of [doctor, patient]) {
      assert.equal(await body(page, "signaling"), "websocket", "the WebSocket works under the page's CSP");
    }
    for (const page of [doctor, patient]) {
      const first = Number(await eventually("frames decoded", async () => Number(await body(page, "framesDecoded")) > 0 && body(page, "framesDecoded")));
      await eventually("frames decoded increasing", async () => Number(await body(page, "framesDecoded")) > first + 10);
      const size = await eventually("HD frames", async () => {
        const [w, h] = (await body(page, "frameSize")).split("x").map(Number);
        return w >= 1280 && h >= 720 && `${w}x${h}`;
      }, 30000);
      assert.ok(size);
      // The element shows what the statistics counted (its size follows the next painted frame).
      await eventually("remote video plays in HD", () => page.locator("#remote-video").evaluate((v) => !v.paused && v.videoWidth >= 1280), 5000);
    }
    await eventually("the list shows the call in progress", async () => (await list.locator("td.status").innerText()) === "In call");
    await list.close();
    await screenshot(doctor, "04-doctor-in-call");
    await screenshot(patient, "05-patient-in-call");

    // Mute and camera off are shown on the other side.
    await patient.getByRole("button", { name: "Mute", exact: true }).click();
    await eventually("doctor sees the patient muted", async () => (await body(doctor, "peerAudio")) === "false");
    await patient.getByRole("button", { name: "Turn camera off" }).click();
    await eventually("doctor sees the camera off", async () => (await body(doctor, "peerVideo")) === "false");
    assert.match(await doctor.locator("#peer-state").innerText(), /muted.*Camera off/);
    await screenshot(doctor, "06-doctor-sees-patient-muted");
    // On a desktop the buttons say what they do next; axe finds nothing in either state.
    await assertAccessible(doctor, "the doctor's call");
    await doctor.getByRole("button", { name: "Mute", exact: true }).click();
    await doctor.getByRole("button", { name: "Turn camera off" }).click();
    await doctor.getByRole("button", { name: "Turn camera on" }).waitFor();
    await doctor.getByText("You are muted").waitFor();
    await doctor.getByText("Your camera is off").waitFor();
    await screenshot(doctor, "06b-doctor-muted-camera-off");
    await assertAccessible(doctor, "the doctor's call, muted, camera off");
    await doctor.getByRole("button", { name: "Unmute", exact: true }).click();
    await doctor.getByRole("button", { name: "Turn camera on" }).click();

    // The doctor shares a screen and the patient receives it.
    await doctor.getByRole("button", { name: "Share screen" }).click();
    await eventually("patient sees the shared screen", async () => (await body(patient, "peerSharing")) === "true");
    await eventually("screen video plays", async () => patient.locator("#screen-video").evaluate((v) => !v.hidden && v.videoWidth > 0));
    await screenshot(patient, "07-patient-sees-screen-share");
    // The patient reloads her page mid-share: the doctor's page names its screen again for the new one.
    await patient.reload();
    await eventually("the reloaded page sees the shared screen", async () => (await body(patient, "peerSharing")) === "true", 20000);
    await eventually("the screen plays again", async () => patient.locator("#screen-video").evaluate((v) => !v.hidden && v.videoWidth > 0), 20000);

    // Chat both ways.
    await chat(patient, doctor, "My knee hurts when I climb stairs");
    await chat(doctor, patient, "Let's take a look");
    await screenshot(patient, "08-patient-chat");

    // Quality level and timer.
    const level = await eventually("a quality level", async () => {
      const l = await doctor.locator("#quality").getAttribute("data-level");
      return l !== "unknown" && l;
    });
    assert.ok(["excellent", "good"].includes(level), `on loopback the quality is Excellent or Good, not ${level}`);
    const t1 = await doctor.locator("#timer").innerText();
    assert.equal(await doctor.locator("#timer").evaluate((e) => Boolean(e.closest("[aria-live], [role=status], [role=log], [role=timer]"))), false, "the ticking timer is not announced");
    await eventually("the timer runs", async () => (await doctor.locator("#timer").innerText()) !== t1);

    // Fullscreen toggles.
    await doctor.getByRole("button", { name: "Full screen" }).click();
    await eventually("fullscreen on", async () => doctor.evaluate(() => Boolean(document.fullscreenElement)));
    await doctor.getByRole("button", { name: "Full screen" }).click();
    await eventually("fullscreen off", async () => doctor.evaluate(() => !document.fullscreenElement));

    // The doctor ends the call; both see the end and the duration.
    await endCall(doctor);
    for (const page of [doctor, patient]) {
      await page.getByRole("heading", { name: "The call has ended" }).waitFor();
      assert.match(await page.locator("#screen-text").innerText(), /Duration: \d\d:\d\d/);
    }
    await screenshot(patient, "09-patient-call-ended");
  } finally {
    await browser.close();
    await server.stop();
  }
});

test("an expired link and an invalid link show their error pages", async () => {
  const server = await startServer(["--token-ttl-seconds", "1"]);
  const browser = await launchBrowser();
  try {
    const started = await startedCall(server);
    await new Promise((r) => setTimeout(r, 1500));
    const page = await (await browser.newContext()).newPage();
    await page.goto(started.patient_link);
    await page.getByRole("heading", { name: "This link has expired" }).waitFor();
    await screenshot(page, "10-expired-link");
    await page.goto(started.patient_link.replace(/.{4}$/, "AAAA"));
    await page.reload();
    await page.getByRole("heading", { name: "This link is not valid" }).waitFor();
  } finally {
    await browser.close();
    await server.stop();
  }
});

test("the device test lists the fake devices, previews the camera and moves the level meter", async () => {
  const server = await startServer();
  const browser = await launchBrowser();
  try {
    const page = await (await browser.newContext()).newPage();
    await page.goto(`${server.base}/medical/video-call/test-devices/`);
    await eventually("camera listed", async () => (await page.locator("#camera-select option").count()) > 0);
    assert.ok((await page.locator("#mic-select option").count()) > 0, "a microphone is listed");
    await eventually("preview plays", async () => page.locator("#preview").evaluate((v) => v.videoWidth > 0 && !v.paused));
    const levels = new Set();
    await eventually("the level meter moves", async () => {
      levels.add(await page.locator("#level").evaluate((m) => m.value));
      return levels.size > 2;
    });
    assert.equal(await page.locator('#checks li[data-ok="true"]', { hasText: "Video calls in this browser" }).count(), 1);
    await screenshot(page, "11-device-test");
  } finally {
    await browser.close();
    await server.stop();
  }
});
