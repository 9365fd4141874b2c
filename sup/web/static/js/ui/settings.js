// Settings: profile and avatar, notifications, devices (rename, sign out), two-factor authentication with a
// QR code, contacts and blocked people, who sees when you are online, close friends for stories (stories.js)
// and sticker packs (stickers.js), email (email.js), exporting my data and deleting the account (account.js)
// and, for administrators, the way to Administration (admin.js): those loaded when shown; and signing out.

import { encode } from "uqr";
import { html, useEffect, useState } from "./html.js";
import {
  actOnUsername,
  app,
  Avatar,
  describe,
  deviceLabel,
  Field,
  formatTime,
  lazy,
  shortId,
  useApp,
  useLoaded,
} from "./common.js";
import { onLink } from "./router.js";
import { PushToggle } from "./pushtoggle.js";

const StickerSettings = lazy(() => import("./stickers.js"), "StickerSettings");
const StorySettings = lazy(() => import("./stories.js"), "StorySettings");
const EmailSettings = lazy(() => import("./email.js"), "EmailSettings");
const ExportData = lazy(() => import("./account.js"), "ExportData");
const DeleteAccount = lazy(() => import("./account.js"), "DeleteAccount");
const AdminEntry = lazy(() => import("./admin.js"), "AdminEntry");

export function Settings({ part }) {
  const s = useApp();
  useEffect(() => {
    if (part) document.getElementById(`settings-${part}`)?.scrollIntoView();
  }, [part]);
  return html`<section class="page settings" aria-labelledby="settings-title">
    <header class="page-head">
      <a href="/" onClick=${onLink} class="back icon-button" aria-label="Back to chats">‹</a>
      <h1 id="settings-title">Settings</h1>
    </header>
    <${Profile} me=${s.me} />
    <${Notifications} />
    <${Devices} />
    <${TwoFactor} />
    <section class="card" id="settings-email" aria-labelledby="email-title">
      <h2 id="email-title">Email</h2>
      <${EmailSettings} />
    </section>
    <${People} />
    <${Presence} />
    <section class="card" id="settings-stories" aria-labelledby="stories-title">
      <h2 id="stories-title">Stories: close friends</h2>
      <${StorySettings} />
    </section>
    <section class="card" id="settings-stickers" aria-labelledby="stickers-title">
      <h2 id="stickers-title">Sticker packs</h2>
      <${StickerSettings} />
    </section>
    <section class="card" id="settings-data" aria-labelledby="data-title">
      <h2 id="data-title">Your data</h2>
      <${ExportData} />
    </section>
    <${AdminEntry} />
    <section class="card" aria-labelledby="settings-out">
      <h2 id="settings-out">Sign out</h2>
      <p>Signing out deletes this device’s keys and messages from this browser.</p>
      <button type="button" class="danger" onClick=${() => confirm("Sign out of this browser?") && app.logOut()}>Log out</button>
    </section>
    <section class="card" id="settings-delete" aria-labelledby="delete-title">
      <h2 id="delete-title">Delete account</h2>
      <${DeleteAccount} />
    </section>
  </section>`;
}

function Profile({ me }) {
  const [status, setStatus] = useState("");
  const [avatar, setAvatar] = useState(null);
  useEffect(() => {
    if (!me?.avatar_media_id) return;
    app.media.url({ media_id: me.avatar_media_id }, "small").then(
      ({ url }) => setAvatar(url),
      () => {},
    );
  }, [me?.avatar_media_id]);
  if (!me) return null;
  const save = async (event) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    try {
      const updated = await app.api.updateProfile({
        display_name: String(form.get("display_name")).trim(),
        bio: String(form.get("bio")),
      });
      await app._setMe(updated);
      setStatus("Saved.");
    } catch (error) {
      setStatus(describe(error));
    }
  };
  const upload = async (event) => {
    const file = event.currentTarget.files[0];
    if (!file) return;
    try {
      const media = await app.api.upload(file, { purpose: "avatar", filename: file.name });
      await app._setMe(await app.api.updateProfile({ avatar_media_id: media.id }));
      setStatus("Photo updated.");
    } catch (error) {
      setStatus(describe(error));
    }
  };
  return html`<section class="card" id="settings-profile" aria-labelledby="profile-title">
    <h2 id="profile-title">Profile</h2>
    <div class="profile-row">
      ${avatar ? html`<img class="avatar avatar-l" src=${avatar} alt="Your photo" />` : html`<${Avatar} id=${me.id} name=${me.display_name || me.username} size="l" />`}
      <div>
        <p class="profile-name">${me.display_name}</p>
        <p class="muted">@${me.username}</p>
        <label class="button small file-button" for="avatar-input">Change photo</label>
        <input id="avatar-input" type="file" accept="image/*" class="visually-hidden" onChange=${upload} />
      </div>
    </div>
    <form onSubmit=${save}>
      <${Field} label="Display name" id="pf-name" name="display_name" value=${me.display_name} maxlength="64" />
      <div class="field">
        <label for="pf-bio">About you</label>
        <textarea id="pf-bio" name="bio" maxlength="500" rows="2">${me.bio ?? ""}</textarea>
      </div>
      <button type="submit">Save profile</button>
      <span class="form-status" role="status">${status}</span>
    </form>
  </section>`;
}

