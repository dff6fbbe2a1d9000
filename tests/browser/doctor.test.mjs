// The doctor's list and call: the list updates in place (keyboard focus stays where it was while
// the status changes), "Copy" says the link was copied, "End call" asks first. axe-core on each.
import { test } from "node:test";
import assert from "node:assert/strict";
import {
  startServer, signInAndStartCall, setUpVisit, startedCall, bothInCall, launchBrowser, screenshot, eventually, assertAccessible, endCall, dataset as body, DOCTOR, PATIENT_NAME,
} from "./harness.mjs";

test("the doctor: sign-in keeps the e-mail, the list keeps focus, Copy and Send confirm, End call asks first, the end leads back", async () => {
  const server = await startServer();
  const browser = await launchBrowser();
  try {
    await setUpVisit(server);
    const context = await browser.newContext({ viewport: { width: 1024, height: 768 } }); // a tablet
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: server.base });
    const doctor = await context.newPage();

    // A wrong password keeps the e-mail typed, and the password field takes the focus.
    await doctor.goto(`${server.base}/medical/login`);
    await doctor.getByLabel("E-mail").fill(DOCTOR.email);
    await doctor.getByLabel("Password").fill("wrong password");
    await doctor.getByRole("button", { name: "Sign in" }).click();
    await doctor.getByText("Wrong e-mail or password.").waitFor();
    assert.equal(await doctor.getByLabel("E-mail").inputValue(), DOCTOR.email);
    assert.equal(await doctor.evaluate(() => document.activeElement.id), "password");
    await screenshot(doctor, "79-doctor-wrong-password");
    await assertAccessible(doctor, "the sign-in page after a wrong password");
    const patientLink = await signInAndStartCall(doctor, server);
    await assertAccessible(doctor, "the doctor's list with a started call");

    // "Copy" puts the link on the clipboard and says so.
    await doctor.getByRole("button", { name: `Copy the link for ${PATIENT_NAME}` }).click();
    await doctor.getByText("Link copied").waitFor();
    assert.equal(await doctor.evaluate(() => navigator.clipboard.readText()), patientLink);
    await screenshot(doctor, "80-doctor-link-copied");

    // Keyboard focus on "Join video call" survives the list's refreshes (every 3 s)…
    const joinButton = doctor.getByRole("button", { name: `Join video call with ${PATIENT_NAME}` });
    await joinButton.focus();
    await doctor.evaluate(() => { document.querySelector("tr[data-appointment]").marked = true; });
    await doctor.waitForTimeout(3500);
    assert.equal(await doctor.evaluate(() => document.activeElement.getAttribute("aria-label")), `Join video call with ${PATIENT_NAME}`);
    assert.ok(await doctor.evaluate(() => document.querySelector("tr[data-appointment]").marked), "the row was not redrawn");

    // …and the status change when the patient arrives (the row is redrawn, the focus put back).
    const patient = await (await browser.newContext({ viewport: { width: 390, height: 844 } })).newPage();
    await patient.goto(patientLink);
    await patient.getByRole("heading", { name: "Waiting for your doctor" }).waitFor();
    await eventually("the list shows the patient waiting", async () => (await doctor.locator("td.status").innerText()) === "Patient waiting");
    assert.equal(await doctor.evaluate(() => document.activeElement.getAttribute("aria-label")), `Join video call with ${PATIENT_NAME}`);
    await assertAccessible(doctor, "the doctor's list with the patient waiting");

    // A waiting-room message: the doctor sees it was delivered, the patient sees it.
    await doctor.getByLabel(`Waiting-room message for ${PATIENT_NAME}`).fill("Five more minutes, please");
    await doctor.getByRole("button", { name: `Send the waiting-room message to ${PATIENT_NAME}` }).click();
    await doctor.getByText("Delivered: “Five more minutes, please”").waitFor();
    await patient.getByText("Five more minutes, please").waitFor();

    // In the call, "End call" asks first; "Keep talking" keeps the call.
    await joinButton.click();
    await doctor.waitForURL(/video-call\/$/);
    await eventually("connected", async () => (await body(doctor, "connected")) === "true");
    await doctor.getByRole("button", { name: "End call", exact: true }).click();
    const confirm = doctor.getByRole("dialog", { name: "End the call for everyone?" });
    await confirm.waitFor();
    await screenshot(doctor, "81-doctor-end-call-confirmation");
    await assertAccessible(doctor, "the end-call confirmation");
    await confirm.getByRole("button", { name: "Keep talking" }).click();
    await confirm.waitFor({ state: "hidden" });
    await doctor.waitForTimeout(500);
    assert.equal(await body(patient, "screen"), undefined, "the call goes on");
    await endCall(doctor);
    await patient.getByRole("heading", { name: "The call has ended" }).waitFor();
    // The doctor's end screen leads back to the list.
    await doctor.getByRole("link", { name: "Back to today's visits" }).click();
    await doctor.waitForURL(/\/medical\/appointments\/$/);
    await eventually("the list shows the call ended", async () => (await doctor.locator("td.status").innerText()).includes("Ended"));
  } finally {
    await browser.close();
    await server.stop();
  }
});

