// The device test page: camera choice with preview, microphone choice with a level meter, speaker
// choice with a test sound, and whether this browser can do a video visit. The choices are kept
// (Devices.remember) and used by the call page.
"use strict";

const $ = (id) => document.getElementById(id);
let stream = null;
let stopLevel = () => {};

async function open() {
  if (stream) stream.getTracks().forEach((t) => t.stop());
  stopLevel();
  try {
    stream = await Devices.open();
  } catch (error) {
    $("camera-info").textContent = error.name === "NotAllowedError"
      ? "Camera and microphone are blocked: allow them in the browser's site settings."
      : "The camera or microphone could not start. Close other apps that use them and reload this page.";
    return;
  }
  $("preview").srcObject = stream;
  const settings = stream.getVideoTracks()[0]?.getSettings() || {};
  $("camera-info").textContent = settings.height >= 720 ? "Your camera works, in high definition." : "Your camera works.";
  stopLevel = Devices.level(stream, $("level"));
  await Devices.fill({ camera: $("camera-select"), microphone: $("mic-select"), speaker: $("speaker-select") }, stream);
  $("speaker-field").hidden = !Devices.speakerChoice() || $("speaker-select").options.length === 0;
}

function checks() {
  const codecs = (window.RTCRtpSender && RTCRtpSender.getCapabilities && RTCRtpSender.getCapabilities("video")?.codecs) || [];
  const has = (name) => codecs.some((c) => c.mimeType.toLowerCase() === `video/${name}`);
  const items = [
    ["Video calls in this browser", "RTCPeerConnection" in window && (has("vp8") || has("h264"))],
    ["Camera and microphone", Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia)],
    ["Secure connection", window.isSecureContext],
    ["Choosing the speaker", Devices.speakerChoice()],
  ];
  $("checks").replaceChildren(...items.map(([label, ok]) => {
    const li = document.createElement("li");
    li.dataset.ok = String(ok);
    li.textContent = `${label}: ${ok ? "yes" : "no"}`;
    return li;
  }));
}

// The way back to the visit this tab came from (the call page notes its address for this tab).
const visit = sessionStorage.getItem("televisit-visit");
if (visit && visit.startsWith("/medical/")) {
  $("back-link").href = visit;
  $("back").hidden = false;
}
$("camera-select").onchange = () => { Devices.remember("camera", $("camera-select").value); open(); };
$("mic-select").onchange = () => { Devices.remember("microphone", $("mic-select").value); open(); };
$("speaker-select").onchange = () => Devices.remember("speaker", $("speaker-select").value);
$("speaker-test").onclick = () => {
  Devices.testSound($("speaker-select").value);
  $("speaker-info").textContent = "Playing a one-second tone. Did you hear it? If not, check the volume, or choose another speaker.";
};
checks();
open();
