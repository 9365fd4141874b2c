// Email: the address of my account in Settings (set it with my password, verify it with the mailed code or
// link), the page a mailed verification link opens (/verify-email#token=...), and the password reset a
// mailed link opens (/reset-password#token=...), which also asks for a code when opened from "Forgot
// password?". Without SMTP on the server these say so, and offer no buttons that could not work.

import { html, useEffect, useRef, useState } from "./html.js";
import { app, describe, Field, formatTime, useApp, useLoaded } from "./common.js";
import {
  confirmReset,
  emailAvailable,
  emailStatus,
  removeEmail,
  requestReset,
  setEmail,
  tokenInFragment,
  verifyEmail,
} from "../client/account.js";
import { onLink } from "./router.js";

const CODES = {
  invalid_email_token: "That code is wrong, expired or was already used.",
  email_taken: "Another account has verified this address already.",
  not_configured: "This server does not send email.",
  invalid_credentials: "Wrong password.",
};
const say = (e) => CODES[e?.code] ?? describe(e);

/** Settings › Email. */
export function EmailSettings() {
  const [error, setError] = useState("");
  const [note, setNote] = useState("");
  const [status, load, setStatus] = useLoaded(() => emailStatus(app), (e) => setError(say(e)));
  if (error && !status) return html`<p class="form-error" role="alert">${error}</p>`;
  if (!status) return html`<p>Loading…</p>`;
  if (!status.available) {
    return html`<p class="muted">This server does not send email, so an address cannot be added here and a forgotten
      password cannot be reset by email. Its administrator can set up SMTP.</p>`;
  }
  const submit = (action, done) => async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    setError("");
    setNote("");
    try {
      setStatus((await action(new FormData(form))) ?? (await emailStatus(app)));
      form.reset();
      setNote(done);
    } catch (e) {
      setError(say(e));
    }
  };
  return html`
    ${
      status.address
        ? html`<p>Your address: <strong>${status.address}</strong> <span class="tag">verified ${formatTime(status.verified_at)}</span></p>
          <p class="muted">A forgotten password can be reset through it.</p>`
        : html`<p>No verified address. With one, a forgotten password can be reset by email.</p>`
    }
    ${error ? html`<p class="form-error" role="alert">${error}</p>` : null}
    ${note ? html`<p class="form-status" role="status">${note}</p>` : null}
    ${
      status.pending
        ? html`<form class="inline-form" onSubmit=${submit((f) => verifyEmail(app, String(f.get("token"))), "Your address is verified.")}>
          <p class="wide-line">A code was mailed to <strong>${status.pending}</strong>: type it here, or open the link in the mail.</p>
          <${Field} label="Code from the email" id="em-token" name="token" autocomplete="one-time-code" autocapitalize="none" required />
          <button type="submit" class="primary">Verify</button>
        </form>`
        : null
    }
    <form class="inline-form" onSubmit=${submit(
      (f) => setEmail(app, String(f.get("email")).trim(), String(f.get("password"))),
      "A code is on its way. Check your mail.",
    )}>
      <${Field} label=${status.address ? "New email address" : "Email address"} id="em-address" name="email" type="email" autocomplete="email" required maxlength="254" />
      <${Field} label="Your password" id="em-password" name="password" type="password" autocomplete="current-password" required />
      <button type="submit">Send code</button>
    </form>
    ${
      status.address
        ? html`<details class="remove-email">
          <summary>Remove the address</summary>
          <form class="inline-form" onSubmit=${submit((f) => removeEmail(app, String(f.get("password"))), "The address was removed.")}>
            <${Field} label="Password to remove it" id="em-remove-password" name="password" type="password" autocomplete="current-password" required />
            <button type="submit" class="danger">Remove address</button>
          </form>
        </details>`
        : null
    }`;
}

/** /verify-email#token=...: opened from the mail, signed in (app.js brings a signed-out visitor back here). */
export function VerifyEmailScreen() {
  const [state, setState] = useState({ busy: true, error: "", address: "" });
  useEffect(() => {
    const token = tokenInFragment();
    history.replaceState(null, "", "/verify-email"); // the code leaves the address bar and the history
    if (!token) return setState({ busy: false, error: "This link has no code. Open the whole link from the mail.", address: "" });
    verifyEmail(app, token).then(
      (s) => setState({ busy: false, error: "", address: s.address }),
      (e) => setState({ busy: false, error: say(e), address: "" }),
    );
  }, []);
  return html`<section class="page" aria-labelledby="verify-title">
    <header class="page-head">
      <a href="/" onClick=${onLink} class="back icon-button" aria-label="Back to chats">‹</a>
      <h1 id="verify-title">Verify your email</h1>
    </header>
    <div class="card">
      ${
        state.busy
          ? html`<p aria-busy="true">Checking the code…</p>`
          : state.error
            ? html`<p class="form-error" role="alert">${state.error}</p>
              <p><a href="/settings/email" onClick=${onLink}>Email settings</a></p>`
            : html`<p role="status"><strong>${state.address}</strong> is verified.</p>
              <p><a class="button primary" href="/" onClick=${onLink}>Go to chats</a></p>`
      }
    </div>
  </section>`;
}

