// Administration (/admin[/invites|/audit|/stats]), for the server's administrators: accounts (search,
// details, deactivate and reactivate, reset 2FA, administrator or not, log devices out, delete), registration
// invites (make, list, revoke), the audit log, and the server's figures. Everyone else is told there is
// nothing here, as the server tells them (its admin paths are 404 to them).

import { html, useEffect, useState } from "./html.js";
import { app, Avatar, describe, Field, formatTime, useApp, useLoaded } from "./common.js";
import * as admin from "../client/admin.js";
import { onLink } from "./router.js";

const TABS = [
  ["", "Users"],
  ["invites", "Invites"],
  ["audit", "Audit log"],
  ["stats", "Server"],
];

export function AdminScreen({ part = "" }) {
  const [allowed, setAllowed] = useState(null);
  useEffect(() => {
    admin.amAdmin(app).then(setAllowed, () => setAllowed(false));
  }, []);
  return html`<section class="page admin" aria-labelledby="admin-title">
    <header class="page-head">
      <a href="/settings" onClick=${onLink} class="back icon-button" aria-label="Back to settings">‹</a>
      <h1 id="admin-title">Administration</h1>
    </header>
    ${
      allowed === null
        ? html`<p class="muted" aria-busy="true">Loading…</p>`
        : !allowed
          ? html`<p class="card">There is nothing here: only the server’s administrators see this page.</p>`
          : html`<nav class="segmented" aria-label="Administration">
              ${TABS.map(
                ([p, label]) => html`<a href=${p ? `/admin/${p}` : "/admin"} onClick=${onLink} aria-current=${part === p ? "page" : undefined}>${label}</a>`,
              )}
            </nav>
            ${part === "invites" ? html`<${Invites} />` : part === "audit" ? html`<${Audit} />` : part === "stats" ? html`<${Stats} />` : html`<${Users} />`}`
    }
  </section>`;
}

function Users() {
  const [q, setQ] = useState("");
  const [status, setStatus] = useState("");
  const [open, setOpen] = useState(null);
  const [error, setError] = useState("");
  const [page, load, setPage] = usePages(
    (after) => admin.users(app, { q: q.trim() || undefined, status: status || undefined, after }),
    setError,
  );
  useEffect(() => {
    const t = setTimeout(() => load(), 250);
    return () => clearTimeout(t);
  }, [q, status]);
  const changed = (u) => setPage((old) => ({ ...old, items: old.items.map((x) => (x.id === u.id ? u : x)) }));
  return html`<div class="card">
    <h2>Users</h2>
    <div class="inline-form">
      <${Field} label="Find a user" id="ad-q" type="search" value=${q} maxlength="64" autocomplete="off" onInput=${(e) => setQ(e.currentTarget.value)} />
      <div class="field">
        <label for="ad-status">Status</label>
        <select id="ad-status" value=${status} onChange=${(e) => setStatus(e.currentTarget.value)}>
          <option value="">Any</option><option value="active">Active</option><option value="deactivated">Deactivated</option><option value="deleted">Deleted</option>
        </select>
      </div>
    </div>
    <${Paged} page=${page} error=${error} empty="No user matches." more=${load} moreLabel="More users"
      list=${(items) => html`<ul class="result-list admin-users" aria-label="Users">
        ${items.map(
          (u) => html`<li key=${u.id}>
            <${Avatar} id=${u.id} name=${u.display_name || u.username} />
            <span class="member-name"><strong>${u.display_name || u.username}</strong> <span class="muted">@${u.username}</span>
              ${u.is_admin ? html` <span class="tag">admin</span>` : null}
              ${u.status !== "active" ? html` <span class="tag tag-warn">${u.status}</span>` : null}
              ${u.two_factor ? html` <span class="tag">2FA</span>` : null}</span>
            <button type="button" class="small" aria-expanded=${open === u.id ? "true" : "false"}
              onClick=${() => setOpen(open === u.id ? null : u.id)} aria-label=${`Manage ${u.username}`}>Manage</button>
            ${open === u.id ? html`<${UserDetail} id=${u.id} onChange=${changed} />` : null}
          </li>`,
        )}
      </ul>`} />
  </div>`;
}

