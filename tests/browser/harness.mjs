// Test harness: a real `televisit` server on a free port with a temporary SQLite file, the clinic
// API to set up a visit, and Debian's Chromium (headless, fake camera/microphone) via playwright-core.
import { spawn } from "node:child_process";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const here = dirname(fileURLToPath(import.meta.url));
export const ARTIFACTS = join(here, "artifacts");
mkdirSync(ARTIFACTS, { recursive: true });
export const BINARY = process.env.TELEVISIT_BIN || join(here, "../../target/debug/televisit");
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
  const child = spawn(BINARY, [
    "serve", "--listen", `127.0.0.1:${port}`, "--database-url", `sqlite://${join(dir, "db.sqlite")}`,
    "--clinic-api-key", CLINIC_KEY, "--web-dir", join(here, "../../web"), ...extraArgs,
  ], { stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  child.stderr.on("data", (d) => (log += d));
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    try { if ((await fetch(`${base}/healthz`)).ok) break; } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
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
    async stop() { child.kill("SIGKILL"); rmSync(dir, { recursive: true, force: true }); },
  };
}

/** A doctor (web password), a patient and an appointment now. */
export async function setUpVisit(server) {
  const doctor = await server.clinic("/api/clinic/doctors", { display_name: DOCTOR.name, email: DOCTOR.email, password: DOCTOR.password });
  const patient = await server.clinic("/api/clinic/patients", { display_name: PATIENT_NAME });
  const appointment = await server.clinic("/api/clinic/appointments", { doctor_id: doctor.id, patient_id: patient.id, scheduled_at_ms: Date.now() });
  return { doctor, patient, appointment };
}

export async function launchBrowser() {
  return chromium.launch({
    executablePath: "/usr/bin/chromium",
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync", "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
      "--auto-select-desktop-capture-source=Entire screen", "--autoplay-policy=no-user-gesture-required",
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
