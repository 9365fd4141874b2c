// Web Push for this browser: the service worker at /sw.js, and this device's push subscription on the server
// (docs/api.md "Push notifications"). With it, a closed tab still hears that a message arrived: the push
// service wakes the service worker, which shows "New message" (no content: the push has none) and opens the
// chat on a click.
//
// The subscription is made with the server's VAPID key (GET /push/vapid) and registered for this device
// (POST /push/subscriptions); turning it off unsubscribes here and there (DELETE /push/subscriptions).
// Signing out revokes the device, and the server forgets its subscription with it.

export const WORKER_URL = "/sw.js";
const KEY_SEEN = "sup-push-vapid"; // the VAPID key this browser subscribed with

/** Whether this browser can do Web Push at all (a secure context with service workers and PushManager). */
export function pushSupported() {
  return (
    typeof window !== "undefined" &&
    window.isSecureContext &&
    "serviceWorker" in navigator &&
    "PushManager" in window &&
    typeof Notification !== "undefined"
  );
}

/** base64url (the server's form) to the bytes PushManager takes as applicationServerKey. */
export function keyBytes(base64url) {
  const base64 = base64url.replace(/-/g, "+").replace(/_/g, "/") + "=".repeat((4 - (base64url.length % 4)) % 4);
  return Uint8Array.from(atob(base64), (c) => c.charCodeAt(0));
}

/** The service worker's registration, registering it first if needed. */
export async function registerWorker() {
  const existing = await navigator.serviceWorker.getRegistration("/");
  if (existing) return existing;
  await navigator.serviceWorker.register(WORKER_URL, { scope: "/" });
  return navigator.serviceWorker.ready;
}

/** "unsupported", "blocked" (notifications denied), "on" (subscribed with the server's key) or "off". */
export async function pushStatus(api) {
  if (!pushSupported()) return "unsupported";
  if (Notification.permission === "denied") return "blocked";
  const registration = await navigator.serviceWorker.getRegistration("/");
  const subscription = await registration?.pushManager.getSubscription();
  if (!subscription) return "off";
  // The server's key changed (its secret did): the old subscription is worthless, make a new one.
  const { public_key: key } = await api.request("GET", "/push/vapid", { auth: false });
  if (localStorage.getItem(KEY_SEEN) !== key) {
    await subscription.unsubscribe().catch(() => {});
    return "off";
  }
  // This browser has a subscription, but it may be an earlier device's (signed out since): is it this one's?
  const known = await api.request("GET", "/push/subscriptions").catch(() => null);
  return known?.endpoint === subscription.endpoint ? "on" : "off";
}

/** Ask for permission, subscribe with the server's key, and register the subscription for this device. */
export async function enablePush(api) {
  if (!pushSupported()) throw new Error("This browser cannot receive push notifications.");
  const permission = await Notification.requestPermission();
  if (permission !== "granted") throw new Error("Notifications are blocked for this site in your browser’s settings.");
  const registration = await registerWorker();
  const { public_key: key } = await api.request("GET", "/push/vapid", { auth: false });
  let subscription = await registration.pushManager.getSubscription();
  if (subscription && localStorage.getItem(KEY_SEEN) !== key) {
    await subscription.unsubscribe().catch(() => {});
    subscription = null;
  }
  try {
    subscription ??= await registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: keyBytes(key) });
  } catch (error) {
    // e.g. a browser build without a push service (Chromium without Google's keys, some privacy settings)
    throw new Error(`This browser’s push service did not take the subscription (${error.message || error}).`);
  }
  const { endpoint, keys } = subscription.toJSON();
  await api.request("POST", "/push/subscriptions", { json: { endpoint, p256dh: keys.p256dh, auth: keys.auth } });
  localStorage.setItem(KEY_SEEN, key);
  return subscription;
}

/** Stop pushes to this device: here (the browser's subscription) and on the server. */
export async function disablePush(api) {
  const registration = pushSupported() ? await navigator.serviceWorker.getRegistration("/") : undefined;
  const subscription = await registration?.pushManager.getSubscription();
  await subscription?.unsubscribe().catch(() => {});
  await api.request("DELETE", "/push/subscriptions");
  localStorage.removeItem(KEY_SEEN);
}
