// The patient on a phone (390×844, touch): the waiting room shows her own picture and lets her
// mute, turn the camera off, check her devices and leave; the keyboard reaches only what is on
// screen; in the call, mute and camera-off are said in words and crossed-out icons, the chat
// leaves the doctor's video visible, a shared screen has a caption. axe-core checks every state.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, startedCall, launchBrowser, screenshot, eventually, assertAccessible, tabWalk, dataset as body } from "./harness.mjs";

const PHONE = { viewport: { width: 390, height: 844 }, hasTouch: true, isMobile: true };

/** Whether the element matched by `selector` is on screen and not covered at its centre. */
function onTop(selector) {
  const e = document.querySelector(selector);
  if (!e || !e.checkVisibility()) return false;
  const r = e.getBoundingClientRect();
  const top = document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2);
  return e === top || e.contains(top);
}

/** The box of the element matched by `selector`. */
const box = (page, selector) => page.locator(selector).evaluate((e) => e.getBoundingClientRect().toJSON());

test("a patient on a phone: the waiting room, then the call's states, by touch and keyboard, with no axe violations", async () => {
  const server = await startServer();
  const browser = await launchBrowser();
  try {
    const call = await startedCall(server);
    const patient = await (await browser.newContext(PHONE)).newPage();
    await patient.goto(call.patient_link);
    await patient.getByRole("heading", { name: "Waiting for your doctor" }).waitFor();
    await eventually("the self-view plays", async () => patient.locator("#local-video").evaluate((v) => v.videoWidth > 0));

    // Her own picture fills the screen and nothing covers its upper half.
    const self = await box(patient, "#local-video");
    assert.ok(self.width >= 390 && self.height >= 800, `the self-view is ${self.width}×${self.height}`);
    const card = await box(patient, "#waiting .card");
    await screenshot(patient, "70-phone-waiting-room");
    assert.ok(card.top > 844 / 2, `the waiting card starts at ${card.top} px`);
    const overlay = await patient.locator("#waiting").evaluate((e) => getComputedStyle(e).backgroundColor);
    assert.match(overlay, /rgba\(0, 0, 0, 0\)|transparent/, `the waiting room's backdrop: ${overlay}`);
    await screenshot(patient, "70-phone-waiting-room");
    await assertAccessible(patient, "the waiting room");

    // The keyboard reaches the waiting room's buttons only, none of the call's hidden ones.
    const walk = await tabWalk(patient, 6);
    assert.deepEqual(walk.slice(0, 5).map((w) => w.name), ["Mute", "Turn camera off", "Check camera, microphone and speaker", "Leave", "Hide my IP address"], JSON.stringify(walk));
    assert.ok(walk.every((w) => w.visible), `every focused control is visible: ${JSON.stringify(walk)}`);

    // She mutes and turns the camera off while waiting: words and crossed-out icons say so.
    await patient.getByRole("button", { name: "Mute", exact: true }).tap();
    await patient.getByRole("button", { name: "Turn camera off" }).tap();
    await patient.getByText("You are muted").waitFor();
    await patient.getByText("Your camera is off").waitFor();
    assert.equal(await patient.locator("#waiting-mute use").getAttribute("href"), "#i-mic-off");
    assert.equal(await patient.locator("#waiting-camera use").getAttribute("href"), "#i-camera-off");
    await screenshot(patient, "71-phone-waiting-room-muted-camera-off");
    await assertAccessible(patient, "the waiting room, muted, camera off");

    // She leaves the waiting room, then comes back with the same link.
    await patient.getByRole("button", { name: "Leave", exact: true }).tap();
    await patient.getByRole("heading", { name: "You left the call" }).waitFor();
    await screenshot(patient, "72-phone-left-the-waiting-room");
    await assertAccessible(patient, "the left-the-call screen");
    await patient.getByRole("button", { name: "Try again" }).tap();
    await patient.getByRole("heading", { name: "Waiting for your doctor" }).waitFor();

    // The doctor joins; in the call she mutes and turns the camera off again.
    const doctor = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    await doctor.goto(call.doctor_link);
    await eventually("connected", async () => (await body(patient, "connected")) === "true");
    await eventually("the doctor's video plays", async () => patient.locator("#remote-video").evaluate((v) => v.videoWidth > 0));
    await screenshot(patient, "73-phone-in-call");
    await assertAccessible(patient, "the call on a phone");
    const inCall = await tabWalk(patient, 6);
    assert.ok(inCall.every((w) => w.visible), `every focused control is visible: ${JSON.stringify(inCall)}`);
    await patient.getByRole("button", { name: "Mute", exact: true }).tap();
    await patient.getByRole("button", { name: "Turn camera off" }).tap();
    await patient.getByRole("button", { name: "Unmute", exact: true }).waitFor();
    await patient.getByRole("button", { name: "Turn camera on" }).waitFor();
    await screenshot(patient, "74-phone-in-call-muted-camera-off");
    assert.ok(await patient.evaluate(onTop, "#muted-note"), "\"You are muted\" is on screen");
    assert.ok(await patient.evaluate(onTop, "#local-off"), "\"Your camera is off\" stands in for the self-view");
    assert.equal(await patient.locator("#mute use").getAttribute("href"), "#i-mic-off");
    assert.equal(await patient.locator("#camera use").getAttribute("href"), "#i-camera-off");
    await eventually("the doctor sees her muted", async () => (await body(doctor, "peerAudio")) === "false");
    await screenshot(patient, "74-phone-in-call-muted-camera-off");
    await assertAccessible(patient, "the call on a phone, muted, camera off");
    await assertAccessible(doctor, "the doctor's call, the patient muted");

    // The chat takes the lower half; the doctor's video stays above it; it closes with a button.
    await patient.getByRole("button", { name: "Chat" }).tap();
    const [video, chat] = [await box(patient, "#remote-video"), await box(patient, "#chat")];
    assert.ok(video.bottom <= chat.top + 1 && video.height > 200, `video ${JSON.stringify(video)}, chat ${JSON.stringify(chat)}`);
    await screenshot(patient, "75-phone-chat-open");
    await assertAccessible(patient, "the chat open on a phone");
    await patient.getByRole("button", { name: "Close chat" }).tap();
    await patient.locator("#chat").waitFor({ state: "hidden" });

    // The doctor shares a screen: the patient's page says what it is.
    await doctor.getByRole("button", { name: "Share screen" }).click();
    await eventually("the shared screen plays", async () => patient.locator("#screen-video").evaluate((v) => !v.hidden && v.videoWidth > 0));
    assert.ok(await patient.evaluate(onTop, "#screen-caption"), "the shared screen's caption is on screen");
    assert.equal(await patient.locator("#screen-caption").innerText(), "The doctor's shared screen");
    await screenshot(patient, "76-phone-screen-share");
    await doctor.getByText("You are sharing your screen").waitFor();
    // The doctor sees a preview of what goes out.
    const preview = doctor.getByRole("figure", { name: "What the patient sees of your screen" });
    await preview.waitFor();
    await eventually("the preview plays", () => doctor.locator("#share-preview-video").evaluate((v) => !v.paused && v.videoWidth > 0));
    await screenshot(doctor, "77-doctor-sharing-preview");
    await assertAccessible(patient, "a shared screen on a phone");
    await assertAccessible(doctor, "the doctor sharing a screen");
    // Stopping ends both: the patient's shared screen and the doctor's preview.
    await doctor.getByRole("button", { name: "Stop sharing" }).click();
    await preview.waitFor({ state: "hidden" });
    await eventually("the patient's shared screen goes", () => patient.locator("#screen-video").evaluate((v) => v.hidden));
  } finally {
    await browser.close();
    await server.stop();
  }
});
