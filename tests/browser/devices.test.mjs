// The devices a patient picks on the device test page are the ones her call uses; the waiting room
// and the call offer the same choice in the page, without opening the camera a second time.
// Chromium's fake devices: two cameras (device-count=2), three microphones and three speakers.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, startedCall, launchBrowser, screenshot, eventually, assertAccessible, dataset as body } from "./harness.mjs";

/** An init script: counts the page's getUserMedia calls. */
function countCameraOpens() {
  window.cameraOpens = 0;
  const open = navigator.mediaDevices.getUserMedia.bind(navigator.mediaDevices);
  navigator.mediaDevices.getUserMedia = (constraints) => { if (constraints.video) window.cameraOpens += 1; return open(constraints); };
}

/** In the call page: the device ids its camera and microphone use, locally and in the peer connection. */
function devicesInUse() {
  /* global state */
  const id = (track) => track?.getSettings().deviceId;
  const senders = state.pc ? state.pc.getSenders().filter((s) => s.track) : [];
  return {
    camera: id(state.local.getVideoTracks()[0]), microphone: id(state.local.getAudioTracks()[0]),
    sentCamera: id(senders.find((s) => s.track.kind === "video")?.track), speaker: document.getElementById("remote-video").sinkId,
  };
}

test("the devices chosen on the device test page are used in the call, and can be changed in it", async () => {
  const server = await startServer();
  const browser = await launchBrowser({ camera: false, args: ["--use-fake-device-for-media-stream=device-count=2"] });
  try {
    const call = await startedCall(server);
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    await context.addInitScript(countCameraOpens);
    const patient = await context.newPage();
    await patient.goto(call.patient_link);
    await patient.getByRole("heading", { name: "Waiting for your doctor" }).waitFor();

    // The device test page, in the same tab: it names things plainly and leads back to the visit.
    await patient.goto(`${server.base}/medical/video-call/test-devices/`);
    await patient.getByText("Your camera works").waitFor();
    const text = await patient.locator("main").innerText();
    for (const jargon of ["RTCPeerConnection", "getUserMedia", "VP8", "H.264", "getDisplayMedia"]) assert.ok(!text.includes(jargon), `no "${jargon}" on the page`);
    const pick = async (label, name) => {
      const select = patient.getByRole("combobox", { name: label, exact: true });
      const value = await select.locator("option", { hasText: name }).getAttribute("value");
      await select.selectOption(value);
      return value;
    };
    const chosen = { camera: await pick("Camera", "fake_device_1"), microphone: await pick("Microphone", "Fake Audio Input 2"), speaker: await pick("Speaker", "Fake Audio Output 2") };
    await eventually("the preview uses the chosen camera", async () =>
      (await patient.locator("#preview").evaluate((v) => v.srcObject?.getVideoTracks()[0]?.getSettings().deviceId)) === chosen.camera);
    await patient.getByRole("button", { name: "Play a test sound" }).click();
    await patient.getByText("Did you hear it?").waitFor();
    await screenshot(patient, "61-device-test-choices");
    await assertAccessible(patient, "the device test page");
    await patient.getByRole("link", { name: "Back to your visit" }).click();

    // Back in the waiting room, the call page opened the chosen devices.
    await patient.getByRole("heading", { name: "Waiting for your doctor" }).waitFor();
    await eventually("the chosen devices in the call page", async () => {
      const used = await patient.evaluate(devicesInUse);
      return used.camera === chosen.camera && used.microphone === chosen.microphone && used.speaker === chosen.speaker;
    }, 10000);

    // The waiting room's device check opens in the page, with the camera already open.
    const opensBefore = await patient.evaluate(() => window.cameraOpens);
    await patient.getByRole("button", { name: "Check camera, microphone and speaker" }).click();
    const dialog = patient.getByRole("dialog", { name: "Camera, microphone and speaker" });
    await dialog.waitFor();
    assert.equal(await dialog.getByLabel("Camera", { exact: true }).inputValue(), chosen.camera);
    assert.equal(await patient.evaluate(() => window.cameraOpens), opensBefore, "the device check does not open the camera again");
    await screenshot(patient, "62-waiting-room-device-check");
    await assertAccessible(patient, "the device dialog in the waiting room");
    await dialog.getByRole("button", { name: "Done" }).click();

    // The doctor joins; in the call the patient switches to the other camera: the doctor gets it.
    const doctor = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    await doctor.goto(call.doctor_link);
    await eventually("connected", async () => (await body(patient, "connected")) === "true");
    const other = (await patient.evaluate(async () => (await navigator.mediaDevices.enumerateDevices())
      .filter((d) => d.kind === "videoinput").map((d) => d.deviceId))).find((id) => id !== chosen.camera);
    await patient.getByRole("button", { name: "Devices" }).click();
    await dialog.getByLabel("Camera", { exact: true }).selectOption(other);
    await eventually("the call sends the other camera", async () => (await patient.evaluate(devicesInUse)).sentCamera === other);
    await dialog.getByRole("button", { name: "Done" }).click();
    const frames = await doctor.locator("#remote-video").evaluate((v) => v.getVideoPlaybackQuality().totalVideoFrames);
    await eventually("the doctor keeps getting pictures", async () =>
      (await doctor.locator("#remote-video").evaluate((v) => v.getVideoPlaybackQuality().totalVideoFrames)) > frames + 10);
    // Remembered for next time.
    assert.equal(await patient.evaluate(() => JSON.parse(localStorage.getItem("televisit-devices")).camera), other);
  } finally {
    await browser.close();
    await server.stop();
  }
});

test("on a phone, \"Switch camera\" goes to the other camera in the call", async () => {
  const server = await startServer();
  const browser = await launchBrowser({ camera: false, args: ["--use-fake-device-for-media-stream=device-count=2"] });
  try {
    const call = await startedCall(server);
    const phone = await browser.newContext({ viewport: { width: 390, height: 844 }, hasTouch: true, isMobile: true });
    const patient = await phone.newPage();
    await patient.goto(call.patient_link);
    await patient.getByRole("heading", { name: "Waiting for your doctor" }).waitFor();
    const doctor = await (await browser.newContext()).newPage();
    await doctor.goto(call.doctor_link);
    await eventually("connected", async () => (await body(patient, "connected")) === "true");
    const first = (await patient.evaluate(devicesInUse)).sentCamera;
    await patient.getByRole("button", { name: "Switch camera" }).tap();
    const second = await eventually("the call sends the other camera", async () => {
      const sent = (await patient.evaluate(devicesInUse)).sentCamera;
      return sent && sent !== first && sent;
    });
    await patient.getByRole("button", { name: "Switch camera" }).tap();
    await eventually("and back", async () => (await patient.evaluate(devicesInUse)).sentCamera === first);
    assert.notEqual(second, first);
  } finally {
    await browser.close();
    await server.stop();
  }
});
