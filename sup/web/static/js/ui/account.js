// Settings › Your data and Delete account: a zip of my data (built by the server in the background, then
// downloaded), and deleting the account for good, behind a clear warning and the password (and a 2FA code
// when 2FA is on).

import { html, useState } from "./html.js";
import { app, describe, Field, formatTime, useLoaded } from "./common.js";
import { deleteAccount, download, exports, startExport, whenBuilt } from "../client/account.js";

const CODES = {
  invalid_credentials: "Wrong password.",
  totp_required: "Two-factor authentication is on: type a code from your app, or a recovery code.",
  invalid_totp: "That code is wrong or was already used.",
};

export function ExportData() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const [note, setNote] = useState("");
  const [items, load] = useLoaded(() => exports(app), (e) => setError(describe(e)));
  const start = async () => {
    setBusy(true);
    setError("");
    setNote("Preparing your data…");
    try {
      const made = await startExport(app);
      const built = await whenBuilt(app, made.id);
      await load();
      if (built.state === "ready") {
        await download(app, built.id);
        setNote("Your data is ready and was downloaded.");
      } else setNote(built.failure ? `It could not be built: ${built.failure}` : "It is still being built; look again soon.");
    } catch (e) {
      setNote("");
      setError(
        e.status === 429
          ? "One export a day: you can ask for a new one tomorrow. Download the last one below."
          : describe(e),
      );
    } finally {
      setBusy(false);
    }
  };
  const get = async (item) => {
    setError("");
    try {
      await download(app, item.id);
    } catch (e) {
      setError(describe(e));
    }
  };
  return html`<p>A zip of your profile, contacts, chats, the messages the server can read and the files you uploaded.
      Messages of end-to-end encrypted chats are not in it: the server cannot read them.</p>
    ${error ? html`<p class="form-error" role="alert">${error}</p>` : null}
    ${note ? html`<p class="form-status" role="status">${note}</p>` : null}
    <button type="button" onClick=${start} disabled=${busy}>${busy ? "Preparing…" : "Export my data"}</button>
    ${
      items?.length
        ? html`<ul class="device-list export-list" aria-label="Exports">
          ${items.map(
            (x) => html`<li key=${x.id}>
              <span>Export of ${formatTime(x.created_at)} <span class="muted">· ${x.state}${x.size ? ` · ${Math.ceil(x.size / 1024)} KB` : ""}${
                x.expires_at ? ` · kept until ${formatTime(x.expires_at)}` : ""
              }</span></span>
              ${x.state === "ready" ? html`<button type="button" class="small" onClick=${() => get(x)} aria-label=${`Download export of ${formatTime(x.created_at)}`}>Download</button>` : null}
            </li>`,
          )}
        </ul>`
        : null
    }`;
}

export function DeleteAccount({ twoFactor = false }) {
  const [open, setOpen] = useState(false);
  const [needCode, setNeedCode] = useState(twoFactor);
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const submit = async (event) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    if (String(form.get("confirm")).trim() !== "DELETE") return setError("Type DELETE in capitals to confirm.");
    setBusy(true);
    setError("");
    try {
      const code = String(form.get("code") ?? "").trim();
      await deleteAccount(app, {
        password: String(form.get("password")),
        totp: /^[0-9 ]{6,7}$/.test(code) ? code : "",
        recovery: code && !/^[0-9 ]{6,7}$/.test(code) ? code : "",
      });
      await app.logOut(); // the account is gone: forget this browser's keys and messages too
      app.toast("Your account was deleted.");
    } catch (e) {
      setBusy(false);
      if (e.code === "totp_required") setNeedCode(true);
      setError(CODES[e.code] ?? describe(e));
    }
  };
  if (!open) {
    return html`<p>Deleting your account cannot be undone.</p>
      <button type="button" class="danger" onClick=${() => setOpen(true)}>Delete my account…</button>`;
  }
  return html`<div class="danger-zone" role="group" aria-labelledby="delete-warning">
    <p id="delete-warning"><strong>This deletes your account for good.</strong> Every device is logged out, you leave
      every chat, your contacts, stories, sticker packs and files are deleted, and every message you sent becomes
      “deleted” for everyone. Your username becomes free for someone else. Export your data first if you want a copy.</p>
    <form onSubmit=${submit}>
      <${Field} label="Password" id="del-password" name="password" type="password" autocomplete="current-password" required />
      ${
        needCode
          ? html`<${Field} label="Authentication or recovery code" id="del-code" name="code" autocomplete="one-time-code" required />`
          : null
      }
      <${Field} label="Type DELETE to confirm" id="del-confirm" name="confirm" autocomplete="off" autocapitalize="characters" required />
      ${error ? html`<p class="form-error" role="alert">${error}</p>` : null}
      <div class="row-actions">
        <button type="submit" class="danger" disabled=${busy}>Delete my account forever</button>
        <button type="button" onClick=${() => (setOpen(false), setError(""))}>Cancel</button>
      </div>
    </form>
  </div>`;
}