function UserDetail({ id, onChange }) {
  const s = useApp();
  const [error, setError] = useState("");
  const [note, setNote] = useState("");
  const [detail, load] = useLoaded(() => admin.user(app, id), (e) => setError(describe(e)), [id]);
  if (!detail) return html`<div class="admin-detail">${error ? html`<p class="form-error" role="alert">${error}</p>` : html`<p>Loading…</p>`}</div>`;
  const u = detail.user;
  const act = async (run, done) => {
    setError("");
    setNote("");
    try {
      const answer = await run();
      if (answer?.id === u.id) onChange(answer);
      await load();
      setNote(done);
    } catch (e) {
      setError(e.code === "totp_not_enabled" ? "This account does not use 2FA." : describe(e));
    }
  };
  const self = u.id === s.me?.id;
  const gone = u.status === "deleted";
  return html`<div class="admin-detail" role="group" aria-label=${`Account ${u.username}`}>
    <p class="muted">${[
      `Joined ${formatTime(u.created_at)}`,
      `${detail.chats} chats`,
      `${detail.storage.files} files, ${formatBytes(detail.storage.bytes)}${
        detail.storage.quota_bytes ? ` of ${formatBytes(detail.storage.quota_bytes)}` : ""
      }`,
      u.last_seen_at ? `last seen ${formatTime(u.last_seen_at)}` : "",
    ]
      .filter(Boolean)
      .join(" · ")}</p>
    ${error ? html`<p class="form-error" role="alert">${error}</p>` : null}
    ${note ? html`<p class="form-status" role="status">${note}</p>` : null}
    ${
      gone
        ? html`<p>This account was deleted ${formatTime(u.deleted_at)}.</p>`
        : html`<div class="row-actions wrap">
          ${
            self
              ? html`<p class="muted">This is you: another administrator can change your account.</p>`
              : u.status === "active"
                ? html`<button type="button" class="small" onClick=${() => confirm(`Deactivate ${u.username}? Every device of it is logged out.`) && act(() => admin.deactivate(app, u.id), "Deactivated.")}>Deactivate</button>`
                : html`<button type="button" class="small" onClick=${() => act(() => admin.reactivate(app, u.id), "Reactivated.")}>Reactivate</button>`
          }
          ${u.two_factor ? html`<button type="button" class="small" onClick=${() => confirm(`Turn 2FA off for ${u.username}?`) && act(() => admin.resetTwoFactor(app, u.id), "2FA is off for this account.")}>Reset 2FA</button>` : null}
          ${self ? null : html`<button type="button" class="small" onClick=${() => act(() => admin.setAdmin(app, u.id, !u.is_admin), u.is_admin ? "No longer an administrator." : "Now an administrator.")}>${u.is_admin ? "Remove admin" : "Make admin"}</button>`}
          ${detail.devices.length ? html`<button type="button" class="small" onClick=${() => act(() => admin.revokeDevices(app, u.id), "Every device was logged out.")}>Log out all devices</button>` : null}
          ${self ? null : html`<button type="button" class="small danger" onClick=${() => prompt(`Type ${u.username} to delete this account for good.`) === u.username && act(() => admin.removeUser(app, u.id), "The account was deleted.")}>Delete account</button>`}
        </div>
        <h3>Devices</h3>
        ${
          detail.devices.length
            ? html`<ul class="device-list">${detail.devices.map(
                (d) => html`<li key=${d.id}><span>${d.name} <span class="muted">· last seen ${formatTime(d.last_seen_at)}</span></span>
                  <button type="button" class="small danger" onClick=${() => act(() => admin.revokeDevice(app, u.id, d.id), "Device logged out.")} aria-label=${`Log out ${d.name}`}>Log out</button></li>`,
              )}</ul>`
            : html`<p class="muted">No device logged in.</p>`
        }`
    }
  </div>`;
}

