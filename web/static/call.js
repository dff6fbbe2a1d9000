// The call page: join with the link's token, wait in the waiting room (patients), connect a peer
// connection (the doctor offers), and offer the controls of a video visit.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  token: null, join: null, pc: null, signaling: null, local: null, screenStream: null, screenSender: null,
  muted: false, cameraOff: false, connectedAt: null, durationOffset: 0, ended: false, scorer: new QualityScorer(),
  statsPrev: {}, poorSince: null, excellentSince: null, scaleDown: 1, unread: 0, chatIds: new Set(),
  candidateErrors: 0,
};

// "Hide my IP address": relayed (TURN) candidates only, so the other side never learns this
// device's addresses. The patient's choice is kept in this browser; the clinic can also force it
// for patients (the join reply's `ice_transport_policy`).
const HIDE_IP_KEY = "televisit-hide-ip";
const relayForced = () => state.join && state.join.ice_transport_policy === "relay";
const relayOnly = () => relayForced() || localStorage.getItem(HIDE_IP_KEY) === "true";
const iceConfiguration = () => ({ iceServers: state.join.ice_servers, iceTransportPolicy: relayOnly() ? "relay" : "all" });

// ---------- screens ----------
function showScreen(title, text, { retry = false } = {}) {
  $("screen-title").textContent = title;
  $("screen-text").textContent = text;
  $("screen-action").hidden = !retry;
  $("screen").hidden = false;
  $("waiting").hidden = true;
  document.body.dataset.screen = title;
}

function showBanner(text) {
  $("banner").textContent = text || "";
  $("banner").hidden = !text;
}

const LINK_ERRORS = {
  invalid_token: ["This link is not valid", "Check the link, or ask the clinic for a new one."],
  token_expired: ["This link has expired", "Ask the clinic for a new link."],
  token_revoked: ["This link was replaced", "Use the latest link the clinic sent you."],
  call_ended: ["This call has ended", "Thank you. You can close this window."],
  call_not_started: ["The call has not started yet", "Try again in a moment."],
};

function showError(code, message) {
  const [title, text] = LINK_ERRORS[code] || ["Something went wrong", message || "Please reload the page."];
  showScreen(title, text, { retry: code === "call_not_started" });
}

// ---------- token from the link ----------
function readToken() {
  const key = `televisit-token:${location.pathname}`;
  const match = location.hash.match(/token=([A-Za-z0-9._-]+)/);
  if (match) {
    sessionStorage.setItem(key, match[1]);
    history.replaceState(null, "", location.pathname); // keep the token out of the address bar
  }
  return sessionStorage.getItem(key);
}

// ---------- media ----------
async function openCamera() {
  const attempts = [
    { width: { ideal: 1920 }, height: { ideal: 1080 }, frameRate: { ideal: 30 } },
    { width: { ideal: 1280 }, height: { ideal: 720 } },
    true,
  ];
  let lastError = null;
  for (const video of attempts) {
    try {
      return await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: true }, video });
    } catch (error) {
      lastError = error;
      if (error.name === "NotAllowedError" || error.name === "SecurityError") break;
    }
  }
  throw lastError;
}

// ---------- peer connection ----------
function newPeerConnection() {
  if (state.pc) state.pc.close();
  const pc = new RTCPeerConnection(iceConfiguration());
  state.pc = pc;
  document.body.dataset.iceTransportPolicy = pc.getConfiguration().iceTransportPolicy;
  state.screenSender = null;
  state.local.getTracks().forEach((track) => pc.addTrack(track, state.local));
  if (state.screenStream) addScreenTrack();
  pc.onicecandidate = ({ candidate }) => {
    if (candidate) {
      state.signaling.send({ type: "ice-candidate", candidate: candidate.candidate, sdp_mid: candidate.sdpMid, sdp_m_line_index: candidate.sdpMLineIndex });
    }
  };
  pc.ontrack = ({ track, streams }) => {
    const stream = streams[0] || new MediaStream([track]);
    if (track.kind === "video" && $("remote-video").srcObject && $("remote-video").srcObject !== stream) {
      $("screen-video").srcObject = stream; // a second video stream is the doctor's screen
    } else if (!$("remote-video").srcObject || track.kind === "audio" || $("remote-video").srcObject === stream) {
      $("remote-video").srcObject = stream;
    }
  };
  pc.onconnectionstatechange = () => {
    if (pc !== state.pc) return;
    if (pc.connectionState === "connected") {
      showBanner("");
      if (!state.connectedAt) state.connectedAt = Date.now();
      document.body.dataset.connected = "true";
      if (state.examination) applyDegradationPreference(); // a new connection during an examination
    } else if (pc.connectionState === "disconnected" || pc.connectionState === "failed") {
      showBanner("Connection lost — reconnecting…");
      if (pc.connectionState === "failed" && state.join.role === "doctor") makeOffer(true);
    }
  };
  return pc;
}

