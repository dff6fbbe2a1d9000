// Relay-only ("hide my IP address") through the server's embedded TURN, in Chromium: the doctor's
// page records every candidate and description it receives, and none may name an address of the
// patient's (host, server-reflexive or peer-reflexive candidates); the call must still run, relayed.
// Also over TURN/TCP and TURN/TLS only, and: a candidate the page cannot use is reported, and the
// call goes on.
import { test } from "node:test";
import { execFileSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import assert from "node:assert/strict";
import { startServer, startedCall, launchBrowser, eventually, dataset as body } from "./harness.mjs";

// Runs in the doctor's page before its scripts: keeps what the peer connection is given.
function recordRemoteCandidates() {
  window.received = { candidates: [], sdps: [] };
  const addIceCandidate = RTCPeerConnection.prototype.addIceCandidate;
  RTCPeerConnection.prototype.addIceCandidate = function (candidate, ...rest) {
    if (candidate && candidate.candidate) window.received.candidates.push(candidate.candidate);
    return addIceCandidate.call(this, candidate, ...rest);
  };
  const setRemoteDescription = RTCPeerConnection.prototype.setRemoteDescription;
  RTCPeerConnection.prototype.setRemoteDescription = function (description, ...rest) {
    if (description && description.sdp) window.received.sdps.push(description.sdp);
    return setRemoteDescription.call(this, description, ...rest);
  };
}

// Runs in a page before its scripts: only the ICE server URLs matching `pattern` are left, as on
// a network that lets no UDP out (TURN over TCP) or only TLS (`turns:`).
function onlyTurnUrls(pattern) {
  const Native = RTCPeerConnection;
  window.RTCPeerConnection = function (configuration = {}) {
    const iceServers = (configuration.iceServers || [])
      .map((server) => ({ ...server, urls: [].concat(server.urls).filter((u) => new RegExp(pattern).test(u)) }))
      .filter((server) => server.urls.length > 0);
    return new Native({ ...configuration, iceServers });
  };
  window.RTCPeerConnection.prototype = Native.prototype;
}

// The selected candidate pair's local candidate type, from the page's own stats.
const selectedLocalType = (page) => page.evaluate(async () => {
  const stats = await state.pc.getStats();
  let pair = null;
  stats.forEach((s) => { if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId); });
  return pair ? stats.get(pair.localCandidateId).candidateType : null;
});

// How the selected local candidate reaches its TURN server (`udp`, `tcp`, `tls`).
const selectedRelayProtocol = (page) => page.evaluate(async () => {
  const stats = await state.pc.getStats();
  let pair = null;
  stats.forEach((s) => { if (s.type === "transport" && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId); });
  return pair ? stats.get(pair.localCandidateId).relayProtocol : null;
});

/** Both join; returns what the doctor's page received once both decode video. */
async function relayedCall(browser, server, { beforePatientJoins = async () => {}, onlyUrls = null } = {}) {
  const call = await startedCall(server);
  const doctorContext = await browser.newContext();
  await doctorContext.addInitScript(recordRemoteCandidates);
  const patientContext = await browser.newContext();
  if (onlyUrls) await patientContext.addInitScript(onlyTurnUrls, onlyUrls);
  const doctor = await doctorContext.newPage();
  const patient = await patientContext.newPage();
  await patient.goto(call.patient_link);
  await patient.getByRole("heading", { name: "Waiting for your doctor" }).waitFor();
  await beforePatientJoins(patient);
  await doctor.goto(call.doctor_link);
  for (const page of [doctor, patient]) {
    await eventually("connected", async () => (await body(page, "connected")) === "true", 30000);
    await eventually("frames decoded", async () => Number(await body(page, "framesDecoded")) > 10, 30000);
  }
  return { doctor, patient };
}

function assertOnlyRelayed(received) {
  const lines = [...received.candidates, ...received.sdps.flatMap((sdp) => sdp.split(/\r?\n/).filter((l) => l.startsWith("a=candidate:")))];
  assert.ok(lines.some((l) => / typ relay/.test(l)), `the doctor got relayed candidates: ${JSON.stringify(lines)}`);
  const revealing = lines.filter((l) => !/ typ relay/.test(l));
  assert.deepEqual(revealing, [], "no host, srflx or prflx candidate of the patient reaches the doctor");
}