test("the doctor's card tells 'not here yet', 'waiting' and 'in call' apart, and gives a new patient link after a reload", async () => {
  const server = await startServer();
  const browser = await launchBrowser();
  try {
    await setUpVisit(server);
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const doctor = await context.newPage();
    const firstLink = await signInAndStartCall(doctor, server);
    const status = doctor.locator("td.status");
    assert.equal(await status.innerText(), "Patient not here yet");

    // After a reload the page no longer has the link (the server keeps only its hash): the
    // doctor asks for a new one, which replaces the earlier.
    await doctor.reload();
    await doctor.getByRole("button", { name: `Join video call with ${PATIENT_NAME}` }).waitFor();
    assert.equal(await doctor.locator("input.patient-link").count(), 0);
    await doctor.getByRole("button", { name: `New link for the patient, ${PATIENT_NAME} (the earlier link stops working)` }).click();
    await doctor.getByText("New link: the earlier one no longer works.").waitFor();
    const newLink = await doctor.locator("input.patient-link").inputValue();
    assert.match(newLink, /\/video-call\/#token=tv1\./);
    assert.notEqual(newLink, firstLink);
    assert.equal(await doctor.evaluate(() => document.activeElement.dataset.key), "copy", "focus on the new link's Copy");
    await screenshot(doctor, "82-doctor-new-patient-link");
    await assertAccessible(doctor, "the doctor's list with a renewed patient link");

    // The earlier link is refused as replaced; the new one leads to the waiting room.
    const patientContext = await browser.newContext({ viewport: { width: 390, height: 844 } });
    const stale = await patientContext.newPage();
    await stale.goto(firstLink);
    await stale.getByRole("heading", { name: "This link was replaced" }).waitFor();
    const patient = await patientContext.newPage();
    await patient.goto(newLink);
    await patient.getByRole("heading", { name: "Waiting for your doctor" }).waitFor();
    await eventually("the card shows the patient waiting", async () => (await status.innerText()) === "Patient waiting");
    await screenshot(doctor, "83-doctor-patient-waiting");
    await assertAccessible(doctor, "the doctor's list with the patient waiting");

    // The doctor joins from a second tab; the list says "In call".
    const call = await context.newPage();
    await doctor.getByRole("button", { name: `Join video call with ${PATIENT_NAME}` }).click();
    await doctor.waitForURL(/video-call\/$/);
    await call.goto(`${server.base}/medical/appointments/`);
    await eventually("the card shows the call", async () => (await call.locator("td.status").innerText()) === "In call");
    await screenshot(call, "84-doctor-list-in-call");
    await assertAccessible(call, "the doctor's list with the call in progress");
  } finally {
    await browser.close();
    await server.stop();
  }
});

test("the doctor's quality strip draws the visit's bitrate, loss and delay, and says them in words", async () => {
  const server = await startServer();
  const browser = await launchBrowser();
  try {
    const { patient, doctor } = await bothInCall(browser, await startedCall(server));
    const strip = doctor.getByRole("figure", { name: /This visit's connection/ });
    await strip.waitFor();
    await eventually("a few seconds drawn", async () => Number(await body(doctor, "stripPoints")) >= 4);
    for (const line of ["#strip-rate", "#strip-loss", "#strip-rtt"]) {
      const points = (await doctor.locator(line).getAttribute("points")).trim().split(" ");
      assert.ok(points.length >= 4, `${line}: ${points}`);
    }
    // The words: now and over the visit (bitrate, loss, delay).
    const rate = "(\\d+ kbit/s|\\d+\\.\\d Mbit/s)";
    const summary = await doctor.locator("#strip-summary").innerText();
    assert.match(summary, new RegExp(`^Now ${rate}, \\d+\\.\\d % loss, \\d+ ms delay\\. This visit: average ${rate}, lowest ${rate}, worst loss \\d+\\.\\d %, worst delay \\d+ ms\\.$`), summary);
    assert.doesNotMatch(summary, /^Now 0 kbit/, "video is flowing");
    assert.equal(await patient.locator("#quality-strip").isVisible(), false, "the patient has no strip");
    await screenshot(doctor, "95-doctor-quality-strip");
    await assertAccessible(doctor, "the doctor's call with the quality strip");
  } finally {
    await browser.close();
    await server.stop();
  }
});

test("the doctor previews the patient's waiting room with the message, and sees when it is delivered", async () => {
  const server = await startServer();
  const browser = await launchBrowser();
  try {
    await setUpVisit(server);
    const doctor = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
    const patientLink = await signInAndStartCall(doctor, server);
    const preview = doctor.locator("figure.waiting-preview");
    await preview.getByText("Waiting for your doctor").waitFor();
    assert.equal(await preview.locator(".delivery").innerText(), "No message from you.");

    // Before the patient opened her link: saved, not delivered yet; the preview shows it as she will.
    await doctor.getByLabel(`Waiting-room message for ${PATIENT_NAME}`).fill("  Running 10 minutes late ");
    await doctor.getByRole("button", { name: `Send the waiting-room message to ${PATIENT_NAME}` }).click();
    await doctor.getByText("Saved: “Running 10 minutes late”, shown when the patient arrives").waitFor();
    assert.equal(await preview.locator(".waiting-message").innerText(), "Running 10 minutes late");
    assert.equal(await preview.locator(".delivery").innerText(), "Not delivered yet: the patient sees your message when she opens the link.");
    assert.equal(await preview.locator(".delivery").getAttribute("data-delivered"), "false");
    await screenshot(doctor, "84-doctor-waiting-room-preview-not-delivered");
    await assertAccessible(doctor, "the doctor's list with the waiting-room preview");

    // The patient opens her link: the message is in front of her, and the preview says delivered.
    const patient = await (await browser.newContext({ viewport: { width: 390, height: 844 } })).newPage();
    await patient.goto(patientLink);
    await patient.getByRole("heading", { name: "Waiting for your doctor" }).waitFor();
    assert.equal(await patient.locator("#waiting-message").innerText(), "Running 10 minutes late");
    await eventually("the preview says delivered", async () => (await preview.locator(".delivery").getAttribute("data-delivered")) === "true");
    assert.equal(await preview.locator(".delivery").innerText(), "✓ Delivered: the patient sees your message now.");
    await screenshot(doctor, "85-doctor-waiting-room-preview-delivered");
    await assertAccessible(doctor, "the doctor's list with a delivered waiting-room message");

    // A new message while she waits is delivered at once; a reload keeps the preview (the server has it).
    await doctor.getByLabel(`Waiting-room message for ${PATIENT_NAME}`).fill("I am on my way");
    await doctor.getByRole("button", { name: `Send the waiting-room message to ${PATIENT_NAME}` }).click();
    await doctor.getByText("Delivered: “I am on my way”").waitFor();
    await patient.locator("#waiting-message", { hasText: "I am on my way" }).waitFor();
    await doctor.reload();
    assert.equal(await preview.locator(".waiting-message").innerText(), "I am on my way");
    assert.equal(await preview.locator(".delivery").getAttribute("data-delivered"), "true");

    // An empty message clears it, for her and in the preview.
    await doctor.getByRole("button", { name: `Send the waiting-room message to ${PATIENT_NAME}` }).click();
    await doctor.getByText("Message cleared").waitFor();
    assert.equal(await preview.locator(".waiting-message").count(), 0);
    await patient.locator("#waiting-message").waitFor({ state: "hidden" });
  } finally {
    await browser.close();
    await server.stop();
  }
});
