// The call page: join with the link's token, wait in the waiting room (patients), connect a peer
// connection (the doctor offers), and offer the controls of a video visit.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  token: null, join: null, pc: null, signaling: null, local: null, screenStream: null, screenSender: null,
  muted: false, cameraOff: false, connectedAt: null, durationOffset: 0, ended: false, scorer: new QualityScorer(),
  statsPrev: {}, ladder: null, ladderTrack: null, unread: 0, chatIds: new Set(),
  candidateErrors: 0, signalingDown: false, peerAway: null, framesSeen: 0, framesAt: 0,
  // Perfect negotiation (protocol/src/protocol.md, "Offers that cross"): when this side's offer was made
  // and has no answer yet, and whether the peer's last offer was ignored because of it.
  offerPendingSince: null, ignoredOffer: false,
  // Track roles: the peer's streams as they arrived, and the one its `screen-share` frame named.
  remoteStreams: [], peerScreenStream: null,
};
// The doctor ignores a crossing offer of the patient's unless its own has waited this long (ms).
const OFFER_ANSWER_WAIT_MS = 10000;

// "Hide my IP address": relayed (TURN) candidates only, so the other side never learns this
// device's addresses. The patient's choice is kept in this browser; the clinic can also force it
// for patients (the join reply's `ice_transport_policy`).
const HIDE_IP_KEY = "televisit-hide-ip";
const relayForced = () => state.join && state.join.ice_transport_policy === "relay";
const relayOnly = () => relayForced() || localStorage.getItem(HIDE_IP_KEY) === "true";
const iceConfiguration = () => ({ iceServers: state.join.ice_servers, iceTransportPolicy: relayOnly() ? "relay" : "all" });

// ---------- screens ----------
// Every screen but the doctor's own end shows how to reach the clinic (filled in by the server).
function showScreen(title, text, { retry = false, contact = true } = {}) {
  $("screen-title").textContent = title;
  $("screen-text").textContent = text;
  $("screen-action").hidden = !retry;
  $("clinic-contact").hidden = !contact;
  $("screen").hidden = false;
  showWaiting(false);
  $("stage").inert = true; // the card is all there is to do
  document.body.dataset.screen = title;
}

// The waiting room: the patient sees herself full screen behind the card, can mute, turn the
// camera off, check her devices or leave; the call's controls are out of reach (inert) meanwhile.
function showWaiting(waiting) {
  $("waiting").hidden = !waiting;
  $("stage").inert = waiting;
  document.body.classList.toggle("waiting-room", waiting);
  if (!waiting) placeSelfView(selfView.dx, selfView.dy, false); // back in its corner, where it was put
}

// ---------- the movable self view ----------
// One's own picture can be moved out of the way: dragged (mouse, pen or finger), or focused and
// moved with the arrow keys (Shift: bigger steps). It stays inside the screen, and where it was
// put is remembered in this browser. The camera-off card in its place moves with it.
const SELF_VIEW_KEY = "televisit-self-view";
const selfView = (() => {
  try { const saved = JSON.parse(localStorage.getItem(SELF_VIEW_KEY)); if (Number.isFinite(saved.dx) && Number.isFinite(saved.dy)) return saved; } catch { /* none saved */ }
  return { dx: 0, dy: 0 };
})();

/** Moves the self view to the offset (dx, dy) from its corner, kept inside the screen. */
function placeSelfView(dx, dy, remember = true) {
  if (document.body.classList.contains("waiting-room")) return; // full screen behind the card
  const shown = $("local-off").hidden ? $("local-video") : $("local-off");
  const rect = shown.getBoundingClientRect(); // where it is now, offset included
  if (rect.width === 0) return;
  const baseLeft = rect.left - selfView.dx, baseTop = rect.top - selfView.dy;
  const clamp = (value, low, high) => Math.min(Math.max(value, low), Math.max(low, high));
  selfView.dx = Math.round(clamp(dx, -baseLeft, window.innerWidth - baseLeft - rect.width));
  selfView.dy = Math.round(clamp(dy, -baseTop, window.innerHeight - baseTop - rect.height));
  document.body.style.setProperty("--self-dx", `${selfView.dx}px`);
  document.body.style.setProperty("--self-dy", `${selfView.dy}px`);
  if (remember) localStorage.setItem(SELF_VIEW_KEY, JSON.stringify(selfView));
}

