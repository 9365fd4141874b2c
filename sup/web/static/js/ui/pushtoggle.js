// Settings › Notifications: "Notifications when the tab is closed", the Web Push switch (client/push.js).

import { html, useEffect, useState } from "./html.js";
import { app } from "./common.js";
import { disablePush, enablePush, pushStatus } from "../client/push.js";

export function PushToggle() {
  const [status, setStatus] = useState("checking");
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  useEffect(() => {
    pushStatus(app.api).then(setStatus, () => setStatus("off"));
  }, []);
  if (status === "unsupported") {
    return html`<p class="muted">This browser cannot get notifications while SUP is closed.</p>`;
  }
  const change = async (on) => {
    setBusy(true);
    setError("");
    try {
      if (on) await enablePush(app.api);
      else await disablePush(app.api);
      setStatus(on ? "on" : "off");
    } catch (e) {
      setError(e.message || String(e));
      setStatus(await pushStatus(app.api).catch(() => "off"));
    } finally {
      setBusy(false);
    }
  };
  return html`<div class="push-toggle">
    <label>
      <input
        type="checkbox"
        checked=${status === "on"}
        disabled=${busy || status === "checking" || status === "blocked"}
        onChange=${(e) => change(e.currentTarget.checked)}
      />
      Notifications when the tab is closed
    </label>
    <p class="muted">They say “New message” and open the chat; what was written is never in them.</p>
    ${status === "blocked" ? html`<p class="muted">Notifications are blocked for this site in your browser’s settings.</p>` : null}
    ${error ? html`<p role="alert" class="form-error">${error}</p>` : null}
  </div>`;
}