async function makeOffer(iceRestart = false) {
  const pc = state.pc;
  const offer = await pc.createOffer({ iceRestart });
  await pc.setLocalDescription(offer);
  state.signaling.send({ type: "offer", sdp: pc.localDescription.sdp });
}

async function acceptOffer(sdp) {
  if (!state.pc) newPeerConnection();
  await state.pc.setRemoteDescription({ type: "offer", sdp });
  const answer = await state.pc.createAnswer();
  await state.pc.setLocalDescription(answer);
  state.signaling.send({ type: "answer", sdp: state.pc.localDescription.sdp });
}

function addScreenTrack() {
  const track = state.screenStream.getVideoTracks()[0];
  state.screenSender = state.pc.addTrack(track, state.screenStream);
}

// ---------- signaling frames ----------
function onFrame(frame) {
  switch (frame.type) {
    case "joined":
      (frame.chat_history || []).forEach(addChat);
      if (frame.peer_media) showPeerMedia(frame.peer_media);
      break;
    case "waiting":
      if (state.join.role === "patient") {
        $("waiting").hidden = false;
        $("waiting-message").textContent = frame.message || "";
        $("waiting-message").hidden = !frame.message;
      } else {
        showBanner("Waiting for the patient to join…");
      }
      break;
    case "admitted":
      $("waiting").hidden = true;
      break;
    case "peer-joined":
      $("waiting").hidden = true;
      showBanner("");
      newPeerConnection();
      sendMediaState();
      if (frame.make_offer) makeOffer();
      break;
    case "peer-left":
      showBanner(frame.role === "doctor" ? "The doctor left the call." : "The patient left the call.");
      if (state.pc) { state.pc.close(); state.pc = null; }
      $("remote-video").srcObject = null;
      break;
    case "offer":
      acceptOffer(frame.sdp);
      break;
    case "answer":
      state.pc && state.pc.setRemoteDescription({ type: "answer", sdp: frame.sdp });
      break;
    case "ice-candidate":
      if (state.pc && frame.candidate) {
        state.pc.addIceCandidate({ candidate: frame.candidate, sdpMid: frame.sdp_mid, sdpMLineIndex: frame.sdp_m_line_index })
          .catch((error) => reportCandidateError(error, frame));
      }
      break;
    case "chat":
      addChat(frame);
      break;
    case "media-state":
      showPeerMedia(frame);
      break;
    case "screen-share":
      $("screen-video").hidden = !frame.active;
      document.body.dataset.peerSharing = String(frame.active);
      break;
    case "examination":
      setExamination(frame.active);
      break;
    case "call-ended":
      endScreen(frame.duration_seconds);
      break;
    case "error":
      if (state.ended) break; // the reason the server closes an ended call's connection
      if (["invalid_token", "token_expired", "token_revoked", "call_ended", "replaced"].includes(frame.code)) {
        state.signaling.close();
        if (frame.code === "replaced") showScreen("The call continued elsewhere", "This link was opened in another window or device.");
        else showError(frame.code, frame.message);
      } else {
        showBanner(frame.message);
      }
      break;
  }
}

// A candidate the browser cannot use is not a failure of the call (others may work): it is logged
// and counted in a quiet note, and the call goes on.
function reportCandidateError(error, frame) {
  state.candidateErrors += 1;
  console.warn("Televisit: a network candidate from the other side could not be used", { error: String(error), candidate: frame.candidate, sdpMid: frame.sdp_mid });
  document.body.dataset.candidateErrors = String(state.candidateErrors);
  const note = $("ice-diagnostics");
  note.textContent = `${state.candidateErrors} network candidate${state.candidateErrors === 1 ? "" : "s"} not usable`;
  note.hidden = false;
}