function wireSelfView() {
  let drag = null;
  for (const element of [$("local-video"), $("local-off")]) {
    element.addEventListener("pointerdown", (event) => {
      if (document.body.classList.contains("waiting-room")) return;
      element.setPointerCapture(event.pointerId);
      drag = { x: event.clientX, y: event.clientY, dx: selfView.dx, dy: selfView.dy };
      event.preventDefault();
    });
    element.addEventListener("pointermove", (event) => {
      if (drag) placeSelfView(drag.dx + event.clientX - drag.x, drag.dy + event.clientY - drag.y, false);
    });
    const drop = () => { if (drag) { drag = null; placeSelfView(selfView.dx, selfView.dy); } };
    element.addEventListener("pointerup", drop);
    element.addEventListener("pointercancel", drop);
  }
  $("local-video").addEventListener("keydown", (event) => {
    const step = event.shiftKey ? 64 : 16;
    const move = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] }[event.key];
    if (!move) return;
    event.preventDefault();
    placeSelfView(selfView.dx + move[0], selfView.dy + move[1]);
  });
  window.addEventListener("resize", () => placeSelfView(selfView.dx, selfView.dy, false));
}

// A portrait picture (a phone held upright) fills a portrait screen, cropped a little at the top
// and bottom, instead of sitting between black bands; a landscape picture stays whole (the doctor
// may be showing something at its edge), over a blurred copy of itself instead of black bands.
function showRemoteShape() {
  const video = $("remote-video");
  if (!video.videoWidth || !video.videoHeight) return;
  document.body.dataset.remoteShape = video.videoWidth < video.videoHeight ? "portrait" : "landscape";
}

function showBanner(text) {
  $("banner").textContent = text || "";
  $("banner").hidden = !text;
}

// A call token is `tv1.<expiry>.<43 characters>`: fewer characters at the end mean a link cut off
// on the way (a line break in an e-mail, a partial copy).
const CUT_OFF_TOKEN = /^tv1\.\d+\.[A-Za-z0-9_-]{0,42}$/;

// What the page finds wrong with a link before asking the server.
const LINK_ERRORS = {
  missing_token: ["This link is incomplete", "The link has no access code. Open the whole link from the clinic's message: it ends with a long code after #token=."],
  cut_off_token: ["This link is cut off", "The end of the link is missing. Open the link straight from the clinic's message, or copy all of it."],
};

/** The error card for a link problem or a server error `code` (with the server's `message`), as the core words it (rules.js). */
function showError(code, message) {
  if (LINK_ERRORS[code]) return showScreen(...LINK_ERRORS[code]);
  if (!code) return showScreen("Something went wrong", message || "Please reload the page.", { retry: true });
  const rule = errorRule(code, message || "");
  showScreen(rule.title, asSentence(rule.message), { retry: rule.retryable });
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
  // The devices chosen before (device test, or an earlier call) if they are still there.
  try {
    return await Devices.open();
  } catch (error) {
    if (error.name === "NotAllowedError" || error.name === "SecurityError") throw error;
    return navigator.mediaDevices.getUserMedia({ audio: true, video: true });
  }
}

// ---------- device choice (waiting room and call) ----------
const deviceSelects = () => ({ camera: $("camera-select"), microphone: $("mic-select"), speaker: $("speaker-select") });

async function openDevices() {
  await Devices.fill(deviceSelects(), state.local);
  $("speaker-field").hidden = !Devices.speakerChoice() || $("speaker-select").options.length === 0;
  state.stopLevel = Devices.level(state.local, $("level"));
  $("devices").showModal();
}

function closeDevices() {
  if (state.stopLevel) state.stopLevel();
  state.stopLevel = null;
  $("devices").close();
}

/** Opens a camera ("video") or microphone ("audio") with `constraints` in place of the current one, in the call too. */
async function useDevice(kind, constraints) {
  const video = kind === "video";
  const old = video ? state.local.getVideoTracks()[0] : state.local.getAudioTracks()[0];
  if (old) old.stop(); // a phone opens one camera at a time
  let track;
  try {
    const stream = await navigator.mediaDevices.getUserMedia(video ? { video: constraints } : { audio: constraints });
    track = video ? stream.getVideoTracks()[0] : stream.getAudioTracks()[0];
  } catch {
    showBanner(video ? "That camera could not start." : "That microphone could not start.");
    return;
  }
  track.enabled = video ? !state.cameraOff : !state.muted;
  const sender = state.pc && state.pc.getSenders().find((s) => s.track === old);
  if (old) state.local.removeTrack(old);
  state.local.addTrack(track);
  if (sender) await sender.replaceTrack(track);
  $("local-video").srcObject = state.local;
  if (!video && state.stopLevel) { state.stopLevel(); state.stopLevel = Devices.level(state.local, $("level")); }
}

