// My account as a whole (docs/api.md "Email and password reset", "Deleting my account, exporting my data"):
// a verified email address, password reset by email (before logging in: no token), a zip of my data, and
// deleting the account. Whether this server sends email at all is in the page (<meta name="sup-email">), so
// the log-in screen can leave "Forgot password?" out when it cannot work.

import { Api } from "../api/http.js";

/** Whether the server sends email (SMTP set up): said by the page, as the server built it. */
export function emailAvailable() {
  return document.querySelector('meta[name="sup-email"]')?.content === "on";
}

/** The code in a mailed link's fragment (…/verify-email#token=<code>), or "". */
export function tokenInFragment() {
  return new URLSearchParams(location.hash.replace(/^#/, "")).get("token") ?? "";
}

export const emailStatus = (app) => app.api.get("/auth/email");
export const setEmail = (app, email, password) => app.api.put("/auth/email", { email, password });
export const verifyEmail = (app, token) => app.api.post("/auth/verify", { token: token.trim() });
export const removeEmail = (app, password) => app.api.post("/auth/email/remove", { password });

/** Ask for a reset code (an address or a username); the answer never says whether the account exists. */
export function requestReset(login) {
  return new Api().post("/auth/password-reset", { login }, { auth: false });
}

export function confirmReset(token, newPassword) {
  return new Api().post("/auth/password-reset/confirm", { token: token.trim(), new_password: newPassword }, { auth: false });
}

// ---- exporting my data ---------------------------------------------------------------------------------

export async function exports(app) {
  return (await app.api.get("/account/exports")).items;
}

export const startExport = (app) => app.api.post("/account/exports");
export const exportState = (app, id) => app.api.get(`/account/exports/${encodeURIComponent(id)}`);

/** Wait until an export is built (or failed), asking every `pause` ms. */
export async function whenBuilt(app, id, { pause = 1000, within = 10 * 60_000 } = {}) {
  const deadline = Date.now() + within;
  for (;;) {
    const found = await exportState(app, id);
    if (found.state !== "pending" || Date.now() > deadline) return found;
    await new Promise((resolve) => setTimeout(resolve, pause));
  }
}

/**
 * Download the zip: fetched with this device's token (a link cannot carry it), then saved through a
 * temporary object URL.
 */
export async function download(app, id) {
  const response = await app.api.request("GET", `/account/exports/${encodeURIComponent(id)}/download`, { raw: true });
  const blob = await response.blob();
  const url = URL.createObjectURL(blob);
  const a = document.createElement("a");
  a.href = url;
  a.download = `sup-export-${new Date().toISOString().slice(0, 10)}.zip`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  return blob.size;
}

/** Delete my account for good: the password again, and a 2FA or recovery code when 2FA is on. */
export function deleteAccount(app, { password, totp = "", recovery = "" }) {
  const body = { password };
  if (totp) body.totp_code = totp.replace(/\s/g, "");
  if (recovery) body.recovery_code = recovery.trim();
  return app.api.post("/account/delete", body);
}