function Invites() {
  const [made, setMade] = useState(null);
  const [error, setError] = useState("");
  const [items, load] = useLoaded(() => admin.invites(app).then((p) => p.items), (e) => setError(describe(e)));
  const create = async (event) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const days = String(form.get("days"));
    const fields = { max_uses: Number(form.get("uses") || 1) };
    fields.expires_in_seconds = days === "never" ? null : Number(days) * 86400;
    setError("");
    try {
      setMade(await admin.createInvite(app, fields));
      load();
    } catch (e) {
      setError(describe(e));
    }
  };
  const revoke = async (inv) => {
    if (!confirm("Revoke this invite? Its code stops working.")) return;
    try {
      await admin.revokeInvite(app, inv.id);
      load();
    } catch (e) {
      setError(describe(e));
    }
  };
  const registration = app.get().registration;
  return html`<div class="card">
    <h2>Registration invites</h2>
    ${registration !== "invite" ? html`<p class="muted">Sign-up on this server is ${registration}: invite codes matter only when it is “invite”.</p>` : null}
    <form class="inline-form" onSubmit=${create}>
      <${Field} label="Uses" id="ai-uses" name="uses" type="number" min="1" max="10000" placeholder="1" inputmode="numeric" />
      <div class="field">
        <label for="ai-days">Valid for</label>
        <select id="ai-days" name="days"><option value="1">1 day</option><option value="7" selected>7 days</option><option value="30">30 days</option><option value="never">Until used up</option></select>
      </div>
      <button type="submit" class="primary">Create invite</button>
    </form>
    ${error ? html`<p class="form-error" role="alert">${error}</p>` : null}
    ${
      made
        ? html`<div class="share-link" role="status">
          <label for="ai-code">New invite code (shown only now)</label>
          <input id="ai-code" readonly class="mono" value=${made.code} onFocus=${(e) => e.currentTarget.select()} />
          <p class="field-hint">Sign-up link: <span class="mono">${location.origin}/register#invite=${made.code}</span></p>
        </div>`
        : null
    }
    ${
      items === null
        ? html`<p>Loading…</p>`
        : items.length === 0
          ? html`<p class="muted">No invites.</p>`
          : html`<ul class="device-list" aria-label="Invites">${items.map(
              (inv) => html`<li key=${inv.id}>
                <span><span class="mono">${inv.id.slice(0, 8)}</span> <span class="muted">${[
                  `${inv.uses} of ${inv.max_uses} used`,
                  inv.state.replace("_", " "),
                  `by ${inv.created_by_username ?? "sup admin"} ${formatTime(inv.created_at)}`,
                  inv.expires_at ? `until ${formatTime(inv.expires_at)}` : "no expiry",
                ].join(" · ")}</span></span>
                <button type="button" class="small danger" onClick=${() => revoke(inv)} aria-label=${`Revoke invite ${inv.id.slice(0, 8)}`}>Revoke</button>
              </li>`,
            )}</ul>`
    }
  </div>`;
}

function Audit() {
  const [action, setAction] = useState("");
  const [error, setError] = useState("");
  const [page, load] = usePages((before) => admin.audit(app, { before, action: action || undefined }), setError);
  useEffect(() => {
    load();
  }, [action]);
  return html`<div class="card">
    <h2>Audit log</h2>
    <div class="field">
      <label for="au-action">Action</label>
      <select id="au-action" value=${action} onChange=${(e) => setAction(e.currentTarget.value)}>
        <option value="">All</option>
        ${[
          "user.deactivated",
          "user.reactivated",
          "user.deleted",
          "user.2fa_reset",
          "user.admin_granted",
          "user.admin_revoked",
          "user.devices_revoked",
          "user.device_revoked",
          "invite.created",
          "invite.revoked",
        ].map((a) => html`<option value=${a}>${a}</option>`)}
      </select>
    </div>
    <${Paged} page=${page} error=${error} empty="Nothing yet." more=${load} moreLabel="Older entries"
      list=${(items) => html`<table class="audit">
        <caption class="visually-hidden">Audit log, newest first</caption>
        <thead><tr><th scope="col">When</th><th scope="col">Who</th><th scope="col">What</th><th scope="col">Details</th></tr></thead>
        <tbody>${items.map(
          (e) => html`<tr key=${e.id}>
            <td>${new Date(e.created_at).toLocaleString()}</td>
            <td>${e.actor_username ?? (e.actor_id ? e.actor_id.slice(0, 8) : "sup admin")}</td>
            <td><code>${e.action}</code></td>
            <td class="audit-details">${Object.entries(e.details ?? {})
              .map(([k, v]) => `${k}: ${detailValue(k, v)}`)
              .join(", ")}</td>
          </tr>`,
        )}</tbody>
      </table>`} />
  </div>`;
}

