// Choosing and testing the camera, microphone and speaker, shared by the call page and the device
// test page. The choice is kept in this browser (localStorage: device ids only, no patient data),
// so that a call uses what the device test picked.
"use strict";

const Devices = (() => {
  const KEY = "televisit-devices";
  const KINDS = { camera: "videoinput", microphone: "audioinput", speaker: "audiooutput" };
  const NAMES = { camera: "Camera", microphone: "Microphone", speaker: "Speaker" };

  /** `{ camera, microphone, speaker }`: the device ids chosen before (any may be missing). */
  function chosen() {
    try { return JSON.parse(localStorage.getItem(KEY)) || {}; } catch { return {}; }
  }

  function remember(kind, deviceId) {
    const choice = chosen();
    choice[kind] = deviceId;
    try { localStorage.setItem(KEY, JSON.stringify(choice)); } catch { /* private mode: not kept */ }
  }

  /**
   * getUserMedia's video constraints: the chosen camera, in HD (getUserMedia fails if that camera
   * is gone: try again with `video(null)`; an "ideal" device id is not honoured by Chromium).
   */
  function video(deviceId = chosen().camera) {
    const hd = { width: { ideal: 1920 }, height: { ideal: 1080 }, frameRate: { ideal: 30 } };
    return deviceId ? { ...hd, deviceId: { exact: deviceId } } : hd;
  }

  /** getUserMedia's audio constraints: the chosen microphone (as `video`), echo cancelled. */
  function audio(deviceId = chosen().microphone) {
    const clean = { echoCancellation: true, noiseSuppression: true };
    return deviceId ? { ...clean, deviceId: { exact: deviceId } } : clean;
  }

  /** getUserMedia with the chosen devices, else with any (a chosen device may be unplugged). */
  async function open() {
    try {
      return await navigator.mediaDevices.getUserMedia({ video: video(), audio: audio() });
    } catch (error) {
      if (error.name === "NotAllowedError" || error.name === "SecurityError") throw error;
      return navigator.mediaDevices.getUserMedia({ video: video(null), audio: audio(null) });
    }
  }

  /** Whether this browser lets a page choose the speaker (Chromium does; Safari and Firefox on phones do not). */
  const speakerChoice = () => "setSinkId" in HTMLMediaElement.prototype;

  /**
   * Fills `selects` (`{ camera, microphone, speaker }`, any may be missing) with this browser's
   * devices, selecting the one `stream` uses, else the chosen one. Returns the device list.
   */
  async function fill(selects, stream) {
    const devices = await navigator.mediaDevices.enumerateDevices();
    const inUse = {
      camera: stream?.getVideoTracks()[0]?.getSettings().deviceId,
      microphone: stream?.getAudioTracks()[0]?.getSettings().deviceId,
    };
    const choice = chosen();
    for (const [kind, select] of Object.entries(selects)) {
      if (!select) continue;
      const options = devices.filter((d) => d.kind === KINDS[kind]).map((d, i) => {
        const option = document.createElement("option");
        option.value = d.deviceId;
        option.textContent = d.label || `${NAMES[kind]} ${i + 1}`;
        return option;
      });
      select.replaceChildren(...options);
      const want = inUse[kind] || choice[kind];
      if (want && options.some((o) => o.value === want)) select.value = want;
    }
    return devices;
  }

  /** Shows `stream`'s microphone level in `meter` (0–100) until the returned function is called. */
  function level(stream, meter) {
    const track = stream.getAudioTracks()[0];
    if (!track) return () => {};
    const context = new AudioContext();
    const analyser = context.createAnalyser();
    analyser.fftSize = 1024;
    context.createMediaStreamSource(new MediaStream([track])).connect(analyser);
    const data = new Float32Array(analyser.fftSize);
    let running = true;
    const draw = () => {
      if (!running) return;
      analyser.getFloatTimeDomainData(data);
      const rms = Math.sqrt(data.reduce((sum, v) => sum + v * v, 0) / data.length);
      meter.value = Math.min(100, Math.round(rms * 400));
      requestAnimationFrame(draw);
    };
    context.resume().then(draw);
    return () => { running = false; context.close(); };
  }

  /** Plays a one-second tone on the speaker `sinkId` (or the default one). */
  async function testSound(sinkId) {
    const context = new AudioContext();
    if (sinkId && context.setSinkId) await context.setSinkId(sinkId).catch(() => {});
    const oscillator = context.createOscillator();
    const gain = context.createGain();
    oscillator.frequency.value = 440;
    gain.gain.value = 0.2;
    oscillator.connect(gain).connect(context.destination);
    oscillator.start();
    oscillator.stop(context.currentTime + 1);
    oscillator.onended = () => context.close();
  }

  return { chosen, remember, video, audio, open, speakerChoice, fill, level, testSound };
})();