/** Plays the other participant on the chosen speaker, where the browser allows it. */
function useSpeaker() {
  const speaker = Devices.chosen().speaker;
  if (speaker && Devices.speakerChoice()) $("remote-video").setSinkId(speaker).catch(() => {});
}

// A phone's front and back cameras: "Switch camera" goes from one to the other (by facingMode;
// where the cameras do not tell which way they face, to the next camera in the list).
async function flipCamera() {
  const before = state.local.getVideoTracks()[0]?.getSettings().deviceId;
  state.facing = state.facing === "environment" ? "user" : "environment";
  await useDevice("video", { ...Devices.video(null), facingMode: { ideal: state.facing } });
  let settings = state.local.getVideoTracks()[0]?.getSettings() || {};
  if (settings.facingMode !== state.facing && settings.deviceId === before) {
    const cameras = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "videoinput").map((d) => d.deviceId);
    await useDevice("video", Devices.video(cameras[(cameras.indexOf(before) + 1) % cameras.length]));
    settings = state.local.getVideoTracks()[0]?.getSettings() || {};
  }
  Devices.remember("camera", settings.deviceId);
}

async function showFlip() {
  const cameras = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "videoinput");
  $("flip").hidden = cameras.length < 2 || !matchMedia("(pointer: coarse)").matches;
}

// ---------- peer connection ----------
function newPeerConnection() {
  if (state.pc) state.pc.close();
  const pc = new RTCPeerConnection(iceConfiguration());
  state.pc = pc;
  state.offerPendingSince = null;
  state.ignoredOffer = false;
  document.body.dataset.iceTransportPolicy = pc.getConfiguration().iceTransportPolicy;
  state.screenSender = null;
  state.restarts.reset();
  state.pcConnectedAt = null;
  state.ladder = null; // a new path: the ladder starts again from the camera's size
  state.remoteStreams = [];
  state.local.getTracks().forEach((track) => pc.addTrack(track, state.local));
  if (state.screenStream) addScreenTrack();
  applyDegradationPreference();
  pc.onicecandidate = ({ candidate }) => {
    if (candidate) {
      state.signaling.send({ type: "ice-candidate", candidate: candidate.candidate, sdp_mid: candidate.sdpMid, sdp_m_line_index: candidate.sdpMLineIndex });
    }
  };
  pc.ontrack = ({ track, streams }) => {
    const stream = streams[0] || new MediaStream([track]);
    if (!state.remoteStreams.includes(stream)) state.remoteStreams.push(stream);
    placeRemoteStreams();
  };
  pc.onconnectionstatechange = () => {
    if (pc !== state.pc) return;
    if (pc.connectionState === "connected") {
      showBanner("");
      if (!state.connectedAt) state.connectedAt = Date.now();
      if (!state.pcConnectedAt) state.pcConnectedAt = Date.now();
      document.body.dataset.connected = "true";
      applyDegradationPreference(); // again, in case the browser refused it before negotiation
    } else if (pc.connectionState === "disconnected" || pc.connectionState === "failed") {
      document.body.dataset.connected = "false";
      showBanner("Connection lost — reconnecting…");
    }
    // As the core: the doctor restarts ICE when the connection failed, then every 5 s (tick).
    if (state.restarts.onState(pc.connectionState, Date.now())) makeOffer(true);
  };
  return pc;
}

async function makeOffer(iceRestart = false) {
  const pc = state.pc;
  state.offerPendingSince = Date.now();
  const offer = await pc.createOffer({ iceRestart });
  await pc.setLocalDescription(offer);
  applyDegradationPreference();
  state.signaling.send({ type: "offer", sdp: pc.localDescription.sdp });
}

async function acceptOffer(sdp) {
  if (!state.pc) newPeerConnection();
  // The doctor is impolite: the patient answers the doctor's pending offer instead. (The patient
  // never offers; a browser's setRemoteDescription rolls back a pending offer of its own.)
  const pending = state.offerPendingSince !== null && Date.now() - state.offerPendingSince < OFFER_ANSWER_WAIT_MS;
  state.ignoredOffer = state.join.role === "doctor" && pending;
  if (state.ignoredOffer) return;
  state.offerPendingSince = null;
  state.restarts.onPeerOffer(Date.now());
  await state.pc.setRemoteDescription({ type: "offer", sdp });
  const answer = await state.pc.createAnswer();
  await state.pc.setLocalDescription(answer);
  applyDegradationPreference();
  state.signaling.send({ type: "answer", sdp: state.pc.localDescription.sdp });
}