/**
 * A list the server gives a page at a time (`fetch(cursor)`): gives the pages so far, `more(cursor)` to add
 * the next one (`more()` starts over), and the setter, to change an item in place. A failure goes to `fail`.
 */
function usePages(fetch, fail) {
  const [page, setPage] = useState(null);
  const more = async (cursor) => {
    try {
      const found = await fetch(cursor);
      setPage((old) => (cursor && old ? { items: [...old.items, ...found.items], next_cursor: found.next_cursor } : found));
    } catch (e) {
      fail(describe(e));
    }
  };
  return [page, more, setPage];
}

/** The pages so far as `list` draws them, then a button for the next page; or "Loading…", or `empty`. */
function Paged({ page, error, empty, list, more, moreLabel }) {
  return html`${error ? html`<p class="form-error" role="alert">${error}</p>` : null}
    ${
      page === null
        ? html`<p>Loading…</p>`
        : page.items.length === 0
          ? html`<p class="muted">${empty}</p>`
          : html`${list(page.items)}
          ${page.next_cursor ? html`<button type="button" onClick=${() => more(page.next_cursor)}>${moreLabel}</button>` : null}`
    }`;
}

/** A value of an audit entry's details: times as dates, lists by their length. */
function detailValue(key, value) {
  if (Array.isArray(value)) return value.length;
  if (key.endsWith("_at") && typeof value === "number") return new Date(value).toLocaleString();
  return value;
}

function formatBytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KB", "MB", "GB", "TB"];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) (v /= 1024), i++;
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

function Stats() {
  const [stats, setStats] = useState(null);
  const [error, setError] = useState("");
  useEffect(() => {
    admin.stats(app).then(setStats, (e) => setError(describe(e)));
  }, []);
  if (error) return html`<p class="form-error" role="alert">${error}</p>`;
  if (!stats) return html`<p>Loading…</p>`;
  const figure = (label, value) => html`<div class="figure"><dt>${label}</dt><dd>${value}</dd></div>`;
  return html`<div class="card">
    <h2>Server</h2>
    <dl class="figures">
      ${figure("Users", stats.users.total)}
      ${figure("Active", stats.users.active)}
      ${figure("Deactivated", stats.users.deactivated)}
      ${figure("Deleted", stats.users.deleted)}
      ${figure("Administrators", stats.users.admins)}
      ${figure("Devices logged in", stats.devices)}
      ${figure("Direct chats", stats.chats.direct ?? 0)}
      ${figure("Groups", stats.chats.group ?? 0)}
      ${figure("Channels", stats.chats.channel ?? 0)}
      ${figure("Messages", stats.messages.total)}
      ${figure("Files", stats.storage.files)}
      ${figure("Storage", formatBytes(stats.storage.stored_bytes))}
      ${figure("Jobs queued", stats.jobs.queued ?? 0)}
      ${figure("Jobs failed", stats.jobs.failed ?? 0)}
    </dl>
  </div>`;
}

/** Settings › Administration: a way in, shown to administrators only. */
export function AdminEntry() {
  const [allowed, setAllowed] = useState(false);
  useEffect(() => {
    admin.amAdmin(app).then(setAllowed, () => {});
  }, []);
  if (!allowed) return null;
  return html`<section class="card" id="settings-admin" aria-labelledby="settings-admin-title">
    <h2 id="settings-admin-title">Administration</h2>
    <p>You administer this server: its users, invites, audit log and figures.</p>
    <a class="button" href="/admin" onClick=${onLink}>Open administration</a>
  </section>`;
}