// The doctor examines (a rash, a wound): the patient's camera keeps its resolution and gives up
// frame rate when bandwidth is short, as the core's examination mode does.
function setExamination(active) {
  state.examination = active;
  document.body.dataset.examination = String(active);
  showBanner(active ? "The doctor is examining: please hold the camera still." : "Examination finished.");
  applyDegradationPreference();
}

function applyDegradationPreference() {
  if (!state.pc) return;
  const sender = state.pc.getSenders().find((s) => s.track && s.track.kind === "video" && s !== state.screenSender);
  if (!sender) return;
  const parameters = sender.getParameters();
  parameters.degradationPreference = state.examination ? "maintain-resolution" : "balanced";
  sender.setParameters(parameters).catch(() => {});
}

function showPeerMedia(media) {
  const notes = [];
  if (media.audio === false) notes.push("Microphone muted");
  if (media.video === false) notes.push("Camera off");
  $("peer-state").textContent = notes.join(" · ");
  $("peer-state").hidden = notes.length === 0;
  document.body.dataset.peerAudio = String(media.audio);
  document.body.dataset.peerVideo = String(media.video);
}

function sendMediaState() {
  state.signaling.send({ type: "media-state", audio: !state.muted, video: !state.cameraOff });
}

// ---------- chat ----------
function addChat(message) {
  if (state.chatIds.has(message.id)) return;
  state.chatIds.add(message.id);
  const item = document.createElement("li");
  item.className = message.from === state.join.role ? "mine" : "theirs";
  const who = message.from === state.join.role ? "You" : message.from === "doctor" ? "Doctor" : "Patient";
  const time = new Date(message.sent_at_ms).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  item.textContent = `${who} (${time}): ${message.text}`;
  $("chat-log").appendChild(item);
  item.scrollIntoView({ block: "end" });
  if ($("chat").hidden && message.from !== state.join.role) {
    state.unread += 1;
    $("chat-unread").textContent = String(state.unread);
    $("chat-unread").hidden = false;
  }
}

// ---------- end ----------
function formatDuration(seconds) {
  const s = Math.max(0, Math.floor(seconds));
  const hh = Math.floor(s / 3600), mm = Math.floor((s % 3600) / 60), ss = s % 60;
  const two = (n) => String(n).padStart(2, "0");
  return hh > 0 ? `${hh}:${two(mm)}:${two(ss)}` : `${two(mm)}:${two(ss)}`;
}

function endScreen(durationSeconds) {
  if (state.ended) return;
  state.ended = true;
  state.signaling && state.signaling.close();
  if (state.pc) state.pc.close();
  if (state.local) state.local.getTracks().forEach((t) => t.stop());
  if (state.screenStream) state.screenStream.getTracks().forEach((t) => t.stop());
  sessionStorage.removeItem(`televisit-token:${location.pathname}`);
  showScreen("The call has ended", `Duration: ${formatDuration(durationSeconds)}. Thank you.`);
}

