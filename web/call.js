// The call page: microphone in, avatar video (and optionally its audio) out.
"use strict";

const $ = (id) => document.getElementById(id);
const state = {
  pc: null, leaveUrl: null, stateUrl: null, stream: null, statsTimer: null, last: null,
};

function setStatus(text, cls) {
  $("status").textContent = text;
  $("status").className = `status ${cls}`;
}

async function listMics() {
  try {
    const devices = await navigator.mediaDevices.enumerateDevices();
    const select = $("mic");
    for (const d of devices.filter((d) => d.kind === "audioinput")) {
      const opt = document.createElement("option");
      opt.value = d.deviceId;
      opt.textContent = d.label || `microphone ${select.length}`;
      select.appendChild(opt);
    }
  } catch (e) { /* no device list: the default microphone still works */ }
}

async function start() {
  $("error").textContent = "";
  $("start").disabled = true;
  setStatus("connecting", "connecting");
  try {
    const deviceId = $("mic").value;
    state.stream = await navigator.mediaDevices.getUserMedia({
      audio: {
        deviceId: deviceId ? { exact: deviceId } : undefined,
        // Unprocessed audio: the lip-sync model wants the voice as it is.
        echoCancellation: false, noiseSuppression: false, autoGainControl: false,
        channelCount: 1,
      },
    });
    const pc = new RTCPeerConnection({ iceServers: await iceServers() });
    state.pc = pc;
    window.avatarPc = pc; // for tests and the curious
    pc.addTransceiver(state.stream.getAudioTracks()[0], { direction: "sendrecv" });
    pc.addTransceiver("video", { direction: "recvonly" });
    const remote = new MediaStream();
    pc.ontrack = (ev) => {
      remote.addTrack(ev.track);
      $("video").srcObject = remote;
    };
    pc.onconnectionstatechange = () => {
      const s = pc.connectionState;
      if (s === "connected") setStatus("live", "live");
      else if (s === "failed" || s === "disconnected") setStatus(s, "failed");
    };
    await pc.setLocalDescription(await pc.createOffer());
    await iceGatheringComplete(pc);
    // With a channel name, the microphone drives that channel (its viewers see the avatar
    // speak) and this page watches it; otherwise it is a private call.
    const channel = $("channel").value.trim();
    const url = channel ? `/channels/${encodeURIComponent(channel)}/publish` : "/offer";
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", ...auth },
      body: JSON.stringify({
        sdp: pc.localDescription.sdp, type: "offer", avatar: $("avatar").value || undefined,
      }),
    });
    const body = await response.json();
    if (!response.ok) throw new Error(body.message || body.error || response.statusText);
    state.leaveUrl = channel ? body.leave_url : `/sessions/${body.session_id}`;
    // The server's playout buffer for this microphone: the call, or the channel it drives.
    state.stateUrl = channel ? `/channels/${encodeURIComponent(channel)}` : state.leaveUrl;
    await pc.setRemoteDescription({ sdp: body.sdp, type: body.type });
    $("stop").disabled = false;
    state.statsTimer = setInterval(showStats, 1000);
  } catch (e) {
    $("error").textContent = String(e.message || e);
    await stop();
    setStatus("failed", "failed");
  }
}

async function stop() {
  clearInterval(state.statsTimer);
  if (state.leaveUrl) {
    fetch(state.leaveUrl, { method: "DELETE", headers: auth }).catch(() => {});
  }
  if (state.pc) state.pc.close();
  if (state.stream) state.stream.getTracks().forEach((t) => t.stop());
  Object.assign(state, { pc: null, leaveUrl: null, stateUrl: null, stream: null, last: null });
  $("stats").textContent = "";
  $("start").disabled = false;
  $("stop").disabled = true;
  setStatus("idle", "idle");
}

async function collectStats(pc) {
  const out = {};
  (await pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video") out.video = r;
    if (r.type === "inbound-rtp" && r.kind === "audio") out.audio = r;
    if (r.type === "candidate-pair" && r.nominated && r.state === "succeeded") out.pair = r;
  });
  return out;
}

// What the server's playout buffer is doing with this microphone's audio (see /metrics).
async function serverPlayout() {
  try {
    const response = await fetch(state.stateUrl, { headers: auth });
    return response.ok ? (await response.json()).playout : null;
  } catch (e) {
    return null;
  }
}

function playoutLines(p) {
  if (!p) return [];
  const peaks = p.recent_peak_delays_ms;
  const worst = peaks.length ? Math.max(...peaks).toFixed(0) : "-";
  const delay = p.playout_delay_ms === null ? "-" : p.playout_delay_ms.toFixed(0);
  return [
    `server delay ${delay} ms  target ${p.target_delay_ms.toFixed(0)} ms`,
    `  late audio, worst of 10 s: ${worst} ms`,
    `  concealed ${p.concealed_frames}  +${p.inserted_frames}/-${p.skipped_frames} in pauses`,
    `  dropped ${p.dropped_frames} (speech ${p.dropped_speech_frames})  lost ${p.gap_ms_filled} ms`,
  ];
}

async function showStats() {
  if (!state.pc) return;
  const [s, playout] = await Promise.all([collectStats(state.pc), serverPlayout()]);
  const v = s.video || {};
  const jb = v.jitterBufferEmittedCount ? (1000 * v.jitterBufferDelay / v.jitterBufferEmittedCount) : 0;
  const rtt = s.pair && s.pair.currentRoundTripTime !== undefined ? s.pair.currentRoundTripTime * 1000 : NaN;
  $("stats").textContent = [
    `fps ${v.framesPerSecond ?? 0}`,
    `decoded ${v.framesDecoded ?? 0}  dropped ${v.framesDropped ?? 0}`,
    `freezes ${v.freezeCount ?? 0}`,
    `jitter buffer ${jb.toFixed(0)} ms`,
    `rtt ${Number.isNaN(rtt) ? "-" : rtt.toFixed(0) + " ms"}`,
    ...playoutLines(playout),
  ].join("\n");
  window.avatarStats = s; // for tests and the curious
  window.avatarPlayout = playout;
}

$("hear").addEventListener("change", () => { $("video").muted = !$("hear").checked; });
$("start").addEventListener("click", start);
$("stop").addEventListener("click", stop);
window.addEventListener("pagehide", () => { if (state.pc) stop(); });
listMics();
