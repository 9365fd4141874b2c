// The open chat's messages, for the state (state.js): a window of the newest ones read from the local store,
// widened page by page when the user scrolls back (from the server too, for a plaintext chat's history), and
// narrowed again at the bottom so that a long chat does not fill memory.

import { isEncrypted } from "../client/chats.js";

const WINDOW = 60; // messages shown at first; scrolling back adds pages of this size
const MAX_WINDOW = 600; // beyond this the oldest shown are dropped as new ones come (memory stays flat)

export class MessageWindow {
  /** @param {import("./state.js").AppState} app */
  constructor(app) {
    this.app = app;
    this.size = WINDOW;
  }

  async refresh() {
    const app = this.app;
    const chatId = app.snapshot.activeChatId;
    if (!chatId || !app.local) return;
    const messages = await app.local.messages(chatId, { limit: this.size });
    if (chatId !== app.snapshot.activeChatId) return;
    const chat = app.chat(chatId);
    const oldest = messages[0]?.seq ?? Infinity;
    app.set({ messages, hasOlder: messages.length >= this.size || (chat && !isEncrypted(chat) && oldest > 1) });
  }

  /** Open a chat: its newest messages, its plaintext history from the server, its members' presence. */
  async open(chatId) {
    const app = this.app;
    if (app.snapshot.activeChatId !== chatId) {
      this.size = WINDOW;
      app.set({ activeChatId: chatId, messages: [], hasOlder: false });
    }
    await this.refresh();
    const chat = app.chat(chatId);
    if (chat && !isEncrypted(chat) && !app.snapshot.messages.some((m) => m.seq < 1e15)) {
      await app.act("loadHistory", chatId, null).catch((error) => console.warn("history", error));
      await this.refresh();
    }
    if (chat?.peer?.id && !(chat.peer.id in app.snapshot.presence)) {
      app.api
        .presence(chat.peer.id)
        .then((p) => app.set({ presence: { ...app.snapshot.presence, [p.user_id]: p } }))
        .catch(() => {});
    }
  }

  /** Scroll back: a page more from the local store, and from the server for a plaintext chat. */
  async older() {
    const app = this.app;
    const chatId = app.snapshot.activeChatId;
    if (!chatId) return;
    const before = app.snapshot.messages.length;
    this.size = Math.min(this.size + WINDOW, 100_000);
    await this.refresh();
    const chat = app.chat(chatId);
    if (app.snapshot.messages.length === before && chat && !isEncrypted(chat)) {
      const oldest = app.snapshot.messages.find((m) => m.seq < 1e15)?.seq ?? null;
      const { more } = await app.act("loadHistory", chatId, oldest);
      await this.refresh();
      if (!more) app.set({ hasOlder: false });
    } else if (app.snapshot.messages.length === before) app.set({ hasOlder: false });
  }

  /** Back at the bottom: show the newest page only again, so a long chat does not fill memory. */
  trim() {
    if (this.size > MAX_WINDOW || this.size > WINDOW * 2) {
      this.size = WINDOW;
      this.refresh();
    }
  }
}
