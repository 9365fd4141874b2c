// The safety number with one person: 60 digits covering every device key of both of you. Compare it in
// person or over another channel; when it matches, no one is in the middle. Never shown for yourself.

import { html, useEffect, useState } from "./html.js";
import { app, describe, keyDigits, shortId, useApp } from "./common.js";
import { onLink } from "./router.js";

export function SafetyScreen({ userId }) {
  const s = useApp();
  const [result, setResult] = useState(null);
  const [error, setError] = useState("");
  const isMe = userId === s.me?.id;
  useEffect(() => {
    if (isMe) return;
    setResult(null);
    app.act("safetyNumber", userId).then(setResult, (e) => setError(describe(e)));
  }, [userId]);
  const name = app.nameOf(userId);
  const groups = result ? result.number.match(/.{5}/g) : [];
  return html`<section class="page" aria-labelledby="safety-title">
    <header class="page-head">
      <a href="/" onClick=${onLink} class="back icon-button" aria-label="Back to chats">‹</a>
      <h1 id="safety-title">${isMe ? "Your devices" : `Safety number with ${name}`}</h1>
    </header>
    ${
      isMe
        ? html`<div class="card">
          <p>A safety number is compared with someone else. To check your own devices, see
            <a href="/settings/devices" onClick=${onLink}>Devices</a>.</p>
        </div>`
        : error
          ? html`<p class="form-error" role="alert">${error}</p>`
          : !result
            ? html`<p aria-busy="true">Computing…</p>`
            : html`<div class="card">
              <p>Compare these numbers with ${name}, in person or over a call. If they match on both screens, your chat is
                end-to-end encrypted with no one in the middle.</p>
              <p class="safety-number" aria-label=${`Safety number: ${result.number.split("").join(" ")}`}>
                ${groups.map((g) => html`<span>${g}</span>`)}
              </p>
              <p class="muted">It changes when either of you adds a device or reinstalls.</p>
            </div>
            <h2>${name}’s devices</h2>
            <ul class="device-list">
              ${result.devices.map(
                (d) => html`<li key=${d.deviceId}><span class="mono">id ${shortId(d.deviceId)}</span>
                  <span class="mono muted">key ${keyDigits(d.identityKey)}</span></li>`,
              )}
            </ul>`
    }
  </section>`;
}
