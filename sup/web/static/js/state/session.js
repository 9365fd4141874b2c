// Signing a device in and out, for the state (state.js): the account's answer turned into a stored session
// with the device's keys made first, the Api that keeps the session's tokens, and what a device leaves behind
// when its session ends.

import { Api } from "../api/http.js";
import { DeviceStore } from "../crypto/store.js";

/** What the server lists this device as: its browser and system, as the user would name them. */
export function deviceName() {
  const ua = navigator.userAgent;
  const browser = /Firefox\//.test(ua)
    ? "Firefox"
    : /Edg\//.test(ua)
      ? "Edge"
      : /Chrome\//.test(ua)
        ? "Chrome"
        : /Safari\//.test(ua)
          ? "Safari"
          : "Browser";
  const system = /Android/.test(ua)
    ? "Android"
    : /iPhone|iPad/.test(ua)
      ? "iOS"
      : /Mac OS X/.test(ua)
        ? "macOS"
        : /Windows/.test(ua)
          ? "Windows"
          : /Linux/.test(ua)
            ? "Linux"
            : "";
  return `${browser}${system ? " on " + system : ""} (web)`;
}

/**
 * The Api of a session: the refresh token kept in the local store, the access token shared with the other
 * tabs; `onEnded` when the server says the session is over.
 * @param {{local: () => import("../store/db.js").LocalStore, shareAccess: (access: string) => void,
 *   onEnded: () => void}} hooks `local` is asked each time: signing out opens a new store
 */
export function sessionApi({ local, shareAccess, onEnded }) {
  return new Api({
    tokens: {
      loadRefresh: async () => (await local().get("session"))?.refreshToken ?? null,
      saveSession: async (answer) => {
        const session = await local().get("session");
        await local().set("session", { ...session, refreshToken: answer.refresh_token });
      },
      shareAccess,
    },
    onSessionEnded: onEnded,
  });
}

/** Sign up; the answer is stored as this device's session, its keys made (the messenger publishes them). */
export async function signUp(local, { username, password, displayName = "", inviteCode = "" }) {
  const api = new Api();
  const body = { username, password, display_name: displayName, device_name: deviceName() };
  if (inviteCode) body.invite_code = inviteCode;
  return signedIn(local, await api.register(body));
}

/** Log in (a new device); `totp` or `recovery` when the server answered totp_required. */
export async function logIn(local, { username, password, totp = "", recovery = "" }) {
  const api = new Api();
  const body = { username, password, device_name: deviceName() };
  if (recovery) body.recovery_code = recovery;
  else if (totp) body.totp_code = totp;
  return signedIn(local, await api.login(body));
}

/** @returns {Promise<{session: object, access: string}>} the stored session and the first access token */
async function signedIn(local, answer) {
  const session = {
    userId: answer.user.id,
    deviceId: answer.device_id,
    username: answer.user.username,
    refreshToken: answer.refresh_token,
    user: answer.user,
  };
  // Keys first: a device is useful only once its crypto state exists (the messenger publishes it).
  const keystore = await DeviceStore.open(session.deviceId);
  try {
    await keystore.create(session.userId, session.deviceId);
  } finally {
    keystore.close();
  }
  await local.set("session", session);
  return { session, access: answer.access_token };
}

/** A signed-out device's keys and crypto database, gone. */
export async function destroyKeys(deviceId) {
  const keystore = await DeviceStore.open(deviceId);
  await keystore.destroy().catch(() => {});
  keystore.close();
  await new Promise((resolve) => {
    const req = indexedDB.deleteDatabase(`sup-crypto-${deviceId}`);
    req.onsuccess = req.onerror = req.onblocked = () => resolve();
  });
}
