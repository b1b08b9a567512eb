// What the call page and the view page share: the server's token and ICE.
"use strict";

// A server started with a token wants it: open a page with #token=... in its URL (the fragment
// never leaves the browser) or ?token=...; it is sent as a bearer token.
const token = new URLSearchParams(location.hash.slice(1)).get("token")
  || new URLSearchParams(location.search).get("token");
const auth = token ? { Authorization: `Bearer ${token}` } : {};

// STUN/TURN servers the server hands out (TURN with short-lived credentials); none if it
// has none, or is older than that endpoint.
async function iceServers() {
  try {
    const response = await fetch("/ice-servers", { headers: auth });
    if (response.ok) return (await response.json()).iceServers;
  } catch (e) { /* fall through */ }
  return [];
}

// The offer goes out with its candidates (no trickle ICE): wait for gathering, at most 2 s
// (host candidates come first; send what we have).
function iceGatheringComplete(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const check = () => {
      if (pc.iceGatheringState === "complete") {
        pc.removeEventListener("icegatheringstatechange", check);
        resolve();
      }
    };
    pc.addEventListener("icegatheringstatechange", check);
    setTimeout(resolve, 2000);
  });
}
