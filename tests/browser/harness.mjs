// Test harness: a real `televisit` server on a free port with a temporary SQLite file, the clinic
// API to set up a visit, and Debian's Chromium (headless, fake camera/microphone) via playwright-core.
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, readFileSync, rmSync } from "node:fs";
import assert from "node:assert/strict";
import { createServer } from "node:net";
import { createInterface } from "node:readline";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const ARTIFACTS = join(here, "artifacts");
mkdirSync(ARTIFACTS, { recursive: true });
export const BINARY = process.env.TELEVISIT_BIN || join(here, "../../target/debug/televisit");
/** The link emulator's binaries (tests/src/bin), next to `televisit` unless given. */
export const NETEM_JOIN = process.env.NETEM_JOIN_BIN || join(dirname(BINARY), "netem-join");
export const NETEM_RELAY = process.env.NETEM_RELAY_BIN || join(dirname(BINARY), "netem-relay");
const CLINIC_KEY = "browser-test-clinic-key";
export const DOCTOR = { name: "Dr. Ada Osei", email: "ada@clinic.test", password: "correct horse battery" };
export const PATIENT_NAME = "Zelda Quartermaine";

function freePort() {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolve(port));
    });
  });
}

export async function startServer(extraArgs = []) {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "televisit-browser-"));
  const args = [
    "serve", "--listen", `127.0.0.1:${port}`, "--database-url", `sqlite://${join(dir, "db.sqlite")}`,
    "--clinic-api-key", CLINIC_KEY, "--web-dir", join(here, "../../web"), ...extraArgs,
  ];
  let log = "";
  let child;
  const base = `http://127.0.0.1:${port}`;
  const launch = async () => {
    child = spawn(BINARY, args, { stdio: ["ignore", "ignore", "pipe"] });
    child.stderr.on("data", (d) => (log += d));
    for (let i = 0; i < 100; i++) {
      try { if ((await fetch(`${base}/healthz`)).ok) break; } catch { /* not up yet */ }
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const kill = () => new Promise((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    child.once("exit", resolve);
    child.kill("SIGKILL");
  });
  await launch();
  const clinic = async (path, body) => {
    const response = await fetch(`${base}${path}`, {
      method: "POST", headers: { Authorization: `Bearer ${CLINIC_KEY}`, "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    if (!response.ok) throw new Error(`${path}: ${response.status} ${await response.text()}`);
    return response.json();
  };
  return {
    base,
    clinic,
    log: () => log,
    /** Kills the server (as a crash would) and, unless `down` is true, starts it again on the same port and database. */
    async crash({ down = false } = {}) { await kill(); if (!down) await launch(); },
    /** Starts a crashed server again. */
    async restart() { await launch(); },
    async stop() { await kill(); rmSync(dir, { recursive: true, force: true }); },
  };
}

/** A value of the page's `document.body.dataset` (the call page reports its state there). */
export const dataset = (page, key) => page.evaluate((k) => document.body.dataset[k], key);

/** A visit whose call the doctor started through the API: `{ doctor_link, patient_link, ... }`. */
export async function startedCall(server) {
  const { doctor, appointment } = await setUpVisit(server);
  return fetch(`${server.base}/api/appointments/${appointment.id}/video-call/start`, {
    method: "POST", headers: { Authorization: `Bearer ${doctor.api_token}` },
  }).then((r) => r.json());
}

/** `from` opens the chat panel and sends `text`; `to` opens its panel and sees it. */
export async function chat(from, to, text) {
  for (const page of [from, to]) {
    if ((await page.locator("#chat").isHidden())) await page.getByRole("button", { name: "Chat" }).click();
  }
  await from.getByLabel("Message").fill(text);
  await from.getByRole("button", { name: "Send" }).click();
  await to.locator("#chat-log li", { hasText: text }).waitFor();
  // The server acknowledged it stored: nothing left to resend, "Sending…" gone.
  await from.locator("body[data-chat-pending='0']").waitFor();
  await from.locator("#chat-sending").waitFor({ state: "hidden" });
}

/**
 * The doctor signs in on `page` and starts the call with the patient; returns the patient's link.
 * With `shots`, screenshots of the sign-in page and of the list with the started call.
 */
export async function signInAndStartCall(page, server, { shots = false } = {}) {
  await page.goto(`${server.base}/medical/login`);
  if (shots) await screenshot(page, "01-sign-in");
  await page.getByLabel("E-mail").fill(DOCTOR.email);
  await page.getByLabel("Password").fill(DOCTOR.password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.waitForURL(/\/medical\/appointments\/$/);
  await page.getByRole("button", { name: `Start video call with ${PATIENT_NAME}` }).click();
  const patientLink = await page.locator("input.patient-link").inputValue();
  if (shots) await screenshot(page, "02-doctor-appointments");
  return patientLink;
}

/** A doctor (web password), a patient and an appointment now. */
export async function setUpVisit(server) {
  const doctor = await server.clinic("/api/clinic/doctors", { display_name: DOCTOR.name, email: DOCTOR.email, password: DOCTOR.password });
  const patient = await server.clinic("/api/clinic/patients", { display_name: PATIENT_NAME });
  const appointment = await server.clinic("/api/clinic/appointments", { doctor_id: doctor.id, patient_id: patient.id, scheduled_at_ms: Date.now() });
  return { doctor, patient, appointment };
}

/**
 * Debian's Chromium, headless. By default with a fake camera and microphone whose permission is
 * granted; `{ camera: false }` has no devices at all, `{ permission: false }` leaves the permission
 * prompt to be refused (as a user who clicks "Block"); `args` are more command-line flags.
 */
export async function launchBrowser({ camera = true, permission = true, args = [] } = {}) {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync",
      ...(camera ? ["--use-fake-device-for-media-stream"] : []),
      ...(permission ? ["--use-fake-ui-for-media-stream"] : []),
      "--auto-select-desktop-capture-source=Entire screen", "--autoplay-policy=no-user-gesture-required",
      ...args,
    ],
  });
}

export async function screenshot(page, name) {
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`) });
}

/** Polls `check` (an async function returning a truthy value) until it passes or `ms` elapse. */
export async function eventually(what, check, ms = 15000) {
  const deadline = Date.now() + ms;
  let last;
  while (Date.now() < deadline) {
    try { last = await check(); if (last) return last; } catch (error) { last = error; }
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`timed out waiting for ${what} (last: ${last})`);
}

/**
 * `televisit join <link>` (the core's headless client) as a child process for `seconds` in the
 * call, with more `args`; every output line with the time it arrived (`{ at, line }`).
 */
export function joinHeadless(link, { seconds = 30, args = [] } = {}) {
  const child = spawn(BINARY, ["join", link, "--udp", "127.0.0.1:0", "--seconds", String(seconds), ...args], { stdio: ["ignore", "pipe", "pipe"] });
  const out = { lines: [], stderr: "", exit: null };
  createInterface({ input: child.stdout }).on("line", (line) => out.lines.push({ at: Date.now(), line }));
  child.stderr.on("data", (data) => (out.stderr += data));
  out.exited = new Promise((resolve) => child.on("exit", (code) => { out.exit = code; resolve(code); }));
  out.kill = () => { if (out.exit === null) child.kill("SIGKILL"); };
  return out;
}

/** Reads the test pattern's frame counter from the <video> `id` (the remote camera by default)
 * through a canvas (see core/src/codec/pattern.rs: two rows of 32 blocks, 1/40 of the width each,
 * the second row the complement of the first). */
export function readCounterInPage(id = "remote-video") {
  const video = document.getElementById(id);
  const [w, h] = [video.videoWidth, video.videoHeight];
  if (!w || !h) return null;
  const canvas = document.createElement("canvas");
  canvas.width = w; canvas.height = h;
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(video, 0, 0, w, h);
  const block = Math.floor(w / 40);
  const left = Math.floor((w - 32 * block) / 2);
  const inset = Math.floor(block / 4), inner = block - 2 * inset;
  const mean = (x, y) => {
    const data = context.getImageData(x, y, inner, inner).data;
    let sum = 0;
    for (let i = 0; i < data.length; i += 4) sum += 0.299 * data[i] + 0.587 * data[i + 1] + 0.114 * data[i + 2];
    return sum / (data.length / 4);
  };
  let counter = 0;
  for (let bit = 0; bit < 32; bit++) {
    const x = left + bit * block + inset;
    const value = mean(x, block + inset), complement = mean(x, 3 * block + inset);
    if (Math.abs(value - 128) < 40 || Math.abs(complement - 128) < 40 || (value > 128) === (complement > 128)) return null;
    counter = counter * 2 + (value > 128 ? 1 : 0);
  }
  return counter;
}

/**
 * The patient on a phone (390×844, touch) and the doctor on a laptop (1280×800) open the started
 * call `started`; returns `{ patient, doctor }` once each decodes the other's video.
 */
export async function bothInCall(browser, started) {
  const patient = await (await browser.newContext({ viewport: { width: 390, height: 844 }, hasTouch: true, isMobile: true })).newPage();
  const doctor = await (await browser.newContext({ viewport: { width: 1280, height: 800 } })).newPage();
  await patient.goto(started.patient_link);
  await patient.getByRole("heading", { name: "Waiting for your doctor" }).waitFor();
  await doctor.goto(started.doctor_link);
  for (const page of [doctor, patient]) await decodingVideo(page);
  return { patient, doctor };
}

/** Waits until `page` is connected and has decoded more than 10 frames of the other's video. */
export async function decodingVideo(page) {
  await eventually("connected", async () => (await dataset(page, "connected")) === "true", 30000);
  await eventually("video decoded", async () => Number(await dataset(page, "framesDecoded")) > 10, 30000);
}

/** The doctor ends the call for everyone ("End call", then confirms). */
export async function endCall(page, options = {}) {
  await page.getByRole("button", { name: "End call", exact: true }).click(options);
  await page.getByRole("dialog", { name: "End the call for everyone?" }).getByRole("button", { name: "End the call for everyone" }).click(options);
}

const AXE = readFileSync(join(here, "node_modules/axe-core/axe.min.js"), "utf8");

/**
 * axe-core's WCAG 2.x A/AA rules on `page` as it is now (`what` names the state); fails with the
 * violations listed. Evaluated through the DevTools protocol, so the page's CSP does not block it.
 */
export async function assertAccessible(page, what) {
  if (!(await page.evaluate(() => Boolean(window.axe)))) await page.evaluate(AXE);
  const violations = await page.evaluate(async () => (await window.axe.run(document, {
    runOnly: { type: "tag", values: ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa", "best-practice"] },
  })).violations.map((v) => `${v.id} (${v.impact}): ${v.help} — ${v.nodes.slice(0, 3).map((n) => n.target.join(" ") + " " + (n.failureSummary || "").replace(/\s+/g, " ")).join(" | ")}`));
  assert.deepEqual(violations, [], `axe on ${what}:\n${violations.join("\n")}`);
}

/** Tab from the top of `page` `steps` times; the focused controls' names and whether each was visible. */
export async function tabWalk(page, steps) {
  await page.evaluate(() => { document.activeElement?.blur(); window.getSelection()?.removeAllRanges(); });
  const walk = [];
  for (let i = 0; i < steps; i++) {
    await page.keyboard.press("Tab");
    walk.push(await page.evaluate(() => {
      const e = document.activeElement;
      if (!e || e === document.body) return { name: "(body)", visible: true }; // past the last control
      const r = e.getBoundingClientRect();
      const visible = e.checkVisibility({ visibilityProperty: true, opacityProperty: true }) && r.width > 0 && r.height > 0;
      const label = e.labels?.[0]?.innerText; // a checkbox is named by its label
      return { name: (e.innerText || label || e.getAttribute("aria-label") || e.id || e.tagName).trim(), visible };
    }));
  }
  return walk;
}
