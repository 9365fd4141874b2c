// The service worker: it exists for Web Push alone (docs/web.md "Push when every tab is closed").
//
// Served at /sw.js (so its scope is the whole client) by sup/http/handlers/service_worker.py, with its own
// Content-Security-Policy. It caches nothing and handles no fetch: the page works as it did without it.
// A push says only that something is new, and perhaps in which chat (docs/api.md "Push notifications"):
// the notification shows "New message" and never content, which the push never has anyway.

const CHAT_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

self.addEventListener("install", () => self.skipWaiting());
self.addEventListener("activate", (event) => event.waitUntil(self.clients.claim()));

/** What a push asks for: the chat it names, when it names one the way chat ids look. */
function readPush(data) {
  let message = {};
  try {
    message = data ? JSON.parse(data.text()) : {};
  } catch {
    message = {};
  }
  const chatId = typeof message.chat_id === "string" && CHAT_ID.test(message.chat_id) ? message.chat_id.toLowerCase() : null;
  return { chatId, url: chatId ? `/chats/${chatId}` : "/" };
}

self.addEventListener("push", (event) => {
  const { chatId, url } = readPush(event.data);
  event.waitUntil(
    (async () => {
      // A visible tab shows the message itself (and its own notification when the chat is not open).
      const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      if (windows.some((w) => w.visibilityState === "visible")) return;
      await self.registration.showNotification("New message", {
        body: chatId ? "Open the chat to read it." : "Open SUP to read it.",
        tag: chatId ?? "sup-new", // one notification per chat stands at a time
        icon: "/assets/img/icon.svg",
        data: { url },
      });
    })(),
  );
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const url = new URL(event.notification.data?.url ?? "/", self.location.origin).href;
  event.waitUntil(
    (async () => {
      const windows = await self.clients.matchAll({ type: "window", includeUncontrolled: true });
      const open = windows.find((w) => new URL(w.url).origin === self.location.origin);
      if (open) {
        await open.focus();
        if ("navigate" in open) await open.navigate(url).catch(() => {});
        return;
      }
      await self.clients.openWindow(url);
    })(),
  );
});

// The push service replaced the subscription (it expired or its key changed): the page subscribes again
// the next time it opens (js/client/push.js compares what it has with what the server knows).
self.addEventListener("pushsubscriptionchange", () => {});
