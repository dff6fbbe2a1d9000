// The device test page: camera choice with preview, microphone choice with a level meter,
// a speaker tone, and a compatibility check.
"use strict";

const $ = (id) => document.getElementById(id);
let stream = null;
let audioContext = null;
let analyser = null;

async function listDevices() {
  const devices = await navigator.mediaDevices.enumerateDevices();
  for (const [kind, select] of [["videoinput", $("camera-select")], ["audioinput", $("mic-select")]]) {
    const current = select.value;
    select.replaceChildren(...devices.filter((d) => d.kind === kind).map((d, i) => {
      const option = document.createElement("option");
      option.value = d.deviceId;
      option.textContent = d.label || `${kind === "videoinput" ? "Camera" : "Microphone"} ${i + 1}`;
      return option;
    }));
    if (current) select.value = current;
  }
}

async function open() {
  if (stream) stream.getTracks().forEach((t) => t.stop());
  const camera = $("camera-select").value;
  const mic = $("mic-select").value;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      video: camera ? { deviceId: { exact: camera }, width: { ideal: 1280 }, height: { ideal: 720 } } : { width: { ideal: 1280 }, height: { ideal: 720 } },
      audio: mic ? { deviceId: { exact: mic } } : true,
    });
  } catch (error) {
    $("camera-info").textContent = error.name === "NotAllowedError"
      ? "Camera and microphone are blocked: allow them in the browser's site settings."
      : `The camera or microphone could not start (${error.name}).`;
    return;
  }
  $("preview").srcObject = stream;
  const settings = stream.getVideoTracks()[0]?.getSettings() || {};
  $("camera-info").textContent = `Camera works: ${settings.width || "?"}×${settings.height || "?"}.`;
  audioContext = audioContext || new AudioContext();
  const source = audioContext.createMediaStreamSource(stream);
  analyser = audioContext.createAnalyser();
  analyser.fftSize = 1024;
  source.connect(analyser);
  await listDevices();
}

function meter() {
  if (analyser) {
    const data = new Float32Array(analyser.fftSize);
    analyser.getFloatTimeDomainData(data);
    const rms = Math.sqrt(data.reduce((sum, v) => sum + v * v, 0) / data.length);
    $("level").value = Math.min(100, Math.round(rms * 400));
  }
  requestAnimationFrame(meter);
}

function speakerTest() {
  audioContext = audioContext || new AudioContext();
  const oscillator = audioContext.createOscillator();
  const gain = audioContext.createGain();
  oscillator.frequency.value = 440;
  gain.gain.value = 0.2;
  oscillator.connect(gain).connect(audioContext.destination);
  oscillator.start();
  oscillator.stop(audioContext.currentTime + 1);
  $("speaker-info").textContent = "Playing a one-second tone. Did you hear it? If not, check the volume and the output device.";
}

function checks() {
  const codecs = (window.RTCRtpSender && RTCRtpSender.getCapabilities && RTCRtpSender.getCapabilities("video")?.codecs) || [];
  const has = (name) => codecs.some((c) => c.mimeType.toLowerCase() === `video/${name}`);
  const items = [
    ["WebRTC (RTCPeerConnection)", "RTCPeerConnection" in window],
    ["Camera and microphone access (getUserMedia)", Boolean(navigator.mediaDevices && navigator.mediaDevices.getUserMedia)],
    ["Secure context (https or localhost)", window.isSecureContext],
    ["VP8 video codec", has("vp8")],
    ["H.264 video codec", has("h264")],
    ["Screen sharing (getDisplayMedia)", Boolean(navigator.mediaDevices && navigator.mediaDevices.getDisplayMedia)],
  ];
  $("checks").replaceChildren(...items.map(([label, ok]) => {
    const li = document.createElement("li");
    li.dataset.ok = String(ok);
    li.textContent = `${label}: ${ok ? "yes" : "no"}`;
    return li;
  }));
}

$("camera-select").onchange = open;
$("mic-select").onchange = open;
$("speaker-test").onclick = speakerTest;
checks();
open().then(meter);
