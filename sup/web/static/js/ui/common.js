// Pieces every screen uses: the state hook, avatars, time, form fields, the connection banner.

import { html, useEffect, useRef, useState } from "./html.js";
import { AppState } from "../state/state.js";

/** @type {AppState} */
export let app = null;

export function setApp(state) {
  app = state;
}

/** The state's snapshot; the component re-renders when it changes. */
export function useApp() {
  const [snapshot, setSnapshot] = useState(app.get());
  useEffect(() => {
    const unsubscribe = app.subscribe(setSnapshot);
    // Effects run after the first paint: a change made before this subscription would be missed.
    setSnapshot(app.get());
    return unsubscribe;
  }, []);
  return snapshot;
}

export const describe = (error) => AppState.describe(error);

/** Initials on a colour picked from the id (no images needed, readable in both themes). */
export function Avatar({ id = "", name = "", size = "m", online = false }) {
  const letters = (name || "?")
    .trim()
    .split(/\s+/)
    .slice(0, 2)
    .map((w) => w[0]?.toUpperCase() ?? "")
    .join("");
  let hash = 0;
  for (const c of id) hash = (hash * 31 + c.charCodeAt(0)) >>> 0;
  return html`<span class=${`avatar avatar-${size} hue-${hash % 8}`} aria-hidden="true"
    >${letters}${online ? html`<span class="dot-online"></span>` : null}</span
  >`;
}

export function formatTime(ms) {
  if (!ms) return "";
  const d = new Date(ms);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  const days = (now - d) / 86400000;
  if (days < 6) return d.toLocaleDateString([], { weekday: "short" });
  return d.toLocaleDateString([], { day: "numeric", month: "short" });
}

export function formatDay(ms) {
  const d = new Date(ms);
  const now = new Date();
  if (d.toDateString() === now.toDateString()) return "Today";
  const yesterday = new Date(now - 86400000);
  if (d.toDateString() === yesterday.toDateString()) return "Yesterday";
  return d.toLocaleDateString([], { weekday: "long", day: "numeric", month: "long", year: "numeric" });
}

export function lastSeen(p) {
  if (!p) return "";
  if (p.online) return "online";
  if (!p.last_seen_at) return "";
  return `last seen ${formatTime(p.last_seen_at)}`;
}

/** A labelled input (every field has a visible label). */
export function Field({ label, id, hint = "", error = "", inputRef = undefined, ...input }) {
  return html`<div class="field">
    <label for=${id}>${label}</label>
    <input id=${id} ref=${inputRef} aria-describedby=${hint || error ? `${id}-note` : undefined} aria-invalid=${error ? "true" : undefined} ...${input} />
    ${hint || error ? html`<p id=${`${id}-note`} class=${error ? "field-error" : "field-hint"}>${error || hint}</p>` : null}
  </div>`;
}

/** Move the keyboard focus to an element when it appears (used when a screen opens). */
export function useFocus(deps = []) {
  const ref = useRef(null);
  useEffect(() => {
    ref.current?.focus();
  }, deps);
  return ref;
}

/**
 * What a screen shows, fetched when it opens (and again when `deps` change): gives the value (null until it
 * arrives), the fetch, to run again after the screen changed what it shows, and the value's setter. A failure
 * goes to `fail` (left out where `fetch` has its own fallback).
 * @param {() => Promise<any>} fetch @param {(error: Error) => void} [fail]
 */
export function useLoaded(fetch, fail, deps = []) {
  const [value, setValue] = useState(null);
  const load = () => fetch().then(setValue, fail);
  useEffect(() => {
    load();
  }, deps);
  return [value, load, setValue];
}

/**
 * Run `action(userId)` for the user a form names in its `username` field (a leading "@" allowed), then clear
 * the form. Gives "" when done, else what to tell the user: that there is no such user, or `say(error)`.
 * @param {HTMLFormElement} form @param {(userId: string) => Promise<any>} action
 */
export async function actOnUsername(form, action, say = describe) {
  const name = String(new FormData(form).get("username")).trim().replace(/^@/, "");
  try {
    const user = await app.api.userByUsername(name);
    await action(user.id);
    form.reset();
    return "";
  } catch (e) {
    return e.code === "not_found" ? `There is no user “${name}”.` : say(e);
  }
}

/** The banner when the connection is down, and the toast line. */
export function StatusBar() {
  const s = useApp();
  const [shownToast, setShownToast] = useState(null);
  useEffect(() => {
    if (!s.toast) return undefined;
    setShownToast(s.toast);
    const t = setTimeout(() => setShownToast(null), 5000);
    return () => clearTimeout(t);
  }, [s.toast]);
  const offline = !s.browserOnline || (s.phase === "ready" && s.leading && s.connection === "offline");
  return html`
    ${
      offline
        ? html`<div class="banner banner-offline" role="status">
          ${s.browserOnline ? "Reconnecting…" : "You are offline. Messages will be sent when the connection is back."}
        </div>`
        : null
    }
    <div class="toast-region" role="status" aria-live="polite">
      ${shownToast ? html`<div class="toast">${shownToast.text}</div>` : null}
    </div>
  `;
}

/**
 * A device's short id: the *last* 8 hex digits of its id, as `sup chat` and Settings show it (device ids are
 * UUIDv7, whose first digits are a timestamp that devices made the same minute share).
 */
export function shortId(value) {
  return value.replace(/-/g, "").slice(-8);
}

/** A device as a new-device notice names it: its name (the server's word) and its short id. */
export function deviceLabel(name, deviceId) {
  return name ? `${name} (${shortId(deviceId)})` : `id ${shortId(deviceId)}`;
}

/** A key (base64) as 8 groups of 4 hex digits, to tell devices apart. */
export function keyDigits(b64) {
  if (!b64) return "";
  const raw = atob(b64);
  let hex = "";
  for (let i = 0; i < Math.min(raw.length, 16); i++) hex += raw.charCodeAt(i).toString(16).padStart(2, "0");
  return hex.match(/.{4}/g).join(" ");
}

/**
 * A component whose module is loaded the first time it is shown (`import()`): big screens used now and then
 * (the story viewer, the sticker picker) cost nothing on the first load. `load` gives the module.
 * @param {() => Promise<Record<string, any>>} load @param {string} name the component's export
 */
export function lazy(load, name) {
  let loaded = null;
  return function Lazy(props) {
    const [Component, setComponent] = useState(() => loaded);
    const [error, setError] = useState("");
    useEffect(() => {
      if (Component) return;
      load().then(
        (module) => {
          loaded = module[name];
          setComponent(() => loaded);
        },
        (e) => setError(describe(e)),
      );
    }, []);
    if (error) return html`<p class="form-error" role="alert">Could not load this part of SUP: ${error}</p>`;
    return Component ? html`<${Component} ...${props} />` : html`<p class="muted" aria-busy="true">Loading…</p>`;
  };
}