function Notifications() {
  const [permission, setPermission] = useState(
    typeof Notification === "undefined" ? "unsupported" : Notification.permission,
  );
  return html`<section class="card" id="settings-notifications" aria-labelledby="notif-title">
    <h2 id="notif-title">Notifications</h2>
    ${
      permission === "granted"
        ? html`<p>Desktop notifications are on while SUP is open in a tab.</p>`
        : permission === "denied"
          ? html`<p>Notifications are blocked for this site in your browser’s settings.</p>`
          : permission === "unsupported"
            ? html`<p>This browser cannot show notifications.</p>`
            : html`<p>Get a notification for new messages while SUP is open in a tab.</p>
              <button type="button" onClick=${async () => setPermission(await app.enableNotifications())}>Enable notifications</button>`
    }
    <${PushToggle} />
  </section>`;
}

function Devices() {
  const s = useApp();
  const [error, setError] = useState("");
  const [devices, load] = useLoaded(() => app.api.devices().then((d) => d.devices), (e) => setError(describe(e)));
  const rename = async (d) => {
    const name = prompt("Name this device", d.name);
    if (!name) return;
    try {
      await app.api.renameDevice(d.id, name.slice(0, 64));
      load();
    } catch (e) {
      setError(describe(e));
    }
  };
  const revoke = async (d) => {
    if (!confirm(`Sign out “${d.name}”? It loses its keys and messages.`)) return;
    try {
      await app.api.revokeDevice(d.id);
      load();
    } catch (e) {
      setError(describe(e));
    }
  };
  const mine = s.notices.filter((n) => n.user_id === s.me?.id);
  return html`<section class="card" id="settings-devices" aria-labelledby="devices-title">
    <h2 id="devices-title">Devices</h2>
    <p>Every browser or app you log in with is a device with its own keys. Sign out any you do not recognise.</p>
    ${mine.map(
      (n) => html`<div class="banner banner-key" role="status" key=${n.id}>
        <p>A new device signed in to your account: <strong>${deviceLabel(n.device_name, n.device_id)}</strong>. If it was not you, sign it out below and change your password.</p>
        <button type="button" class="small" onClick=${() => app.act("dismissNotice", n.id)}>Dismiss</button>
      </div>`,
    )}
    ${error ? html`<p class="form-error" role="alert">${error}</p>` : null}
    ${
      devices === null
        ? html`<p>Loading…</p>`
        : html`<ul class="device-list">
          ${devices.map(
            (d) => html`<li key=${d.id}>
              <span><strong>${d.name}</strong>${d.current ? html` <span class="tag">this device</span>` : null}${mine.some((n) => n.device_id === d.id) ? html` <span class="tag tag-new">new</span>` : null}
                <span class="muted"> · id ${shortId(d.id)} · last seen ${formatTime(d.last_seen_at)}</span></span>
              <span class="row-actions">
                <button type="button" class="small" onClick=${() => rename(d)} aria-label=${`Rename ${d.name}`}>Rename</button>
                ${d.current ? null : html`<button type="button" class="small danger" onClick=${() => revoke(d)} aria-label=${`Sign out ${d.name}`}>Sign out</button>`}
              </span>
            </li>`,
          )}
        </ul>`
    }
  </section>`;
}

/** The otpauth:// URI as a QR code (SVG drawn here; no image leaves the browser). */
function QrCode({ text, label }) {
  const { data, size } = encode(text, { ecc: "M", border: 2 });
  let path = "";
  for (let y = 0; y < size; y++) for (let x = 0; x < size; x++) if (data[y][x]) path += `M${x},${y}h1v1h-1z`;
  return html`<svg class="qr" viewBox=${`0 0 ${size} ${size}`} role="img" aria-label=${label} shape-rendering="crispEdges">
    <rect width=${size} height=${size} class="qr-bg" /><path d=${path} class="qr-fg" />
  </svg>`;
}

