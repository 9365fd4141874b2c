// In a chat's info, for members who may invite (`invite_users`): its invite links (make one with a name,
// an expiry, a use limit, approval; copy; revoke) and the join requests waiting (approve, decline). The
// list of requests follows chat.join_request.* as they come (the socket's frames reach the state).

import { html, useEffect, useState } from "./html.js";
import { app, describe, formatTime, useApp } from "./common.js";
import {
  approveRequest,
  createInvite,
  declineRequest,
  inviteLink,
  invites,
  joinRequests,
  revokeInvite,
} from "../client/joining.js";

const LIFETIMES = [
  ["", "Never"],
  ["3600", "1 hour"],
  ["86400", "1 day"],
  ["604800", "7 days"],
  ["2592000", "30 days"],
];

export function ChatInvites({ chatId }) {
  // someone joined (through a link, whose use count grew): read the links again
  const chat = useApp().chats.find((c) => c.id === chatId);
  const members = chat?.member_ids?.length ?? 0;
  const [links, setLinks] = useState(null);
  const [requests, setRequests] = useState(null);
  const [made, setMade] = useState(null);
  const [error, setError] = useState("");
  const load = async () => {
    try {
      const [l, r] = await Promise.all([invites(app, chatId), joinRequests(app, chatId)]);
      setLinks(l);
      setRequests(r);
    } catch (e) {
      setError(describe(e));
    }
  };
  useEffect(() => {
    load();
    // a request made or resolved elsewhere: read the list again
    const frame = (event) => {
      if (event.detail?.chat_id === chatId) load();
    };
    addEventListener("sup:join-request", frame);
    return () => removeEventListener("sup:join-request", frame);
  }, [chatId, members]);

  const create = async (event) => {
    event.preventDefault();
    const element = event.currentTarget; // gone from the event once it has been handled
    const form = new FormData(element);
    const fields = { name: String(form.get("name") ?? "").trim(), requires_approval: form.get("approval") === "on" };
    if (form.get("expires")) fields.expires_in = Number(form.get("expires"));
    if (form.get("max_uses")) fields.max_uses = Number(form.get("max_uses"));
    setError("");
    try {
      const invite = await createInvite(app, chatId, fields);
      setMade(invite);
      element.reset();
      load();
    } catch (e) {
      setError(describe(e));
    }
  };
  const act = async (promise) => {
    setError("");
    try {
      await promise;
      await load();
    } catch (e) {
      setError(describe(e));
    }
  };
  const copy = async (text) => {
    try {
      await navigator.clipboard.writeText(text);
      app.toast("Link copied.");
    } catch {
      app.toast("Select the link and copy it.");
    }
  };

  return html`<section class="card" aria-labelledby="invites-title">
    <h2 id="invites-title">Invite links</h2>
    ${error ? html`<p class="form-error" role="alert">${error}</p>` : null}
    <${Visibility} chat=${chat} onError=${setError} />
    ${
      made
        ? html`<div class="share-link" role="status">
          <label for="new-invite-link">New invite link</label>
          <input id="new-invite-link" readonly value=${inviteLink(made.code)} onFocus=${(e) => e.currentTarget.select()} />
          <button type="button" class="small" onClick=${() => copy(inviteLink(made.code))}>Copy link</button>
        </div>`
        : null
    }
    <form class="invite-form" onSubmit=${create}>
      <div class="field">
        <label for="inv-name">Link name</label>
        <input id="inv-name" name="name" maxlength="64" autocomplete="off" placeholder="Optional: who it is for" />
      </div>
      <div class="field">
        <label for="inv-expires">Expires after</label>
        <select id="inv-expires" name="expires">${LIFETIMES.map(([v, l]) => html`<option value=${v}>${l}</option>`)}</select>
      </div>
      <div class="field">
        <label for="inv-uses">Maximum uses</label>
        <input id="inv-uses" name="max_uses" type="number" min="1" max="100000" inputmode="numeric" placeholder="No limit" />
      </div>
      <label class="check"><input type="checkbox" name="approval" /> Admins approve who joins</label>
      <button type="submit" class="primary">Create invite link</button>
    </form>
    ${
      links === null
        ? html`<p>Loading…</p>`
        : links.length === 0
          ? html`<p class="muted">No invite links yet.</p>`
          : html`<ul class="device-list invite-list" aria-label="Invite links">
            ${links.map(
              (l) => html`<li key=${l.id} class=${l.usable ? "" : "unusable"}>
                <span>
                  <strong>${l.name || "Invite link"}</strong>
                  <span class="muted"> · ${l.uses}${l.max_uses ? ` of ${l.max_uses}` : ""} used${
                    l.requires_approval ? " · approval" : ""
                  }${l.expires_at ? ` · until ${formatTime(l.expires_at)}` : ""}${l.usable ? "" : " · no longer works"}</span>
                  <span class="mono invite-code">${inviteLink(l.code)}</span>
                </span>
                ${
                  l.usable
                    ? html`<span class="row-actions">
                      <button type="button" class="small" onClick=${() => copy(inviteLink(l.code))} aria-label=${`Copy ${l.name || "invite link"}`}>Copy</button>
                      <button type="button" class="small danger" onClick=${() => confirm("Revoke this link? It stops working at once.") && act(revokeInvite(app, chatId, l.id))}
                        aria-label=${`Revoke ${l.name || "invite link"}`}>Revoke</button>
                    </span>`
                    : null
                }
              </li>`,
            )}
          </ul>`
    }
    <h3 id="requests-title">Join requests</h3>
    ${
      requests === null
        ? null
        : requests.length === 0
          ? html`<p class="muted">No one is waiting.</p>`
          : html`<ul class="device-list" aria-labelledby="requests-title">
            ${requests.map(
              (r) => html`<li key=${r.user_id}>
                <span><strong>${r.display_name || r.username}</strong> <span class="muted">@${r.username} · ${formatTime(r.created_at)}</span></span>
                <span class="row-actions">
                  <button type="button" class="small primary" onClick=${() => act(approveRequest(app, chatId, r.user_id))} aria-label=${`Approve ${r.username}`}>Approve</button>
                  <button type="button" class="small danger" onClick=${() => act(declineRequest(app, chatId, r.user_id))} aria-label=${`Decline ${r.username}`}>Decline</button>
                </span>
              </li>`,
            )}
          </ul>`
    }
  </section>`;
}

/**
 * Public or private, for a chat the server can read (an end-to-end encrypted group cannot be public: anyone
 * could join and read along). A public chat is found by search and joined without a link.
 */
function Visibility({ chat, onError }) {
  if (!chat || chat.encrypted || chat.type === "direct") return null;
  const perms = chat.my_role?.permissions ?? [];
  if (chat.my_role?.kind !== "owner" && !perms.includes("edit_info")) return null;
  const change = async (event) => {
    const visibility = event.currentTarget.checked ? "public" : "private";
    onError("");
    try {
      await app.api.patch(`/chats/${encodeURIComponent(chat.id)}`, { visibility });
      await app.act("syncChats");
    } catch (e) {
      onError(describe(e));
    }
  };
  return html`<label class="check visibility">
    <input type="checkbox" checked=${chat.visibility === "public"} onChange=${change} />
    Public: anyone on this server can find it in search and join
  </label>`;
}