test("the clinic forces relay-only for patients: the doctor never sees the patient's addresses", async () => {
  const server = await startServer(["--turn-listen", "127.0.0.1:0", "--patients-relay-only"]);
  const browser = await launchBrowser();
  try {
    const { doctor, patient } = await relayedCall(browser, server);
    assert.equal(await body(patient, "iceTransportPolicy"), "relay");
    assert.equal(await body(doctor, "iceTransportPolicy"), "all", "only patients are forced");
    const hideIp = patient.locator("#devices").getByLabel("Hide my IP address");
    assert.ok((await hideIp.isChecked()) && (await hideIp.isDisabled()), "the setting shows the clinic's choice, fixed");
    assertOnlyRelayed(await doctor.evaluate(() => window.received));
    assert.equal(await selectedLocalType(patient), "relay");

    // A candidate the doctor's browser cannot use (no such m-line) is reported, not swallowed,
    // and the call goes on.
    const warnings = [];
    doctor.on("console", (m) => m.type() === "warning" && warnings.push(m.text()));
    await patient.evaluate(() => state.signaling.send({ type: "ice-candidate", candidate: "candidate:1 1 udp 2122260223 192.0.2.99 9 typ host", sdp_mid: "no-such-mid", sdp_m_line_index: 42 }));
    await eventually("the error counted", async () => (await body(doctor, "candidateErrors")) === "1");
    assert.equal(await doctor.locator("#ice-diagnostics").innerText(), "1 network candidate not usable");
    assert.ok(warnings.some((w) => w.includes("could not be used")), `a console warning: ${warnings}`);
    const before = Number(await body(doctor, "framesDecoded"));
    await eventually("video goes on", async () => Number(await body(doctor, "framesDecoded")) > before + 10);
    assert.equal(await body(doctor, "connected"), "true");
  } finally {
    await browser.close();
    await server.stop();
  }
});

test("a patient who ticks 'Hide my IP address' connects relayed, and the choice is remembered", async () => {
  const server = await startServer(["--turn-listen", "127.0.0.1:0"]);
  const browser = await launchBrowser();
  try {
    const { doctor, patient } = await relayedCall(browser, server, {
      beforePatientJoins: async (page) => {
        // The patient decides in the waiting room, before any connection.
        const hideIp = page.locator("#waiting").getByLabel("Hide my IP address");
        assert.equal(await hideIp.isChecked(), false, "off unless chosen");
        await hideIp.check();
      },
    });
    assert.equal(await body(patient, "iceTransportPolicy"), "relay");
    assertOnlyRelayed(await doctor.evaluate(() => window.received));
    assert.equal(await selectedLocalType(patient), "relay");
    assert.equal(await patient.locator("#devices").getByLabel("Hide my IP address").isChecked(), true);
    await patient.reload();
    await eventually("the choice is remembered", () => patient.locator("#devices").getByLabel("Hide my IP address").isChecked());
  } finally {
    await browser.close();
    await server.stop();
  }
});

test("relay-only over TURN/TCP to the embedded server, as from a network without UDP", async () => {
  const server = await startServer(["--turn-listen", "127.0.0.1:0", "--patients-relay-only"]);
  const browser = await launchBrowser();
  try {
    const { doctor, patient } = await relayedCall(browser, server, { onlyUrls: "^turn:.*transport=tcp$" });
    assertOnlyRelayed(await doctor.evaluate(() => window.received));
    assert.equal(await selectedLocalType(patient), "relay");
    assert.equal(await selectedRelayProtocol(patient), "tcp", "the patient's relay is reached over TCP");
  } finally {
    await browser.close();
    await server.stop();
  }
});

test("relay-only over TURN/TLS to the embedded server, as from a network that lets only TLS out", async () => {
  const dir = mkdtempSync(join(tmpdir(), "televisit-turn-tls-"));
  const [cert, key] = [join(dir, "turn.pem"), join(dir, "turn.key")];
  execFileSync("openssl", ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"], { stdio: "ignore" });
  const server = await startServer(["--turn-listen", "127.0.0.1:0", "--patients-relay-only", "--turn-tls-listen", "127.0.0.1:0", "--turn-tls-cert", cert, "--turn-tls-key", key, "--turn-tls-host", "localhost"]);
  // The certificate is self-signed: Chromium is told to accept it.
  const browser = await launchBrowser({ args: ["--ignore-certificate-errors"] });
  try {
    const { doctor, patient } = await relayedCall(browser, server, { onlyUrls: "^turns:" });
    assertOnlyRelayed(await doctor.evaluate(() => window.received));
    assert.equal(await selectedLocalType(patient), "relay");
    assert.equal(await selectedRelayProtocol(patient), "tls", "the patient's relay is reached over TLS");
  } finally {
    await browser.close();
    await server.stop();
    rmSync(dir, { recursive: true, force: true });
  }
});
