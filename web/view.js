// The viewer page for OBS Browser Sources (and any browser): /view/{channel}?bg=00ff00&fit=cover
// Watches the channel over WHEP, plays its sound, and reconnects by itself when the server
// restarts or the stream stalls.
"use strict";

const video = document.getElementById("video");
const params = new URLSearchParams(location.search);
const channel = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop() || "");
const state = { status: "connecting", connects: 0, muted: null, error: "", framesDecoded: 0 };
window.viewState = state; // for tests and the curious

// ?bg=RRGGBB: a solid chroma-key colour behind the avatar (default: transparent).
const bg = params.get("bg");
if (bg && /^[0-9a-fA-F]{6}$/.test(bg)) {
  document.documentElement.style.background = `#${bg}`;
  document.body.style.background = `#${bg}`;
}
if (params.get("fit") === "cover") video.style.objectFit = "cover";

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function unmuteOnGesture() {
  const unmute = () => {
    video.muted = false;
    state.muted = false;
    video.play().catch(() => {});
  };
  window.addEventListener("pointerdown", unmute, { once: true });
  window.addEventListener("keydown", unmute, { once: true });
}

async function play() {
  // With sound first: OBS's browser (and kiosk browsers) allow autoplay with sound, and OBS
  // captures it with "Control audio via OBS". Where a browser refuses, play muted (always
  // allowed) and unmute at the first click or key press.
  video.muted = false;
  try {
    await video.play();
    state.muted = false;
  } catch (e) {
    video.muted = true;
    state.muted = true;
    try { await video.play(); } catch (e2) { /* the next track event tries again */ }
    unmuteOnGesture();
  }
}

async function connect() {
  const pc = new RTCPeerConnection({ iceServers: await iceServers() });
  window.viewPc = pc; // for tests and the curious
  pc.addTransceiver("video", { direction: "recvonly" });
  pc.addTransceiver("audio", { direction: "recvonly" });
  const stream = new MediaStream();
  pc.ontrack = (ev) => {
    stream.addTrack(ev.track);
    if (video.srcObject !== stream) video.srcObject = stream;
    play();
  };
  await pc.setLocalDescription(await pc.createOffer());
  await iceGatheringComplete(pc);
  const response = await fetch(`/channels/${encodeURIComponent(channel)}/whep`, {
    method: "POST",
    headers: { "Content-Type": "application/sdp", ...auth },
    body: pc.localDescription.sdp,
  });
  if (response.status !== 201) {
    pc.close();
    let message = response.statusText;
    try { message = (await response.json()).message || message; } catch (e) { /* not JSON */ }
    throw new Error(`${response.status}: ${message}`);
  }
  const resource = response.headers.get("Location");
  await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
  return { pc, resource };
}

// While reconnecting, the page keeps showing the stream's last frame (the server sends the
// avatar at rest as it stops) instead of going blank: a restart is a pause, not a vanishing.
const still = document.getElementById("still");

function holdLastFrame() {
  if (!video.videoWidth) return;
  still.width = video.videoWidth;
  still.height = video.videoHeight;
  still.getContext("2d").drawImage(video, 0, 0);
  still.style.display = "block";
}

function releaseLastFrame() {
  still.style.display = "none";
}

async function framesDecoded(pc) {
  let frames = 0;
  (await pc.getStats()).forEach((r) => {
    if (r.type === "inbound-rtp" && r.kind === "video") frames = r.framesDecoded || 0;
  });
  return frames;
}

// Resolves when the stream has ended: the connection failed or closed, or no frame was
// decoded for 3 s (a restarted server never says goodbye).
async function untilEnded(pc) {
  let last = -1;
  let still = 0;
  while (pc.connectionState !== "failed" && pc.connectionState !== "closed") {
    await sleep(1000);
    const frames = await framesDecoded(pc);
    state.framesDecoded = frames;
    if (frames > 0 && frames !== last) {
      state.status = "live";
      releaseLastFrame();
    }
    still = frames === last ? still + 1 : 0;
    last = frames;
    if (still >= 3 || (frames === 0 && still >= 8)) return;
  }
}

let current = null; // { pc, resource } of the live connection

window.addEventListener("pagehide", () => {
  // Leave at once (OBS unloads hidden sources): the server frees the viewer now rather than
  // when the connection times out.
  if (current && current.resource) {
    fetch(current.resource, { method: "DELETE", headers: auth, keepalive: true }).catch(() => {});
  }
});

async function run() {
  let delayMs = 1000;
  for (;;) {
    let session = null;
    state.connects += 1;
    try {
      session = await connect();
      current = session;
      state.error = "";
      await untilEnded(session.pc);
      delayMs = 1000;
    } catch (e) {
      state.error = String(e.message || e);
    }
    current = null;
    if (session) {
      holdLastFrame(); // before close(): closing ends the tracks and blanks the video
      session.pc.close();
      if (session.resource) {
        fetch(session.resource, { method: "DELETE", headers: auth }).catch(() => {});
      }
    }
    state.status = "reconnecting";
    await sleep(delayMs);
    delayMs = Math.min(delayMs * 2, 5000);
  }
}

run();
