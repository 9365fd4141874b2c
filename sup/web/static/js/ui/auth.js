// Sign up and log in. Every login is a new device: its keys are made in this browser and published.

// Once signed in, app.js goes on to the screen asked for before (an invite link) or the chat list.

import { html, useEffect, useRef, useState } from "./html.js";
import { app, describe, Field, lazy, useApp } from "./common.js";
import { emailAvailable } from "../client/account.js";
import { onLink } from "./router.js";

const PasswordReset = lazy(() => import("./email.js"), "PasswordReset");

export function AuthScreen({ mode }) {
  const s = useApp();
  return html`<main class="auth" id="main">
    <div class="auth-card">
      <h1 class="brand"><span class="brand-mark" aria-hidden="true">S</span> SUP</h1>
      <p class="auth-lede">Private messages for your family or team, on your own server.</p>
      ${
        mode === "signup"
          ? html`<${SignUp} registration=${s.registration} />`
          : mode === "reset"
            ? html`<${PasswordReset} />`
            : html`<${LogIn} />`
      }
    </div>
  </main>`;
}

function SignUp({ registration }) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const mailedInvite = new URLSearchParams(location.hash.replace(/^#/, "")).get("invite") ?? "";
  const [needInvite, setNeedInvite] = useState(registration === "invite" || Boolean(mailedInvite));
  const inviteRef = useRef(null);
  const first = useRef(null);
  useEffect(() => first.current?.focus(), []);
  if (registration === "closed") {
    return html`<div>
      <h2>Sign up</h2>
      <p class="notice">This server does not accept new accounts. Ask its administrator for one.</p>
      <p><a href="/login" onClick=${onLink}>Log in</a></p>
    </div>`;
  }
  const submit = async (event) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    setBusy(true);
    setError("");
    try {
      await app.signUp({
        username: String(form.get("username")).trim(),
        password: String(form.get("password")),
        displayName: String(form.get("display_name") ?? "").trim(),
        inviteCode: String(form.get("invite_code") ?? "").trim(),
      });
    } catch (err) {
      setBusy(false);
      setError(describe(err));
      if (err.code === "invalid_invite") {
        setNeedInvite(true);
        setTimeout(() => inviteRef.current?.focus(), 0);
      }
    }
  };
  return html`<form onSubmit=${submit} aria-labelledby="signup-title" novalidate=${false}>
    <h2 id="signup-title">Create an account</h2>
    <${Field} label="Username" id="su-username" name="username" autocomplete="username" required minlength="3"
      maxlength="32" pattern="[A-Za-z0-9_.]+" inputRef=${first} hint="3 to 32 letters, digits, _ or ." autocapitalize="none" spellcheck="false" />
    <${Field} label="Display name" id="su-display" name="display_name" autocomplete="name" maxlength="64" hint="Optional: how others see you" />
    <${Field} label="Password" id="su-password" name="password" type="password" autocomplete="new-password" required minlength="8" hint="At least 8 characters" />
    ${
      needInvite
        ? html`<div class="field">
          <label for="su-invite">Invite code</label>
          <input id="su-invite" name="invite_code" required autocomplete="off" ref=${inviteRef} defaultValue=${mailedInvite} aria-describedby="su-invite-note" />
          <p id="su-invite-note" class="field-hint">This server is invite-only: ask a member for a code.</p>
        </div>`
        : null
    }
    ${error ? html`<p class="form-error" role="alert">${error}</p>` : null}
    <button class="primary wide" type="submit" disabled=${busy}>${busy ? "Creating keys…" : "Sign up"}</button>
    <p class="auth-switch">Already have an account? <a href="/login" onClick=${onLink}>Log in</a></p>
  </form>`;
}

function LogIn() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const [second, setSecond] = useState(null); // null | "totp" | "recovery"
  const [creds, setCreds] = useState(null);
  const first = useRef(null);
  const codeRef = useRef(null);
  useEffect(() => first.current?.focus(), []);
  useEffect(() => codeRef.current?.focus(), [second]);
  const submit = async (event) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const fields = second
      ? { ...creds }
      : { username: String(form.get("username")).trim(), password: String(form.get("password")) };
    if (second === "totp") fields.totp = String(form.get("totp")).replace(/\s/g, "");
    if (second === "recovery") fields.recovery = String(form.get("recovery")).trim();
    setBusy(true);
    setError("");
    try {
      await app.logIn(fields);
    } catch (err) {
      setBusy(false);
      if (err.code === "totp_required") {
        setCreds(fields);
        setSecond("totp");
        return;
      }
      setError(describe(err));
    }
  };
  if (second) {
    return html`<form onSubmit=${submit} aria-labelledby="tfa-title">
      <h2 id="tfa-title">Two-factor authentication</h2>
      ${
        second === "totp"
          ? html`<${Field} key="totp" label="Authentication code" id="li-totp" name="totp" inputmode="numeric" autocomplete="one-time-code"
            pattern="[0-9 ]{6,7}" required inputRef=${codeRef} hint="The 6-digit code from your authenticator app" />`
          : html`<${Field} key="recovery" label="Recovery code" id="li-recovery" name="recovery" autocomplete="off" required inputRef=${codeRef}
            hint="One of the recovery codes you saved; each works once" />`
      }
      ${error ? html`<p class="form-error" role="alert">${error}</p>` : null}
      <button class="primary wide" type="submit" disabled=${busy}>${busy ? "Checking…" : "Log in"}</button>
      <p class="auth-switch">
        <button type="button" class="link" onClick=${() => setSecond(second === "totp" ? "recovery" : "totp")}>
          ${second === "totp" ? "Use a recovery code instead" : "Use an authentication code instead"}
        </button>
      </p>
    </form>`;
  }
  return html`<form onSubmit=${submit} aria-labelledby="login-title">
    <h2 id="login-title">Log in</h2>
    <${Field} label="Username" id="li-username" name="username" autocomplete="username" required inputRef=${first} autocapitalize="none" spellcheck="false" />
    <${Field} label="Password" id="li-password" name="password" type="password" autocomplete="current-password" required />
    ${error ? html`<p class="form-error" role="alert">${error}</p>` : null}
    <button class="primary wide" type="submit" disabled=${busy}>${busy ? "Logging in…" : "Log in"}</button>
    ${emailAvailable() ? html`<p class="auth-switch"><a href="/reset-password" onClick=${onLink}>Forgot password?</a></p>` : null}
    <p class="auth-switch">New here? <a href="/signup" onClick=${onLink}>Create an account</a></p>
  </form>`;
}