/** /reset-password: ask for a code ("Forgot password?"), then set a new password with it. */
export function PasswordReset() {
  const s = useApp();
  const [token, setToken] = useState(() => tokenInFragment());
  const [asked, setAsked] = useState(false);
  const [done, setDone] = useState(false);
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const first = useRef(null);
  useEffect(() => {
    // the mailed link opened where this screen is open already: only the fragment changes
    const fromLink = () => {
      const found = tokenInFragment();
      if (found) setToken(found);
      if (location.hash) history.replaceState(null, "", "/reset-password"); // the code leaves the address bar
    };
    fromLink();
    addEventListener("hashchange", fromLink);
    return () => removeEventListener("hashchange", fromLink);
  }, []);
  useEffect(() => first.current?.focus(), [asked, token, done]);
  if (!emailAvailable()) {
    return html`<div>
      <h2 id="reset-title">Reset your password</h2>
      <p class="notice">This server does not send email, so a password cannot be reset here. Ask its administrator.</p>
      <p class="auth-switch"><a href="/login" onClick=${onLink}>Back to log in</a></p>
    </div>`;
  }
  const ask = async (event) => {
    event.preventDefault();
    setBusy(true);
    setError("");
    try {
      await requestReset(String(new FormData(event.currentTarget).get("login")).trim());
      setAsked(true);
    } catch (e) {
      setError(say(e));
    } finally {
      setBusy(false);
    }
  };
  const confirm = async (event) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const password = String(form.get("password"));
    if (password !== String(form.get("again"))) return setError("The two passwords differ.");
    setBusy(true);
    setError("");
    try {
      await confirmReset(token || String(form.get("token") ?? ""), password);
      setDone(true);
    } catch (e) {
      setError(say(e));
    } finally {
      setBusy(false);
    }
  };
  if (done) {
    return html`<div role="status">
      <h2 id="reset-title">Password changed</h2>
      <p>Your new password works now. Every device was logged out${s.phase === "ready" ? ", this one too" : ""}.</p>
      <p><a class="button primary wide" href="/login" onClick=${onLink} ref=${first}>Log in</a></p>
    </div>`;
  }
  if (!token && !asked) {
    // keys: each form its own inputs, so the username typed here never stays in a password field there
    return html`<form key="ask" onSubmit=${ask} aria-labelledby="reset-title">
      <h2 id="reset-title">Forgot your password?</h2>
      <p>Type your username or your verified email address. If the account has a verified address, a code to reset the
        password is mailed to it.</p>
      <${Field} label="Username or email" id="rp-login" name="login" autocomplete="username" autocapitalize="none" required inputRef=${first} />
      ${error ? html`<p class="form-error" role="alert">${error}</p>` : null}
      <button class="primary wide" type="submit" disabled=${busy}>Send reset code</button>
      <p class="auth-switch"><a href="/login" onClick=${onLink}>Back to log in</a></p>
    </form>`;
  }
  return html`<form key="confirm" onSubmit=${confirm} aria-labelledby="reset-title">
    <h2 id="reset-title">Set a new password</h2>
    ${
      token
        ? null
        : html`<p role="status">If the account has a verified address, a mail is on its way. Open its link, or type its code.</p>
          <${Field} label="Code from the email" id="rp-token" name="token" autocomplete="one-time-code" autocapitalize="none" required inputRef=${first} />`
    }
    <${Field} label="New password" id="rp-password" name="password" type="password" autocomplete="new-password" required minlength="8"
      hint="At least 8 characters" inputRef=${token ? first : undefined} />
    <${Field} label="New password again" id="rp-again" name="again" type="password" autocomplete="new-password" required minlength="8" />
    ${error ? html`<p class="form-error" role="alert">${error}</p>` : null}
    <button class="primary wide" type="submit" disabled=${busy}>Set new password</button>
    <p class="auth-switch"><button type="button" class="link" onClick=${() => (setToken(""), setAsked(false), setError(""))}>Ask for a new code</button></p>
  </form>`;
}

