// What the messenger tells the state (state.js), in the leading tab or relayed to the others: what it stored
// (read again), the socket's frames that are not stored (typing, presence, calls, stories, join requests,
// sticker packs), and each new message from someone else (the end of their typing, a desktop notification).

import { isCallFrame } from "../client/calls.js";
import { isEncrypted, previewText } from "../client/chats.js";

export class LiveEvents {
  /** @param {import("./state.js").AppState} app */
  constructor(app) {
    this.app = app;
    this.typingTimers = new Map();
    /** `${chat}:${user}` -> when their last message arrived (performance.now()) */
    this.lastMessageFrom = new Map();
  }

  /** The messenger stored something: read it again. */
  changed(change) {
    const app = this.app;
    switch (change.what) {
      case "chats":
        return app.refreshChats();
      case "messages":
        if (change.ids && !change.ids.length) app.changedChats.add(change.chatId); // a chat's messages dropped
        else if (change.ids) for (const id of change.ids) app.changedMessages.add(id);
        else app.changedChats.add(change.chatId);
        if (change.chatId === app.snapshot.activeChatId) return app.refreshMessages();
        return;
      case "notices":
        return app.refreshNotices();
      case "status":
        return app.set({ connection: change.status.state });
      case "incoming":
        this.stoppedTyping(change.message);
        return this.notifyIncoming(change.message);
      case "frame":
        return this.frame(change.frame);
      case "ended":
        return app._ended();
      default:
        return;
    }
  }

  /** A frame the socket relayed that is not stored. */
  frame(frame) {
    const app = this.app;
    if (isCallFrame(frame)) {
      if (app.messenger !== null) app.calls.onFrame(frame); // a call rings in the tab that is connected
      return;
    }
    if (frame.type === "resync") {
      // Events were missed: what they would have said about stories and sticker packs is read again.
      app.loadStories().catch(() => {});
      if (app.snapshot.stickerPacks !== null) app.loadStickerPacks().catch(() => {});
    } else if (frame.type === "story.new" || frame.type === "story.deleted") {
      app.stories.onEvent(frame);
    } else if (frame.type === "chat.join_request.new" || frame.type === "chat.join_request.resolved") {
      // chat info's list of requests (ui/invites.js) reads itself again; a new one is also said
      if (frame.type === "chat.join_request.new" && frame.request) {
        app.toast(`${frame.request.display_name || frame.request.username} asks to join ${app.chatTitle(app.chat(frame.chat_id)) || "a chat"}`);
      }
      const me = app.snapshot.me?.id;
      if (frame.type === "chat.join_request.resolved" && frame.user_id === me && frame.by !== me) {
        app.toast(frame.approved ? "Your request to join was approved." : "Your request to join was declined.");
      }
      dispatchEvent(new CustomEvent("sup:join-request", { detail: frame }));
    } else if (frame.type === "stickers.installed") {
      if (app.snapshot.stickerPacks !== null) app.loadStickerPacks().catch(() => {});
    } else if (frame.type === "typing") {
      const key = `${frame.chat_id}:${frame.user_id}`;
      // A notice relayed behind the message it announced (the server coalesces typing) is old news.
      if (frame.active && performance.now() - (this.lastMessageFrom.get(key) ?? -Infinity) < 2000) return;
      clearTimeout(this.typingTimers.get(key));
      const typing = { ...app.snapshot.typing };
      const inChat = { ...(typing[frame.chat_id] ?? {}) };
      if (frame.active && frame.user_id !== app.snapshot.me?.id) {
        inChat[frame.user_id] = true;
        this.typingTimers.set(
          key,
          setTimeout(() => this.frame({ ...frame, active: false }), (frame.expires_in ?? 6) * 1000),
        );
      } else delete inChat[frame.user_id];
      typing[frame.chat_id] = inChat;
      app.set({ typing });
    } else if (frame.type === "presence") {
      app.set({
        presence: {
          ...app.snapshot.presence,
          [frame.user_id]: { online: frame.online, last_seen_at: frame.last_seen_at },
        },
      });
    }
  }

  /** A message from someone ends their typing in that chat: it is what they were typing. */
  stoppedTyping(record) {
    const key = `${record.chat_id}:${record.sender_id}`;
    this.lastMessageFrom.set(key, performance.now());
    if (this.lastMessageFrom.size > 1000) this.lastMessageFrom.delete(this.lastMessageFrom.keys().next().value);
    if (this.app.snapshot.typing[record.chat_id]?.[record.sender_id]) {
      this.frame({ type: "typing", chat_id: record.chat_id, user_id: record.sender_id, active: false });
    }
  }

  /**
   * A desktop notification for a message from someone else, from the leading tab only (once per device), unless
   * its chat is open in a visible tab. What it may show (docs/web.md "Notifications"): who wrote, and where;
   * the text only for a chat the server can read anyway (a channel, an unencrypted group). An end-to-end
   * encrypted message says "New message": a notification leaves the page for the system's notification centre
   * and lock screen, which this page's encryption does not cover.
   */
  async notifyIncoming(record) {
    const app = this.app;
    const chatId = record.chat_id;
    const visible = document.visibilityState === "visible" && chatId === app.snapshot.activeChatId;
    if (visible || !app.messenger) return; // the leading tab notifies, once
    if (typeof Notification === "undefined" || Notification.permission !== "granted") return;
    const chat = app.chat(chatId);
    if (chat?.muted) return; // no mutes yet; a muted chat will notify nothing at all
    const profile = app.snapshot.users[record.sender_id] ?? (await app.api.user(record.sender_id).catch(() => null));
    const sender = profile ? profile.display_name || profile.username : "Someone";
    const title = chat?.type === "direct" || !chat ? sender : `${sender} in ${app.chatTitle(chat)}`;
    const body = !chat || isEncrypted(chat) ? "New message" : previewText(record) || "New message";
    try {
      const n = new Notification(title, { body, tag: chatId });
      n.onclick = () => {
        focus();
        dispatchEvent(new CustomEvent("sup:navigate", { detail: `/chats/${chatId}` }));
      };
    } catch (error) {
      console.warn("notification", error);
    }
  }
}