// Track roles (protocol/src/protocol.md, "Track roles"): the stream the doctor's `screen-share` frame
// names is its screen, its other stream its camera and microphone. From a doctor that names none
// (an older client): the core's screen stream, or else the second video stream to arrive.
const CORE_SCREEN_STREAM = "televisit-screen";
function placeRemoteStreams() {
  const streams = state.remoteStreams;
  const video = streams.filter((s) => s.getVideoTracks().length > 0);
  const screen = streams.find((s) => s.id === (state.peerScreenStream || CORE_SCREEN_STREAM))
    || (state.peerScreenStream ? undefined : video[1]);
  const camera = streams.find((s) => s !== screen);
  const show = (id, stream) => { if (stream && $(id).srcObject !== stream) $(id).srcObject = stream; };
  show("remote-video", camera);
  show("remote-backdrop", camera); // muted: only its picture, blurred, fills the bands
  show("screen-video", screen);
  document.body.dataset.screenStream = screen ? screen.id : "";
}

function addScreenTrack() {
  const track = state.screenStream.getVideoTracks()[0];
  track.contentHint = "detail"; // text and fine lines: sharp pictures, fewer of them
  state.screenSender = state.pc.addTrack(track, state.screenStream);
  applyDegradationPreference();
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
        // Back in the waiting room because the doctor's connection dropped: say so, not "waiting".
        const away = state.peerAway === "doctor";
        $("waiting-title").textContent = away ? "Your doctor is reconnecting" : "Waiting for your doctor";
        $("waiting-intro").textContent = away
          ? "Your doctor's connection dropped. Please stay: the call goes on as soon as they are back."
          : "The call starts as soon as your doctor joins. This is how you will appear.";
        if (away) showBanner(""); // the card says it
        showWaiting(true);
        $("waiting-message").textContent = frame.message || "";
        $("waiting-message").hidden = !frame.message;
      } else {
        showBanner("Waiting for the patient to join…");
      }
      break;
    case "admitted":
      showWaiting(false);
      break;
    case "peer-joined":
      state.peerAway = null;
      showWaiting(false);
      showBanner("");
      newPeerConnection();
      sendMediaState();
      // A peer that joined afresh (a reloaded page) missed the screen's role: name it again.
      if (state.screenStream) state.signaling.send({ type: "screen-share", active: true, stream_id: state.screenStream.id });
      if (frame.make_offer) makeOffer();
      break;
    case "peer-left":
      // "disconnected": the other side's connection dropped and its grace period ran out; it may
      // come back with the same link (then `peer-joined`). "left": it chose to leave.
      state.peerAway = frame.reason === "disconnected" ? frame.role : null;
      showBanner(frame.reason === "disconnected"
        ? `The ${frame.role}'s connection dropped. Waiting for them to reconnect…`
        : frame.role === "doctor" ? "The doctor left the call." : "The patient left the call.");
      if (state.pc) { state.pc.close(); state.pc = null; }
      $("remote-video").srcObject = null;
      $("remote-backdrop").srcObject = null;
      break;
    case "offer":
      acceptOffer(frame.sdp);
      break;
    case "answer":
      state.offerPendingSince = null;
      state.pc && state.pc.setRemoteDescription({ type: "answer", sdp: frame.sdp });
      break;
    case "ice-candidate":
      if (state.pc && frame.candidate) {
        state.pc.addIceCandidate({ candidate: frame.candidate, sdpMid: frame.sdp_mid, sdpMLineIndex: frame.sdp_m_line_index })
          .catch((error) => { if (!state.ignoredOffer) reportCandidateError(error, frame); });
      }
      break;
    case "chat":
      addChat(frame);
      break;
    case "media-state":
      showPeerMedia(frame);
      break;
    case "screen-share":
      if (frame.stream_id) { state.peerScreenStream = frame.stream_id; placeRemoteStreams(); }
      $("screen-video").hidden = !frame.active;
      $("screen-caption").textContent = "The doctor's shared screen";
      $("screen-caption").hidden = !frame.active;
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
      if (errorRule(frame.code, frame.message).endsCall) {
        state.signaling.close();
        showError(frame.code, frame.message);
      } else {
        showBanner(asSentence(errorRule(frame.code, frame.message).message));
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

// The doctor examines (a rash, a wound): the patient holds the camera still; the ladder gives up
// frame rate before picture size meanwhile, as the core's examination mode does.
function setExamination(active) {
  state.examination = active;
  if (state.ladder) state.ladder.setPreference(active ? "detail" : "balanced");
  document.body.dataset.examination = String(active);
  showBanner(active ? "The doctor is examining: please hold the camera still." : "Examination finished.");
}

// Every video sender keeps its picture size and gives up frame rate when bandwidth is short, from
// its first frame. Left to "balanced", Chromium starts from a ~300 kbit/s guess and sends 270p–540p
// for ~15 s while the link carries HD, and drops to 270p again whenever its estimate dips (to the
// core more than to another Chromium). On a short link the camera's size is lowered by the core's
// ladder (adaptVideo); a shared screen (contentHint "detail") never is.
function applyDegradationPreference() {
  if (!state.pc) return;
  for (const sender of state.pc.getSenders()) {
    if (!sender.track || sender.track.kind !== "video") continue;
    const parameters = sender.getParameters();
    if (parameters.degradationPreference === "maintain-resolution") continue;
    parameters.degradationPreference = "maintain-resolution";
    sender.setParameters(parameters).catch(() => {});
  }
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
  if (state.signaling) state.signaling.send({ type: "media-state", audio: !state.muted, video: !state.cameraOff });
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
  if ($("end-confirm").open) $("end-confirm").close();
  const doctor = Boolean(state.join && state.join.role === "doctor");
  showScreen("The call has ended", `Duration: ${formatDuration(durationSeconds)}. Thank you.`, { contact: !doctor });
  $("screen-back").hidden = !doctor; // back to today's visits
}

// ---------- controls ----------
function wireControls() {
  for (const id of ["mute", "waiting-mute"]) $(id).onclick = () => setMuted(!state.muted);
  for (const id of ["camera", "waiting-camera"]) $(id).onclick = () => setCameraOff(!state.cameraOff);
  $("examine").onclick = () => {
    const active = $("examine").dataset.active !== "true";
    state.signaling.send({ type: "examination", active });
    $("examine").dataset.active = String(active);
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
    state.signaling.send({ type: "screen-share", active: true, stream_id: state.screenStream.id });
    $("screen-caption").textContent = "You are sharing your screen";
    $("screen-caption").hidden = false;
    // A preview of what goes out: the doctor sees which window or screen the patient gets.
    $("share-preview-video").srcObject = state.screenStream;
    $("share-preview").hidden = false;
    $("share").querySelector("span").textContent = "Stop sharing";
  };
  $("chat-toggle").onclick = () => showChat($("chat").hidden);
  $("chat-close").onclick = () => { showChat(false); $("chat-toggle").focus(); };
  $("chat-form").onsubmit = (event) => {
    event.preventDefault();
    const text = $("chat-input").value.trim();
    if (!text) return;
    state.signaling.sendChat(text);
    $("chat-input").value = "";
  };
  $("fullscreen").onclick = async () => {
    if (document.fullscreenElement) await document.exitFullscreen();
    else await $("stage").requestFullscreen();
  };
  document.addEventListener("fullscreenchange", () => {
    const on = Boolean(document.fullscreenElement);
    $("fullscreen").querySelector("span").textContent = on ? "Exit full screen" : "Full screen";
  });
  // Ending the call revokes both links: the doctor confirms first.
  $("hangup").onclick = () => {
    if (state.join.role !== "doctor") return leave();
    $("end-error").hidden = true;
    $("end-confirmed").textContent = "End the call for everyone";
    $("end-confirm").showModal();
  };
  $("end-cancel").onclick = () => $("end-confirm").close();
  $("end-confirmed").onclick = endForEveryone;
  $("waiting-leave").onclick = leave;
  $("screen-retry").onclick = () => location.reload();
  $("devices-open").onclick = openDevices;
  $("waiting-devices").onclick = openDevices;
  $("devices-close").onclick = closeDevices;
  $("devices").addEventListener("close", closeDevices);
  $("camera-select").onchange = () => { Devices.remember("camera", $("camera-select").value); useDevice("video", Devices.video()); };
  $("mic-select").onchange = () => { Devices.remember("microphone", $("mic-select").value); useDevice("audio", Devices.audio()); };
  $("speaker-select").onchange = () => { Devices.remember("speaker", $("speaker-select").value); useSpeaker(); };
  $("speaker-test").onclick = () => Devices.testSound($("speaker-select").value);
  $("flip").onclick = flipCamera;
  const hideIpBoxes = document.querySelectorAll("input.hide-ip"); // in the waiting room and the devices dialog
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

// The doctor ends the call through the API and waits for its answer: with the clinic's server
// unreachable the dialog stays open, says so, and "Try again" repeats it (nothing is queued to
// end the call later by surprise).
async function endForEveryone() {
  const button = $("end-confirmed");
  $("end-error").hidden = true;
  button.disabled = true;
  button.textContent = "Ending the call…";
  const response = await fetch(`/api/appointments/${state.join.appointment_id}/video-call/end`, {
    method: "POST", headers: { Authorization: `Bearer ${state.token}` },
  }).catch(() => null);
  const body = response ? await response.json().catch(() => ({})) : null;
  button.disabled = false;
  if (response && (response.ok || (body.error && body.error.code === "call_ended"))) {
    endScreen(response.ok ? body.duration_seconds : state.durationOffset + (Date.now() - (state.connectedAt || Date.now())) / 1000);
    return;
  }
  $("end-error").textContent = response
    ? `The call could not be ended: ${(body.error && body.error.message) || `error ${response.status}`}.`
    : "The call could not be ended: the clinic's server does not answer. Check your connection and try again.";
  $("end-error").hidden = false;
  button.textContent = "Try again to end the call";
}

function leave() {
  state.signaling.send({ type: "leave" });
  state.ended = true;
  state.signaling.close();
  if (state.pc) state.pc.close();
  state.local.getTracks().forEach((t) => t.stop());
  showScreen("You left the call", "You can rejoin with the same link while the call goes on.", { retry: true });
}

// Mute and camera: the buttons (in the call and in the waiting room) name what they do, their
// icons are crossed out while off, and "You are muted" / "Your camera is off" say the state.
function setMuted(muted) {
  state.muted = muted;
  state.local.getAudioTracks().forEach((t) => (t.enabled = !muted));
  showOff(["mute", "waiting-mute"], muted, muted ? "Unmute" : "Mute", muted ? "#i-mic-off" : "#i-mic");
  $("muted-note").textContent = muted ? "You are muted" : "";
  document.body.dataset.muted = String(muted);
  sendMediaState();
}

function setCameraOff(off) {
  state.cameraOff = off;
  state.local.getVideoTracks().forEach((t) => (t.enabled = !off));
  showOff(["camera", "waiting-camera"], off, off ? "Turn camera on" : "Turn camera off", off ? "#i-camera-off" : "#i-camera");
  $("local-off").hidden = !off;
  document.body.dataset.cameraOff = String(off);
  sendMediaState();
}

/** The buttons `ids` say `label` with the icon `icon`, highlighted while something is `off`. */
function showOff(ids, off, label, icon) {
  for (const id of ids) {
    $(id).querySelector("span").textContent = label;
    $(id).querySelector("use").setAttribute("href", icon);
    $(id).classList.toggle("active", off);
  }
}

function showChat(open) {
  $("chat").hidden = !open;
  document.body.classList.toggle("chat-open", open);
  placeSelfView(selfView.dx, selfView.dy, false); // the self view moved with the layout
  $("chat-toggle").setAttribute("aria-expanded", String(open));
  if (open) { state.unread = 0; $("chat-unread").hidden = true; $("chat-input").focus(); }
}

async function stopSharing() {
  if (!state.screenStream) return;
  state.screenStream.getTracks().forEach((t) => t.stop());
  state.screenStream = null;
  if (state.pc && state.screenSender) { state.pc.removeTrack(state.screenSender); state.screenSender = null; await makeOffer(); }
  state.signaling.send({ type: "screen-share", active: false });
  $("screen-caption").hidden = true;
  $("share-preview").hidden = true;
  $("share-preview-video").srcObject = null;
  $("share").querySelector("span").textContent = "Share screen";
}

// ---------- once a second: timer, quality, adaptive resolution ----------
async function tick() {
  if (state.ended) return;
  if (state.connectedAt) {
    $("timer").textContent = formatDuration(state.durationOffset + (Date.now() - state.connectedAt) / 1000);
  }
  const now = Date.now();
  if (state.pc && state.restarts.onTick(now)) makeOffer(true); // the connection stays failed
  if (state.pc && state.pc.connectionState === "connected") {
    const sample = await readQualitySample(state.pc, state.statsPrev, now);
    state.statsPrev = sample;
    document.body.dataset.framesDecoded = String(sample.framesDecoded);
    document.body.dataset.frameSize = `${sample.frameWidth}x${sample.frameHeight}`;
    if (sample.framesDecoded !== state.framesSeen) { state.framesSeen = sample.framesDecoded; state.framesAt = now; }
    const changed = state.scorer.update(sample, now);
    if (changed) {
      state.signaling.send({ type: "quality", level: changed, rtt_ms: sample.rttMs ?? undefined, loss_percent: sample.lossPercent ?? undefined, jitter_ms: sample.jitterMs ?? undefined });
    }
    adaptVideo(sample, now);
    if (state.join.role === "doctor") recordStrip(sample, now);
  }
  showQuality(badgeLevel(now));
}

// ---------- the doctor's quality strip ----------
// A small live graph of what the patient's side delivers over the visit: received bitrate, packet
// loss and round-trip delay, the last two minutes drawn, the whole visit summed up in words (the
// graph is hidden from assistive tech; the words are its text alternative).
const STRIP_POINTS = 120;
const strip = { samples: [], lastBytes: null, lastAt: null, minKbps: Infinity, maxLoss: 0, maxRtt: 0, sumKbps: 0, count: 0, shownAt: 0 };

function recordStrip(sample, now) {
  if (strip.lastBytes !== null && now > strip.lastAt) {
    const kbps = Math.max(0, ((sample.bytes - strip.lastBytes) * 8) / (now - strip.lastAt));
    const point = { kbps, loss: sample.lossPercent ?? 0, rtt: sample.rttMs ?? 0 };
    strip.samples.push(point);
    if (strip.samples.length > STRIP_POINTS) strip.samples.shift();
    strip.minKbps = Math.min(strip.minKbps, kbps);
    strip.maxLoss = Math.max(strip.maxLoss, point.loss);
    strip.maxRtt = Math.max(strip.maxRtt, point.rtt);
    strip.sumKbps += kbps;
    strip.count += 1;
    drawStrip(now);
  }
  strip.lastBytes = sample.bytes;
  strip.lastAt = now;
}

function drawStrip(now) {
  $("quality-strip").hidden = false;
  const samples = strip.samples;
  const topKbps = Math.max(500, ...samples.map((p) => p.kbps));
  const x = (i) => (120 - ((samples.length - 1 - i) * 120) / (STRIP_POINTS - 1)).toFixed(1); // the newest at the right edge
  const line = (value, top) => samples.map((p, i) => `${x(i)},${(30 - (Math.min(value(p), top) / top) * 28 - 1).toFixed(1)}`).join(" ");
  $("strip-rate").setAttribute("points", line((p) => p.kbps, topKbps));
  $("strip-loss").setAttribute("points", line((p) => p.loss, 10)); // 10 % and more at the top
  $("strip-rtt").setAttribute("points", line((p) => p.rtt, Math.max(300, strip.maxRtt)));
  document.body.dataset.stripPoints = String(samples.length);
  if (now - strip.shownAt < 5000 && strip.count > 1) return; // words change every 5 s, not every second
  strip.shownAt = now;
  const last = samples[samples.length - 1];
  const rate = (kbps) => (kbps >= 1000 ? `${(kbps / 1000).toFixed(1)} Mbit/s` : `${Math.round(kbps)} kbit/s`);
  $("strip-summary").textContent = `Now ${rate(last.kbps)}, ${last.loss.toFixed(1)} % loss, ${Math.round(last.rtt)} ms delay. `
    + `This visit: average ${rate(strip.sumKbps / strip.count)}, lowest ${rate(strip.minKbps)}, worst loss ${strip.maxLoss.toFixed(1)} %, worst delay ${Math.round(strip.maxRtt)} ms.`;
}

// The badge never praises a picture that is not moving: the clinic's server unreachable, the
// other side's connection dropped, the peer connection reconnecting, or no new video frame for
// over 1.5 s (the other tab vanished, its camera stalled) each say so before the measured level.
const FROZEN_AFTER_MS = 1500;
const BADGE_TEXT = {
  excellent: "● Excellent", good: "● Good", poor: "● Poor", lost: "● Lost", paused: "● Video paused",
  reconnecting: "● Reconnecting…", "doctor-away": "● Doctor reconnecting…", "patient-away": "● Patient reconnecting…", unknown: "…",
};

function badgeLevel(now) {
  if (state.signalingDown) return "reconnecting";
  if (state.peerAway) return `${state.peerAway}-away`;
  if (!state.pc) return "unknown";
  if (state.pc.connectionState === "disconnected" || state.pc.connectionState === "failed") return "reconnecting";
  if (state.pc.connectionState !== "connected") return "unknown";
  const videoExpected = document.body.dataset.peerVideo !== "false" && state.framesSeen > 0;
  if (videoExpected && now - state.framesAt > FROZEN_AFTER_MS) return "paused";
  return state.scorer.shown;
}

function showQuality(level) {
  if ($("quality").dataset.level === level) return;
  $("quality").dataset.level = level;
  $("quality").textContent = BADGE_TEXT[level];
}

// The camera's picture follows the core's bitrate ladder (rules.js): the browser's congestion
// controller gives the estimate, the ladder the picture size and frame rate (down at once, up one
// step after 2 s with room to spare; in the examination mode the frame rate goes first). It starts
// at the camera's own size: HD from the first second where the link carries it. For its first
// LADDER_WARM_UP_MS a peer connection's estimate is Chromium's start guess (~300 kbit/s, before any
// feedback), not a measurement: the ladder waits for a measured one (the core starts low instead).
const LADDER_WARM_UP_MS = 2000;
function adaptVideo(sample, now) {
  const sender = state.pc.getSenders().find((s) => s.track && s.track.kind === "video" && s !== state.screenSender);
  if (!sender || sample.estimateBps == null || !state.pcConnectedAt || now - state.pcConnectedAt < LADDER_WARM_UP_MS) return;
  const height = sender.track.getSettings().height || 720;
  if (!state.ladder) {
    const top = LADDER.find((r) => r.height > 0 && r.height <= height) || LADDER[LADDER.length - 2];
    state.ladder = new BitrateLadder(top.name, top.name, state.examination ? "detail" : "balanced");
  }
  const { target, changed } = state.ladder.update(sample.estimateBps, null, now);
  document.body.dataset.videoRung = target.rung.name;
  document.body.dataset.estimateKbps = String(Math.round(sample.estimateBps / 1000));
  if (!changed && sender.track === state.ladderTrack) return; // a new camera is scaled anew
  state.ladderTrack = sender.track;
  const parameters = sender.getParameters();
  for (const encoding of parameters.encodings || []) {
    encoding.active = target.rung.height > 0; // audio only at the bottom
    encoding.scaleResolutionDownBy = target.rung.height > 0 ? Math.max(1, height / target.rung.height) : 1;
    encoding.maxFramerate = target.fps || undefined;
  }
  sender.setParameters(parameters).catch(() => {});
}

// ---------- start ----------
async function main() {
  wireControls();
  wireSelfView();
  $("remote-video").addEventListener("resize", showRemoteShape);
  state.token = readToken();
  sessionStorage.setItem("televisit-visit", location.pathname); // the device test's way back
  if (!state.token) return showError("missing_token");
  if (CUT_OFF_TOKEN.test(state.token)) return showError("cut_off_token");
  const response = await fetch("/api/video-call/join", { method: "POST", headers: { Authorization: `Bearer ${state.token}` } }).catch(() => null);
  if (!response) return showScreen("Cannot reach the clinic", "Check your internet connection and try again.", { retry: true });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) return showError(body.error && body.error.code, body.error && body.error.message);
  state.join = body;
  state.restarts = new IceRestarts(body.role);
  document.body.dataset.role = body.role;
  showHideIpSetting();
  $("peer-name").textContent = body.peer_display_name;
  $("share").hidden = body.role !== "doctor"; // the server refuses a patient's share anyway
  $("examine").hidden = body.role !== "doctor";
  $("hangup").querySelector("span").textContent = body.role === "doctor" ? "End call" : "Leave";
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
  useSpeaker();
  showFlip();
  state.signaling = new Signaling({
    token: state.token,
    websocketPath: body.websocket_path,
    signalPath: body.signal_path,
    onFrame,
    onStatus: (status) => {
      state.signalingDown = status === "reconnecting";
      showBanner(state.signalingDown ? "Connection lost — reconnecting…" : "");
      showQuality(badgeLevel(Date.now()));
    },
    onChatPending: (count) => {
      $("chat-sending").hidden = count === 0;
      document.body.dataset.chatPending = String(count);
    },
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