// ---------- controls ----------
function wireControls() {
  $("mute").onclick = () => {
    state.muted = !state.muted;
    state.local.getAudioTracks().forEach((t) => (t.enabled = !state.muted));
    $("mute").setAttribute("aria-pressed", String(state.muted));
    $("mute").querySelector("span").textContent = state.muted ? "Unmute" : "Mute";
    $("mute").classList.toggle("active", state.muted);
    sendMediaState();
  };
  $("camera").onclick = () => {
    state.cameraOff = !state.cameraOff;
    state.local.getVideoTracks().forEach((t) => (t.enabled = !state.cameraOff));
    $("camera").setAttribute("aria-pressed", String(state.cameraOff));
    $("camera").querySelector("span").textContent = state.cameraOff ? "Camera on" : "Camera off";
    $("camera").classList.toggle("active", state.cameraOff);
    sendMediaState();
  };
  $("examine").onclick = () => {
    const active = $("examine").getAttribute("aria-pressed") !== "true";
    state.signaling.send({ type: "examination", active });
    $("examine").setAttribute("aria-pressed", String(active));
    $("examine").querySelector("span").textContent = active ? "Stop examining" : "Examine";
  };
  $("share").onclick = async () => {
    if (state.screenStream) return stopSharing();
    try {
      state.screenStream = await navigator.mediaDevices.getDisplayMedia({ video: true, audio: false });
    } catch {
      showBanner("Screen sharing was not allowed.");
      return;
    }
    state.screenStream.getVideoTracks()[0].onended = stopSharing;
    if (state.pc) { addScreenTrack(); await makeOffer(); }
    state.signaling.send({ type: "screen-share", active: true });
    $("share").setAttribute("aria-pressed", "true");
    $("share").querySelector("span").textContent = "Stop sharing";
  };
  $("chat-toggle").onclick = () => {
    $("chat").hidden = !$("chat").hidden;
    $("chat-toggle").setAttribute("aria-expanded", String(!$("chat").hidden));
    if (!$("chat").hidden) { state.unread = 0; $("chat-unread").hidden = true; $("chat-input").focus(); }
  };
  $("chat-form").onsubmit = (event) => {
    event.preventDefault();
    const text = $("chat-input").value.trim();
    if (!text) return;
    state.signaling.send({ type: "chat", text });
    $("chat-input").value = "";
  };
  $("fullscreen").onclick = async () => {
    if (document.fullscreenElement) await document.exitFullscreen();
    else await $("stage").requestFullscreen();
  };
  document.addEventListener("fullscreenchange", () => {
    const on = Boolean(document.fullscreenElement);
    $("fullscreen").setAttribute("aria-pressed", String(on));
    $("fullscreen").querySelector("span").textContent = on ? "Exit full screen" : "Full screen";
  });
  $("hangup").onclick = () => {
    if (state.join.role === "doctor") {
      state.signaling.send({ type: "end-call" });
    } else {
      state.signaling.send({ type: "leave" });
      state.ended = true;
      state.signaling.close();
      if (state.pc) state.pc.close();
      state.local.getTracks().forEach((t) => t.stop());
      showScreen("You left the call", "You can rejoin with the same link while the call goes on.", { retry: true });
    }
  };
  $("screen-retry").onclick = () => location.reload();
  const hideIpBoxes = document.querySelectorAll("input.hide-ip"); // in the waiting room and the header
  hideIpBoxes.forEach((box) => box.onchange = () => {
    localStorage.setItem(HIDE_IP_KEY, String(box.checked));
    hideIpBoxes.forEach((other) => (other.checked = box.checked));
    if (!state.pc) return; // applies to the next connection
    state.pc.setConfiguration({ ...state.pc.getConfiguration(), iceTransportPolicy: relayOnly() ? "relay" : "all" });
    document.body.dataset.iceTransportPolicy = state.pc.getConfiguration().iceTransportPolicy;
    if (state.join.role === "doctor") makeOffer(true); // gather again under the new policy
  });
}

function showHideIpSetting() {
  document.querySelectorAll("input.hide-ip").forEach((box) => {
    box.checked = relayOnly();
    box.disabled = relayForced();
  });
  document.querySelectorAll(".hide-ip-label").forEach((label) => label.title = relayForced()
    ? "Your clinic always hides your IP address from the other side"
    : "Connect only through the clinic's relay server, so the other side never sees your IP address");
}

async function stopSharing() {
  if (!state.screenStream) return;
  state.screenStream.getTracks().forEach((t) => t.stop());
  state.screenStream = null;
  if (state.pc && state.screenSender) { state.pc.removeTrack(state.screenSender); state.screenSender = null; await makeOffer(); }
  state.signaling.send({ type: "screen-share", active: false });
  $("share").setAttribute("aria-pressed", "false");
  $("share").querySelector("span").textContent = "Share screen";
}

