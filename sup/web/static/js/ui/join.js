// Opening an invite link (/join/<code>; the link shared is https://<server>/#/join/<code>, whose fragment no
// server or access log sees): what the chat is, then Join, or Ask to join when an admin approves joins.

import { html, useEffect, useState } from "./html.js";
import { app, Avatar, describe, Field, useApp } from "./common.js";
import { codeOf, joinByInvite, previewInvite } from "../client/joining.js";
import { navigate, onLink } from "./router.js";

const REASONS = {
  unknown: "This invite link does not exist. Check that you have the whole link.",
  revoked: "This invite link was revoked by an admin of the chat.",
  expired: "This invite link has expired. Ask for a new one.",
  used_up: "This invite link has been used as many times as it allows. Ask for a new one.",
};

export function JoinScreen({ code }) {
  const s = useApp();
  const [preview, setPreview] = useState(null);
  const [error, setError] = useState("");
  const [status, setStatus] = useState("");
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    if (!code) return;
    setPreview(null);
    setError("");
    previewInvite(app, code).then(setPreview, (e) => setError(REASONS[e.body?.reason] ?? describe(e)));
  }, [code]);

  const join = async () => {
    setBusy(true);
    setError("");
    try {
      const answer = await joinByInvite(app, code);
      if (answer.status === "requested") {
        setPreview({ ...preview, requested: true });
        setStatus("Your request was sent. You will be added when an admin approves it.");
      } else navigate(`/chats/${answer.chat_id}`, { replace: true });
    } catch (e) {
      setError(REASONS[e.body?.reason] ?? describe(e));
    } finally {
      setBusy(false);
    }
  };
  const other = (event) => {
    event.preventDefault();
    const next = codeOf(new FormData(event.currentTarget).get("link"));
    if (next) navigate(`/join/${next}`);
  };

  const chat = preview?.chat;
  const member = chat && (chat.joined || s.chats.some((c) => c.id === chat.id)); // an approved request, too
  return html`<section class="page" aria-labelledby="join-title">
    <header class="page-head">
      <a href="/" onClick=${onLink} class="back icon-button" aria-label="Back to chats">‹</a>
      <h1 id="join-title">${chat ? `Join ${chat.title}` : "Join a chat"}</h1>
    </header>
    ${error ? html`<p class="form-error" role="alert">${error}</p>` : null}
    ${
      code && !preview && !error
        ? html`<p class="muted" aria-busy="true">Looking at the link…</p>`
        : chat
          ? html`<div class="card join-card">
            <div class="join-head">
              <${Avatar} id=${chat.id} name=${chat.title} size="l" />
              <div>
                <p class="join-title">${chat.title}</p>
                <p class="muted">${chat.type === "channel" ? "Channel" : "Group"} · ${chat.member_count}
                  ${chat.member_count === 1 ? " member" : " members"}${chat.encrypted ? " · end-to-end encrypted" : ""}</p>
              </div>
            </div>
            ${chat.description ? html`<p>${chat.description}</p>` : null}
            ${chat.encrypted ? html`<p class="field-hint">You will read what is sent after you join, not the messages before.</p>` : null}
            ${preview.expires_at ? html`<p class="field-hint">This link works until ${new Date(preview.expires_at).toLocaleString()}.</p>` : null}
            ${
              member
                ? html`<p role="status">${preview.requested ? "Your request was approved: you are a member." : "You are a member already."}</p>
                  <a class="button primary" href=${`/chats/${chat.id}`} onClick=${onLink}>Open chat</a>`
                : preview.requested
                  ? html`<p role="status">${status || "You asked to join. An admin of the chat will approve or decline it."}</p>`
                  : html`${preview.requires_approval ? html`<p>An admin of the chat approves who joins.</p>` : null}
                    <button type="button" class="primary" disabled=${busy} onClick=${join}>
                      ${preview.requires_approval ? "Ask to join" : "Join"}
                    </button>`
            }
          </div>`
          : null
    }
    <form class="card inline-form" onSubmit=${other}>
      <${Field} label="Invite link or code" id="join-link" name="link" autocomplete="off" autocapitalize="none" required />
      <button type="submit">Open link</button>
    </form>
  </section>`;
}