function TwoFactor() {
  const [setup, setSetup] = useState(null);
  const [codes, setCodes] = useState(null);
  const [error, setError] = useState("");
  const [state, load] = useLoaded(() => app.api.twoFactor(), (e) => setError(describe(e)));
  const start = async (event) => {
    event.preventDefault();
    setError("");
    try {
      setSetup(await app.api.enable2fa(String(new FormData(event.currentTarget).get("password"))));
    } catch (e) {
      setError(describe(e));
    }
  };
  const verify = async (event) => {
    event.preventDefault();
    setError("");
    try {
      const answer = await app.api.verify2fa(String(new FormData(event.currentTarget).get("code")).replace(/\s/g, ""));
      setCodes(answer.recovery_codes);
      setSetup(null);
      load();
    } catch (e) {
      setError(describe(e));
    }
  };
  const disable = async (event) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    setError("");
    try {
      await app.api.disable2fa({
        password: String(form.get("password")),
        totp_code: String(form.get("code")).replace(/\s/g, ""),
      });
      load();
    } catch (e) {
      setError(describe(e));
    }
  };
  return html`<section class="card" id="settings-2fa" aria-labelledby="tfa-settings-title">
    <h2 id="tfa-settings-title">Two-factor authentication</h2>
    ${error ? html`<p class="form-error" role="alert">${error}</p>` : null}
    ${
      codes
        ? html`<div class="recovery">
          <p><strong>Save these recovery codes</strong> somewhere safe. Each one lets you log in once without your phone. They are shown only now.</p>
          <ul class="codes mono">${codes.map((c) => html`<li>${c}</li>`)}</ul>
          <button type="button" onClick=${() => setCodes(null)}>I saved them</button>
        </div>`
        : state === null
          ? html`<p>Loading…</p>`
          : state.enabled
            ? html`<p>On. ${state.recovery_codes_remaining} recovery codes left.</p>
              <form onSubmit=${disable} class="inline-form">
                <${Field} label="Password" id="tfa-off-password" name="password" type="password" autocomplete="current-password" required />
                <${Field} label="Authentication code" id="tfa-off-code" name="code" inputmode="numeric" autocomplete="one-time-code" required />
                <button type="submit" class="danger">Turn off</button>
              </form>`
            : setup
              ? html`<div class="tfa-setup">
                <${QrCode} text=${setup.provisioning_uri} label="QR code for your authenticator app" />
                <div>
                  <p>Scan this with an authenticator app, or type the key: <span class="mono secret">${setup.secret.match(/.{1,4}/g).join(" ")}</span></p>
                  <form onSubmit=${verify}>
                    <${Field} label="Authentication code" id="tfa-code" name="code" inputmode="numeric" autocomplete="one-time-code" required
                      hint="The 6-digit code the app shows now" />
                    <button type="submit" class="primary">Turn on</button>
                  </form>
                </div>
              </div>`
              : html`<p>Off. With it on, logging in also needs a code from an app on your phone.</p>
                <form onSubmit=${start} class="inline-form">
                  <${Field} label="Password" id="tfa-password" name="password" type="password" autocomplete="current-password" required />
                  <button type="submit">Set up</button>
                </form>`
    }
  </section>`;
}

function People() {
  const [contacts, setContacts] = useState(null);
  const [blocks, setBlocks] = useState(null);
  const [error, setError] = useState("");
  const load = async () => {
    try {
      setContacts((await app.api.contacts()).items);
      setBlocks((await app.api.blocks()).items);
    } catch (e) {
      setError(describe(e));
    }
  };
  useEffect(() => {
    load();
  }, []);
  const byName = async (event, action) => {
    event.preventDefault();
    setError("");
    const failed = await actOnUsername(event.currentTarget, action);
    if (failed) setError(failed);
    else load();
  };
  const list = (items, label, undo) =>
    items === null
      ? html`<p>Loading…</p>`
      : items.length === 0
        ? html`<p class="muted">None.</p>`
        : html`<ul class="device-list">
            ${items.map(
              (
                c,
              ) => html`<li key=${c.user.id}><span>${c.user.display_name} <span class="muted">@${c.user.username}</span></span>
                <button type="button" class="small" onClick=${async () => (await undo(c.user.id), load())} aria-label=${`${label} ${c.user.username}`}>${label}</button></li>`,
            )}
          </ul>`;
  return html`<section class="card" id="settings-people" aria-labelledby="people-title">
    <h2 id="people-title">Contacts and blocked people</h2>
    ${error ? html`<p class="form-error" role="alert">${error}</p>` : null}
    <h3>Contacts</h3>
    ${list(contacts, "Remove", (id) => app.api.removeContact(id))}
    <form class="inline-form" onSubmit=${(e) => byName(e, (id) => app.api.addContact(id))}>
      <${Field} label="Add a contact by username" id="pp-contact" name="username" required autocapitalize="none" autocomplete="off" />
      <button type="submit">Add</button>
    </form>
    <h3>Blocked</h3>
    ${list(blocks, "Unblock", (id) => app.api.unblock(id))}
    <form class="inline-form" onSubmit=${(e) => byName(e, (id) => app.api.block(id))}>
      <${Field} label="Block someone by username" id="pp-block" name="username" required autocapitalize="none" autocomplete="off" />
      <button type="submit" class="danger">Block</button>
    </form>
  </section>`;
}

function Presence() {
  const [status, setStatus] = useState("");
  const change = async (event) => {
    try {
      await app.api.setPresenceVisibility(event.currentTarget.value);
      setStatus("Saved.");
    } catch (e) {
      setStatus(describe(e));
    }
  };
  return html`<section class="card" id="settings-presence" aria-labelledby="presence-title">
    <h2 id="presence-title">Online status</h2>
    <div class="field">
      <label for="presence-visibility">Who sees when you are online</label>
      <select id="presence-visibility" onChange=${change}>
        <option value="everyone">Everyone in my chats</option>
        <option value="contacts">My contacts</option>
        <option value="nobody">Nobody</option>
      </select>
      <span class="form-status" role="status">${status}</span>
    </div>
  </section>`;
}