// ---------- once a second: timer, quality, adaptive resolution ----------
async function tick() {
  if (state.ended) return;
  if (state.connectedAt) {
    $("timer").textContent = formatDuration(state.durationOffset + (Date.now() - state.connectedAt) / 1000);
  }
  if (!state.pc || state.pc.connectionState !== "connected") return;
  const now = Date.now();
  const sample = await readQualitySample(state.pc, state.statsPrev, now);
  state.statsPrev = sample;
  document.body.dataset.framesDecoded = String(sample.framesDecoded);
  document.body.dataset.frameSize = `${sample.frameWidth}x${sample.frameHeight}`;
  const changed = state.scorer.update(sample, now);
  const level = state.scorer.shown;
  $("quality").dataset.level = level;
  $("quality").textContent = { excellent: "● Excellent", good: "● Good", poor: "● Poor", lost: "● Lost" }[level];
  if (changed) {
    state.signaling.send({ type: "quality", level, rtt_ms: sample.rttMs ?? undefined, loss_percent: sample.lossPercent ?? undefined, jitter_ms: sample.jitterMs ?? undefined });
  }
  adaptResolution(level, now);
}

// The browser's congestion control adapts the bitrate; on sustained Poor we also halve the
// resolution (down to a quarter), and restore it after sustained Excellent.
function adaptResolution(level, now) {
  state.poorSince = level === "poor" ? state.poorSince ?? now : null;
  state.excellentSince = level === "excellent" ? state.excellentSince ?? now : null;
  let scale = state.scaleDown;
  if (state.poorSince && now - state.poorSince >= 10000 && scale < 4) { scale *= 2; state.poorSince = now; }
  if (state.excellentSince && now - state.excellentSince >= 20000 && scale > 1) { scale /= 2; state.excellentSince = now; }
  if (scale === state.scaleDown) return;
  state.scaleDown = scale;
  const sender = state.pc.getSenders().find((s) => s.track && s.track.kind === "video" && s !== state.screenSender);
  if (!sender) return;
  const parameters = sender.getParameters();
  (parameters.encodings || []).forEach((e) => (e.scaleResolutionDownBy = scale));
  sender.setParameters(parameters).catch(() => {});
}

// ---------- start ----------
async function main() {
  wireControls();
  state.token = readToken();
  if (!state.token) return showError("invalid_token");
  const response = await fetch("/api/video-call/join", { method: "POST", headers: { Authorization: `Bearer ${state.token}` } }).catch(() => null);
  if (!response) return showScreen("Cannot reach the clinic", "Check your internet connection and try again.", { retry: true });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) return showError(body.error && body.error.code, body.error && body.error.message);
  state.join = body;
  document.body.dataset.role = body.role;
  showHideIpSetting();
  $("peer-name").textContent = body.peer_display_name;
  $("share").hidden = body.role !== "doctor"; // the server refuses a patient's share anyway
  $("examine").hidden = body.role !== "doctor";
  $("hangup").querySelector("span").textContent = body.role === "doctor" ? "End call" : "Leave";
  $("hangup").setAttribute("aria-label", body.role === "doctor" ? "End the call for everyone" : "Leave the call");
  try {
    state.local = await openCamera();
  } catch (error) {
    if (error && error.name === "NotAllowedError") {
      return showScreen("Camera and microphone blocked", "Allow camera and microphone access for this site in your browser's settings, then reload.", { retry: true });
    }
    if (error && (error.name === "NotFoundError" || error.name === "OverconstrainedError")) {
      return showScreen("No camera or microphone found", "Connect a camera and a microphone, or open the device test to check them.", { retry: true });
    }
    return showScreen("Camera problem", `Your camera could not start (${error && error.name}). Close other apps that use it and reload.`, { retry: true });
  }
  $("local-video").srcObject = state.local;
  state.signaling = new Signaling({
    token: state.token,
    websocketPath: body.websocket_path,
    signalPath: body.signal_path,
    onFrame,
    onStatus: (status) => showBanner(status === "reconnecting" ? "Connection lost — reconnecting…" : ""),
  });
  state.signaling.start();
  if (body.status === "in_progress") {
    // A reload mid-call: the timer continues from the server's count.
    const status = await fetch(`/api/appointments/${body.appointment_id}/video-call/status`, { headers: { Authorization: `Bearer ${state.token}` } })
      .then((r) => r.json()).catch(() => null);
    if (status) state.durationOffset = status.duration_seconds;
  }
  setInterval(tick, 1000);
}

main();
