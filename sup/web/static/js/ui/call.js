// Calls on screen: the call button of a direct chat's header, the incoming-call dialog (Accept, Decline) and
// the call screen (who, how long, Mute, Hang up). The logic is client/calls.js; what is shown is
// `snapshot.call`.

import { html, useEffect, useRef, useState } from "./html.js";
import { app, Avatar, useApp } from "./common.js";

const STATUS = {
  calling: "Calling…",
  ringing: "Ringing…",
  connecting: "Connecting…",
  connected: "Connected",
  ended: "Call ended",
};
const ENDED = {
  declined: "Declined",
  cancelled: "Cancelled",
  timeout: "No answer",
  busy: "Busy",
  hangup: "Call ended",
  connection_lost: "Connection lost",
  answered_elsewhere: "Answered on another device",
  failed: "Call failed",
};

/** The header's Call button: a direct chat, in the tab that holds the connection. */
export function CallButton({ chat }) {
  const s = useApp();
  if (chat.type !== "direct" || !chat.peer || !s.leading) return null;
  const busy = s.call && s.call.status !== "ended";
  // An icon, so the header keeps room for the name at phone width.
  return html`<button
    type="button"
    class="icon-button small call-button"
    disabled=${busy || s.connection !== "online"}
    onClick=${() => app.calls.place(chat)}
    aria-label=${`Call ${app.chatTitle(chat)}`}
    title="Call"
  >
    <svg viewBox="0 0 24 24" width="22" height="22" aria-hidden="true">
      <path
        d="M5 4h3l2 5-2.5 1.5a11 11 0 0 0 6 6L15 14l5 2v3a2 2 0 0 1-2 2A16 16 0 0 1 3 6a2 2 0 0 1 2-2z"
      />
    </svg>
  </button>`;
}

function duration(ms) {
  const seconds = Math.max(0, Math.floor(ms / 1000));
  return `${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
}

/** The incoming-call dialog or the call screen, over everything, while there is a call. */
export function CallOverlay() {
  const s = useApp();
  const call = s.call;
  if (!call) return null;
  const name = call.peerId ? app.nameOf(call.peerId) : "…";
  if (call.direction === "incoming" && call.status === "ringing") return html`<${Incoming} call=${call} name=${name} />`;
  return html`<${CallScreen} call=${call} name=${name} />`;
}

function Incoming({ call, name }) {
  const accept = useRef(null);
  useEffect(() => accept.current?.focus(), [call.id]);
  return html`<div class="call-overlay" role="alertdialog" aria-modal="true" aria-labelledby="call-title">
    <div class="call-card">
      <${Avatar} id=${call.peerId ?? ""} name=${name} size="l" />
      <h2 id="call-title">${name}</h2>
      <p class="call-status" aria-live="polite">Incoming ${call.video ? "video " : ""}call</p>
      <div class="call-actions">
        <button type="button" class="button accept" ref=${accept} onClick=${() => app.calls.accept()}>Accept</button>
        <button type="button" class="button danger" onClick=${() => app.calls.decline()}>Decline</button>
      </div>
    </div>
  </div>`;
}

function CallScreen({ call, name }) {
  const media = useRef(null);
  const [, tick] = useState(0);
  useEffect(() => {
    if (media.current && media.current.srcObject !== app.calls.remote) media.current.srcObject = app.calls.remote;
  });
  useEffect(() => {
    if (call.status !== "connected") return undefined;
    const timer = setInterval(() => tick((n) => n + 1), 1000);
    return () => clearInterval(timer);
  }, [call.status]);
  const status =
    call.status === "connected" && call.startedAt
      ? `${STATUS.connected} · ${duration(Date.now() - call.startedAt)}`
      : call.status === "ended"
        ? ENDED[call.reason] ?? STATUS.ended
        : STATUS[call.status];
  const live = call.status !== "ended";
  return html`<div class="call-overlay" role="dialog" aria-modal="true" aria-labelledby="call-title">
    <div class="call-card">
      <${Avatar} id=${call.peerId ?? ""} name=${name} size="l" />
      <h2 id="call-title">${name}</h2>
      <p class="call-status" aria-live="polite" data-status=${call.status}>${status}</p>
      ${
        call.video
          ? html`<video class="call-video" ref=${media} autoplay playsinline aria-label=${`Video of ${name}`}></video>`
          : html`<audio ref=${media} autoplay></audio>`
      }
      ${
        live
          ? html`<div class="call-actions">
              <button type="button" class="button" aria-pressed=${call.muted} onClick=${() => app.calls.toggleMute()}>
                ${call.muted ? "Unmute" : "Mute"}
              </button>
              <button type="button" class="button danger" onClick=${() => app.calls.hangUp()}>Hang up</button>
            </div>`
          : null
      }
    </div>
  </div>`;
}
