// The self view a user can move out of the way (mouse, finger, arrow keys; kept on screen; kept
// after a reload), and the other side's picture on a phone: a portrait picture fills the screen, a
// landscape one stays whole over a blurred copy instead of black bands.
import { test } from "node:test";
import assert from "node:assert/strict";
import { startServer, startedCall, launchBrowser, screenshot, eventually, assertAccessible, bothInCall, decodingVideo, dataset as body } from "./harness.mjs";

const rectOf = (page, selector) => page.locator(selector).evaluate((e) => {
  const r = e.getBoundingClientRect();
  return { left: Math.round(r.left), top: Math.round(r.top), right: Math.round(r.right), bottom: Math.round(r.bottom), width: Math.round(r.width) };
});
const inside = (r, width, height) => r.left >= 0 && r.top >= 0 && r.right <= width && r.bottom <= height;

/** A finger drag through the DevTools protocol (real touch events, so pointer events of type touch). */
async function touchDrag(page, from, to, steps = 8) {
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Input.dispatchTouchEvent", { type: "touchStart", touchPoints: [from] });
  for (let i = 1; i <= steps; i++) {
    const point = { x: from.x + ((to.x - from.x) * i) / steps, y: from.y + ((to.y - from.y) * i) / steps };
    await cdp.send("Input.dispatchTouchEvent", { type: "touchMove", touchPoints: [point] });
  }
  await cdp.send("Input.dispatchTouchEvent", { type: "touchEnd", touchPoints: [] });
}

test("the self view moves by mouse, finger and arrow keys, stays on screen and is remembered", async () => {
  const server = await startServer();
  const browser = await launchBrowser();
  try {
    const { patient, doctor } = await bothInCall(browser, await startedCall(server));

    // The doctor drags it with the mouse far past the top-left corner: it stops at the corner.
    const start = await rectOf(doctor, "#local-video");
    await doctor.mouse.move((start.left + start.right) / 2, (start.top + start.bottom) / 2);
    await doctor.mouse.down();
    await doctor.mouse.move(-500, -500, { steps: 10 });
    await doctor.mouse.up();
    let moved = await rectOf(doctor, "#local-video");
    assert.deepEqual([moved.left, moved.top], [0, 0], `kept on screen at the corner: ${JSON.stringify(moved)}`);

    // With the keyboard: focus it, two steps right and one down (16 px each).
    await doctor.getByLabel("Your own video (drag it, or use the arrow keys, to move it)").focus();
    for (const key of ["ArrowRight", "ArrowRight", "ArrowDown"]) await doctor.keyboard.press(key);
    moved = await rectOf(doctor, "#local-video");
    assert.deepEqual([moved.left, moved.top], [32, 16], JSON.stringify(moved));
    await doctor.keyboard.press("Shift+ArrowLeft"); // a big step, stopped by the edge
    assert.equal((await rectOf(doctor, "#local-video")).left, 0);
    await screenshot(doctor, "91-doctor-self-view-moved");
    await assertAccessible(doctor, "the doctor's call with the self view moved and focused");

    // A reload keeps where it was put.
    await doctor.reload();
    await decodingVideo(doctor);
    moved = await rectOf(doctor, "#local-video");
    assert.deepEqual([moved.left, moved.top], [0, 16], `remembered after a reload: ${JSON.stringify(moved)}`);

    // The patient moves hers with a finger, up and past the right edge: it stays on her screen.
    const before = await rectOf(patient, "#local-video");
    const from = { x: (before.left + before.right) / 2, y: (before.top + before.bottom) / 2 };
    await touchDrag(patient, from, { x: from.x + 300, y: from.y - 400 });
    const after = await rectOf(patient, "#local-video");
    assert.ok(inside(after, 390, 844), `on screen: ${JSON.stringify(after)}`);
    assert.equal(after.right, 390, `stopped at the right edge: ${JSON.stringify(after)}`);
    assert.ok(after.top <= before.top - 380, `moved up: ${JSON.stringify([before, after])}`);
    // Turning the camera off, the card in its place stays where she put it.
    // (A click: a tap right after the emulated touch drag above is sometimes taken as a second
    // finger by Chromium's touch emulation, and nothing is clicked.)
    await patient.getByRole("button", { name: "Turn camera off" }).click();
    // The card is drawn once the page has handled the tap: wait for it rather than read it at once.
    const card = await eventually("the camera-off card in the self view's place", async () => {
      const rect = await rectOf(patient, "#local-off");
      return rect.width > 0 ? rect : null;
    }, 5000);
    assert.ok(Math.abs(card.top - after.top) <= 1 && inside(card, 390, 844), JSON.stringify([after, card]));
    await screenshot(patient, "92-phone-self-view-moved");
  } finally {
    await browser.close();
    await server.stop();
  }
});

test("on a phone a portrait picture fills the screen and a landscape one is whole, without black bands", async () => {
  const server = await startServer();
  const browser = await launchBrowser();
  try {
    const { patient, doctor } = await bothInCall(browser, await startedCall(server));
    const fit = (page, selector) => page.locator(selector).evaluate((e) => getComputedStyle(e).objectFit);
    const shown = (page, selector) => page.locator(selector).evaluate((e) => getComputedStyle(e).display !== "none");

    // The doctor's landscape camera on the patient's upright phone: whole, over its blurred copy.
    await eventually("landscape", async () => (await body(patient, "remoteShape")) === "landscape");
    assert.equal(await fit(patient, "#remote-video"), "contain");
    assert.ok(await shown(patient, "#remote-backdrop"), "the blurred copy fills the bands");
    await screenshot(patient, "93-phone-landscape-picture");
    await assertAccessible(patient, "the patient's call with a landscape picture");
    // On the doctor's landscape screen there are no bands to fill.
    assert.equal(await shown(doctor, "#remote-backdrop"), false);

    // The doctor's camera turns portrait (a canvas 360×640 in its place): it fills the phone.
    await doctor.evaluate(async () => {
      const canvas = Object.assign(document.createElement("canvas"), { width: 360, height: 640 });
      const context = canvas.getContext("2d");
      let frame = 0;
      setInterval(() => {
        context.fillStyle = `hsl(${(frame += 5) % 360} 70% 45%)`;
        context.fillRect(0, 0, 360, 640);
        context.fillStyle = "#fff";
        context.fillRect(150, 40 + (frame % 500), 60, 60);
      }, 33);
      const track = canvas.captureStream(30).getVideoTracks()[0];
      const sender = state.pc.getSenders().find((s) => s.track && s.track.kind === "video");
      await sender.replaceTrack(track);
    });
    await eventually("portrait", async () => (await body(patient, "remoteShape")) === "portrait", 20000);
    assert.equal(await fit(patient, "#remote-video"), "cover");
    assert.equal(await shown(patient, "#remote-backdrop"), false);
    await screenshot(patient, "94-phone-portrait-picture");
    await assertAccessible(patient, "the patient's call with a portrait picture");
  } finally {
    await browser.close();
    await server.stop();
  }
});
