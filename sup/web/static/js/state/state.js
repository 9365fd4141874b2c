// The one place the UI reads from. `AppState` holds a snapshot (plain objects the screens render), tells
// subscribers when it changes, and offers the actions the screens call. It starts the session (sign up,
// log in, a reload), takes part in the tabs' election (tabs.js), and runs the messenger when this tab leads;
// when it follows, the same actions go to the leading tab. Screens never see keys or the crypto modules.

import { Api, ApiError, SessionEnded } from "../api/http.js";
import { DeviceStore } from "../crypto/store.js";
import { CallController, isCallFrame } from "../client/calls.js";
import { isEncrypted, previewText, systemText } from "../client/chats.js";
import { MediaCache } from "../client/media.js";
import { Messenger } from "../client/messenger.js";
import { LocalStore } from "../store/db.js";
import { Tabs } from "./tabs.js";

const WINDOW = 60; // messages shown at first; scrolling back adds pages of this size
const MAX_WINDOW = 600; // beyond this the oldest shown are dropped as new ones come (memory stays flat)

/** The messenger's methods a following tab may ask the leading one to run. */
const ACTIONS = new Set([
  "send",
  "retry",
  "discard",
  "edit",
  "remove",
  "react",
  "setPinned",
  "markRead",
  "forward",
  "createDirect",
  "createGroup",
  "addMembers",
  "removeMember",
  "leave",
  "deleteChat",
  "loadHistory",
  "dismissNotice",
  "safetyNumber",
  "typing",
  "syncChats",
  "call",
]);

function deviceName() {
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

export class AppState {
  constructor() {
    this.listeners = new Set();
    this.snapshot = {
      phase: "boot",
      registration: document.querySelector('meta[name="sup-registration"]')?.content ?? "open",
      me: null,
      deviceId: null,
      leading: false,
      connection: "connecting",
      browserOnline: navigator.onLine,
      chats: [],
      activeChatId: null,
      messages: [],
      hasOlder: false,
      typing: {},
      presence: {},
      notices: [],
      users: {},
      toast: null,
      /** my installed sticker packs, in my order; null until the picker or Settings asks */
      stickerPacks: null,
      /** the stories I may see, by author ({author, stories: newest first, all_seen}), none expired; null: loading */
      stories: null,
      /** this tab's call (client/calls.js), or null */
      call: null,
    };
    this.calls = new CallController(this);
    this.storyTimer = null;
    /** where closing the story viewer goes back to (the screen it was opened from) */
    this.storyReturn = "/";
    /** @type {Map<string, Promise<object>>} sticker id -> the sticker (public, never changes) */
    this.stickers = new Map();
    this.local = null;
    this.api = null;
    this.tabs = null;
    this.messenger = null;
    this.media = null;
    this.window = WINDOW;
    this.typingTimers = new Map();
    /** `${chat}:${user}` -> when their last message arrived (performance.now()) */
    this.lastMessageFrom = new Map();
    /** messages stored or removed since the device's search index last looked (client/search.js) */
    this.changedMessages = new Set();
    /** chats whose stored messages changed in a way not said message by message: read again whole */
    this.changedChats = new Set();
    addEventListener("online", () => this.set({ browserOnline: true }));
    addEventListener("offline", () => this.set({ browserOnline: false }));
  }

  // ---- subscription --------------------------------------------------------------------------------

  get() {
    return this.snapshot;
  }

  subscribe(listener) {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  set(patch) {
    this.snapshot = { ...this.snapshot, ...patch };
    for (const listener of this.listeners) listener(this.snapshot);
  }

  toast(text) {
    this.set({ toast: { text, at: Date.now() } });
  }

  // ---- session ---------------------------------------------------------------------------------------

  async boot() {
    this.local = await LocalStore.open();
    const session = await this.local.get("session");
    if (!session) return this.set({ phase: "auth" });
    await this._start(session);
  }

  _api() {
    return new Api({
      tokens: {
        loadRefresh: async () => (await this.local.get("session"))?.refreshToken ?? null,
        saveSession: async (answer) => {
          const session = await this.local.get("session");
          await this.local.set("session", { ...session, refreshToken: answer.refresh_token });
        },
        shareAccess: (access) => this.tabs?.post({ kind: "access", access }),
      },
      onSessionEnded: () => this._ended(),
    });
  }

  /** Sign up; on success this device is signed in and its keys are made and published. */
  async signUp({ username, password, displayName = "", inviteCode = "" }) {
    const api = new Api();
    const body = { username, password, display_name: displayName, device_name: deviceName() };
    if (inviteCode) body.invite_code = inviteCode;
    await this._signedIn(await api.register(body));
  }

  /** Log in (a new device); `totp` or `recovery` when the server answered totp_required. */
  async logIn({ username, password, totp = "", recovery = "" }) {
    const api = new Api();
    const body = { username, password, device_name: deviceName() };
    if (recovery) body.recovery_code = recovery;
    else if (totp) body.totp_code = totp;
    await this._signedIn(await api.login(body));
  }

  async _signedIn(answer) {
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
    await this.local.set("session", session);
    await this._start(session, answer.access_token);
  }

  async _start(session, access = null) {
    this.api = this._api();
    this.api.access = access;
    this.media = new MediaCache(this.api);
    this.tabs = new Tabs(session.deviceId);
    this.tabs.on((message) => this._fromTab(message));
    this.set({
      phase: "ready",
      me: session.user ?? { id: session.userId, username: session.username, display_name: session.username },
      deviceId: session.deviceId,
    });
    await this.refreshChats();
    await this.refreshNotices();
    this.loadStories().catch((error) => console.warn("could not list stories", error));
    const keystore = await DeviceStore.open(session.deviceId);
    this.tabs.serve = (method, args) => this._run(method, args);
    this.tabs.lead(keystore.lockName, async () => {
      this.messenger = new Messenger({
        api: this.api,
        local: this.local,
        keystore,
        session,
        notify: (change) => {
          this._changed(change);
          this.tabs?.post({ kind: "change", change });
        },
      });
      this.set({ leading: true });
      try {
        await this.messenger.start();
      } catch (error) {
        if (error instanceof SessionEnded) return this._ended();
        console.error("could not start", error);
        this.toast(`Could not connect: ${error.message}`);
      }
    });
    this.api
      .me()
      .then((me) => this._setMe(me))
      .catch(() => {});
  }

  async _setMe(me) {
    this.set({ me });
    const session = await this.local.get("session");
    if (session) await this.local.set("session", { ...session, user: me });
  }

  /** This device's session ended (logged out elsewhere, revoked): back to the sign-in screen. */
  async _ended() {
    if (this.snapshot.phase !== "ready") return;
    await this._forget();
    this.set({ phase: "auth", toast: { text: "This device was signed out.", at: Date.now() } });
  }

  async logOut() {
    try {
      await this.api.logout();
    } catch (error) {
      console.warn("logout", error);
    }
    this.tabs?.post({ kind: "logout" });
    await this._forget();
    this.set({ phase: "auth" });
  }

  async _forget() {
    const deviceId = this.snapshot.deviceId;
    this.messenger?.stop();
    this.messenger = null;
    this.media?.clear();
    this.tabs?.close();
    this.tabs = null;
    if (deviceId) {
      const keystore = await DeviceStore.open(deviceId);
      await keystore.destroy().catch(() => {});
      keystore.close();
      await new Promise((resolve) => {
        const req = indexedDB.deleteDatabase(`sup-crypto-${deviceId}`);
        req.onsuccess = req.onerror = req.onblocked = () => resolve();
      });
    }
    await this.local.destroy();
    this.local = await LocalStore.open();
    clearTimeout(this.storyTimer);
    this.set({
      me: null,
      deviceId: null,
      chats: [],
      messages: [],
      activeChatId: null,
      notices: [],
      leading: false,
      stories: null,
      stickerPacks: null,
    });
  }

  // ---- between tabs ----------------------------------------------------------------------------------

  _run(method, args) {
    if (!ACTIONS.has(method) || this.messenger === null) throw new Error(`cannot run ${method} here`);
    return this.messenger[method](...args);
  }

  /** An action of the messenger: here if this tab leads, else in the leading tab. */
  act(method, ...args) {
    if (this.messenger !== null) return Promise.resolve().then(() => this._run(method, args));
    return this.tabs.call(method, args);
  }

  _fromTab(message) {
    if (message.kind === "change") this._changed(message.change);
    else if (message.kind === "access") this.api?.setAccess(message.access);
    else if (message.kind === "logout") this._ended();
  }

  /** The messenger stored something: read it again. */
  _changed(change) {
    switch (change.what) {
      case "chats":
        return this.refreshChats();
      case "messages":
        if (change.ids && !change.ids.length) this.changedChats.add(change.chatId); // a chat's messages dropped
        else if (change.ids) for (const id of change.ids) this.changedMessages.add(id);
        else this.changedChats.add(change.chatId);
        if (change.chatId === this.snapshot.activeChatId) return this.refreshMessages();
        return;
      case "notices":
        return this.refreshNotices();
      case "status":
        return this.set({ connection: change.status.state });
      case "incoming":
        this._stoppedTyping(change.message);
        return this._notifyIncoming(change.message);
      case "frame":
        return this._frame(change.frame);
      case "ended":
        return this._ended();
      default:
        return;
    }
  }

  _frame(frame) {
    if (isCallFrame(frame)) {
      if (this.messenger !== null) this.calls.onFrame(frame); // a call rings in the tab that is connected
      return;
    }
    if (frame.type === "resync") {
      // Events were missed: what they would have said about stories and sticker packs is read again.
      this.loadStories().catch(() => {});
      if (this.snapshot.stickerPacks !== null) this.loadStickerPacks().catch(() => {});
    } else if (frame.type === "story.new" || frame.type === "story.deleted") {
      this._storyEvent(frame);
    } else if (frame.type === "chat.join_request.new" || frame.type === "chat.join_request.resolved") {
      // chat info's list of requests (ui/invites.js) reads itself again; a new one is also said
      if (frame.type === "chat.join_request.new" && frame.request) {
        this.toast(`${frame.request.display_name || frame.request.username} asks to join ${this.chatTitle(this.chat(frame.chat_id)) || "a chat"}`);
      }
      const me = this.snapshot.me?.id;
      if (frame.type === "chat.join_request.resolved" && frame.user_id === me && frame.by !== me) {
        this.toast(frame.approved ? "Your request to join was approved." : "Your request to join was declined.");
      }
      dispatchEvent(new CustomEvent("sup:join-request", { detail: frame }));
    } else if (frame.type === "stickers.installed") {
      if (this.snapshot.stickerPacks !== null) this.loadStickerPacks().catch(() => {});
    } else if (frame.type === "typing") {
      const key = `${frame.chat_id}:${frame.user_id}`;
      // A notice relayed behind the message it announced (the server coalesces typing) is old news.
      if (frame.active && performance.now() - (this.lastMessageFrom.get(key) ?? -Infinity) < 2000) return;
      clearTimeout(this.typingTimers.get(key));
      const typing = { ...this.snapshot.typing };
      const inChat = { ...(typing[frame.chat_id] ?? {}) };
      if (frame.active && frame.user_id !== this.snapshot.me?.id) {
        inChat[frame.user_id] = true;
        this.typingTimers.set(
          key,
          setTimeout(() => this._frame({ ...frame, active: false }), (frame.expires_in ?? 6) * 1000),
        );
      } else delete inChat[frame.user_id];
      typing[frame.chat_id] = inChat;
      this.set({ typing });
    } else if (frame.type === "presence") {
      this.set({
        presence: {
          ...this.snapshot.presence,
          [frame.user_id]: { online: frame.online, last_seen_at: frame.last_seen_at },
        },
      });
    }
  }

  // ---- reading ---------------------------------------------------------------------------------------

  async refreshChats() {
    if (!this.local) return;
    const all = await this.local.chats();
    const chats = all
      .filter((c) => !c.left)
      .sort((a, b) => (b.activity ?? b.updated_at ?? 0) - (a.activity ?? a.updated_at ?? 0));
    this.set({ chats });
  }

  async refreshNotices() {
    if (!this.local) return;
    const notices = (await this.local.notices()).filter((n) => !n.dismissed);
    this.set({ notices });
  }

  async refreshMessages() {
    const chatId = this.snapshot.activeChatId;
    if (!chatId || !this.local) return;
    const messages = await this.local.messages(chatId, { limit: this.window });
    if (chatId !== this.snapshot.activeChatId) return;
    const chat = this.chat(chatId);
    const oldest = messages[0]?.seq ?? Infinity;
    this.set({ messages, hasOlder: messages.length >= this.window || (chat && !isEncrypted(chat) && oldest > 1) });
  }

  chat(chatId) {
    return this.snapshot.chats.find((c) => c.id === chatId) ?? null;
  }

  /** Open a chat: its newest messages, its plaintext history from the server, its members' presence. */
  async openChat(chatId) {
    if (this.snapshot.activeChatId !== chatId) {
      this.window = WINDOW;
      this.set({ activeChatId: chatId, messages: [], hasOlder: false });
    }
    await this.refreshMessages();
    const chat = this.chat(chatId);
    if (chat && !isEncrypted(chat) && !this.snapshot.messages.some((m) => m.seq < 1e15)) {
      await this.act("loadHistory", chatId, null).catch((error) => console.warn("history", error));
      await this.refreshMessages();
    }
    if (chat?.peer?.id && !(chat.peer.id in this.snapshot.presence)) {
      this.api
        .presence(chat.peer.id)
        .then((p) => this.set({ presence: { ...this.snapshot.presence, [p.user_id]: p } }))
        .catch(() => {});
    }
  }

  closeChat() {
    this.set({ activeChatId: null, messages: [] });
  }

  /** Scroll back: a page more from the local store, and from the server for a plaintext chat. */
  async loadOlder() {
    const chatId = this.snapshot.activeChatId;
    if (!chatId) return;
    const before = this.snapshot.messages.length;
    this.window = Math.min(this.window + WINDOW, 100_000);
    await this.refreshMessages();
    const chat = this.chat(chatId);
    if (this.snapshot.messages.length === before && chat && !isEncrypted(chat)) {
      const oldest = this.snapshot.messages.find((m) => m.seq < 1e15)?.seq ?? null;
      const { more } = await this.act("loadHistory", chatId, oldest);
      await this.refreshMessages();
      if (!more) this.set({ hasOlder: false });
    } else if (this.snapshot.messages.length === before) this.set({ hasOlder: false });
  }

  /** Back at the bottom: show the newest page only again, so a long chat does not fill memory. */
  trimWindow() {
    if (this.window > MAX_WINDOW || this.window > WINDOW * 2) {
      this.window = WINDOW;
      this.refreshMessages();
    }
  }

  // ---- people ----------------------------------------------------------------------------------------

  /** A user's profile, fetched once and kept. */
  user(userId) {
    const known = this.snapshot.users[userId];
    if (known) return known;
    if (!this._fetching) this._fetching = new Set();
    if (!this._fetching.has(userId) && this.api) {
      this._fetching.add(userId);
      this.api
        .user(userId)
        .then((u) => this.set({ users: { ...this.snapshot.users, [u.id]: u } }))
        .catch(() => {});
    }
    return null;
  }

  nameOf(userId) {
    if (userId === this.snapshot.me?.id) return "You";
    const u = this.snapshot.users[userId] ?? this.user(userId);
    return u ? u.display_name || u.username : "…";
  }

  chatTitle(chat) {
    if (!chat) return "";
    if (chat.type === "direct") return chat.peer ? chat.peer.display_name || chat.peer.username : "Direct chat";
    return chat.title || "Untitled";
  }

  previewOf(chat) {
    const p = chat.preview;
    if (!p) return "";
    return p.action ? this.systemText(p.action) : p.text;
  }

  systemText(action) {
    return systemText(action, (id) => this.nameOf(id));
  }

  // ---- notifications ---------------------------------------------------------------------------------

  /**
   * A desktop notification for a message from someone else, from the leading tab only (once per device), unless
   * its chat is open in a visible tab. What it may show (docs/web.md "Notifications"): who wrote, and where;
   * the text only for a chat the server can read anyway (a channel, an unencrypted group). An end-to-end
   * encrypted message says "New message": a notification leaves the page for the system's notification centre
   * and lock screen, which this page's encryption does not cover.
   */
  /** A message from someone ends their typing in that chat: it is what they were typing. */
  _stoppedTyping(record) {
    const key = `${record.chat_id}:${record.sender_id}`;
    this.lastMessageFrom.set(key, performance.now());
    if (this.lastMessageFrom.size > 1000) this.lastMessageFrom.delete(this.lastMessageFrom.keys().next().value);
    if (this.snapshot.typing[record.chat_id]?.[record.sender_id]) {
      this._frame({ type: "typing", chat_id: record.chat_id, user_id: record.sender_id, active: false });
    }
  }

  async _notifyIncoming(record) {
    const chatId = record.chat_id;
    const visible = document.visibilityState === "visible" && chatId === this.snapshot.activeChatId;
    if (visible || !this.messenger) return; // the leading tab notifies, once
    if (typeof Notification === "undefined" || Notification.permission !== "granted") return;
    const chat = this.chat(chatId);
    if (chat?.muted) return; // no mutes yet; a muted chat will notify nothing at all
    const profile = this.snapshot.users[record.sender_id] ?? (await this.api.user(record.sender_id).catch(() => null));
    const sender = profile ? profile.display_name || profile.username : "Someone";
    const title = chat?.type === "direct" || !chat ? sender : `${sender} in ${this.chatTitle(chat)}`;
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

  /** Ask for permission to show notifications (call from a click). */
  async enableNotifications() {
    if (typeof Notification === "undefined") return "unsupported";
    return Notification.requestPermission();
  }

  // ---- stories (docs/api.md "Stories": not end-to-end encrypted) -----------------------------------------

  /** Every author with stories I may see, page by page. */
  async loadStories() {
    const authors = [];
    let before;
    do {
      const page = await this.api.stories(before);
      authors.push(...page.authors);
      before = page.next_cursor;
    } while (before);
    this._setStories(authors);
  }

  /** Keep what has not expired (a story is gone at `expires_at`, and no event says so), and look again then. */
  _setStories(groups) {
    const now = Date.now();
    const live = [];
    for (const group of groups) {
      const stories = group.stories.filter((st) => st.expires_at > now);
      if (stories.length) live.push({ ...group, stories, all_seen: stories.every((st) => st.seen) });
    }
    this.set({ stories: live });
    clearTimeout(this.storyTimer);
    const next = Math.min(...live.flatMap((g) => g.stories.map((st) => st.expires_at)));
    if (Number.isFinite(next)) {
      // setTimeout takes at most 2^31-1 ms; a story lives a day or so
      this.storyTimer = setTimeout(() => this._setStories(this.snapshot.stories ?? []), Math.min(next - now + 50, 2 ** 31 - 1));
    }
  }

  /** story.new (the author first: whoever posted last comes first) and story.deleted. */
  _storyEvent(frame) {
    const groups = this.snapshot.stories;
    if (groups === null) return;
    if (frame.type === "story.deleted") {
      this._setStories(groups.map((g) => ({ ...g, stories: g.stories.filter((st) => st.id !== frame.story_id) })));
      return;
    }
    const { story, author } = frame;
    const found = groups.find((g) => g.author.id === author.id);
    const stories = [story, ...(found?.stories ?? []).filter((st) => st.id !== story.id)];
    this._setStories([{ author, stories, all_seen: false }, ...groups.filter((g) => g !== found)]);
  }

  /** Mark a story of someone else viewed (its author sees who viewed it); once. */
  async viewStory(story) {
    if (story.seen || story.author_id === this.snapshot.me?.id) return;
    this._patchStory(story.id, { seen: true });
    await this.api.viewStory(story.id).catch((error) => console.warn("could not mark a story viewed", error));
  }

  _patchStory(storyId, fields) {
    const groups = this.snapshot.stories ?? [];
    this._setStories(
      groups.map((g) => ({ ...g, stories: g.stories.map((st) => (st.id === storyId ? { ...st, ...fields } : st)) })),
    );
  }

  /**
   * Put up a photo or video (uploaded as it is: stories are not end-to-end encrypted) for an audience:
   * "chats", "contacts", "close_friends", or "contacts_except" with the list of people left out.
   */
  async postStory({ file, audience, caption = "", listId = null }) {
    const media = await this.api.upload(file, { filename: file.name || "story" });
    const body = { media_id: media.id, audience, caption };
    if (listId) body.list_id = listId;
    const story = await this.api.postStory(body);
    this._storyEvent({ type: "story.new", story, author: this.snapshot.me });
    return story;
  }

  async deleteStory(storyId) {
    await this.api.deleteStory(storyId);
    this._storyEvent({ type: "story.deleted", story_id: storyId });
  }

  /**
   * Answer a story in the direct chat with its author: an encrypted message whose envelope names the story
   * (`story: {id, author_id}`), so the server learns neither that it answers a story nor which.
   */
  async replyToStory(story, author, text) {
    let chat = this.snapshot.chats.find((c) => c.type === "direct" && c.peer?.id === story.author_id);
    if (!chat) chat = await this.act("createDirect", author.username);
    return this.act("send", chat.id, { text, story: { id: story.id, author_id: story.author_id } });
  }

  // ---- stickers --------------------------------------------------------------------------------------

  /** My installed packs, in my order (read again when another device of mine changes them). */
  async loadStickerPacks() {
    const packs = await this.api.installedStickerPacks();
    this.set({ stickerPacks: packs });
    return packs;
  }

  /** A sticker a message names: its image (`media_id`) and emoji; fetched once. */
  stickerInfo(stickerId) {
    let found = this.stickers.get(stickerId);
    if (!found) {
      found = this.api.sticker(stickerId);
      found.catch(() => this.stickers.delete(stickerId));
      this.stickers.set(stickerId, found);
    }
    return found;
  }

  sendSticker(chatId, stickerId) {
    return this.act("send", chatId, { stickerId });
  }

  // ---- sending, with what the screens need -----------------------------------------------------------

  async send(chatId, text, replyTo = null) {
    this.stopTyping(chatId);
    return this.act("send", chatId, { text, replyTo });
  }

  async sendFile(chatId, file, { text = "", name = file.name ?? "file", mime = file.type } = {}) {
    return this.act("send", chatId, { text: text || undefined, file, name, mime });
  }

  typing(chatId) {
    const now = Date.now();
    if (this._typingSent && this._typingSent.chatId === chatId && now - this._typingSent.at < 3000) return;
    this._typingSent = { chatId, at: now };
    this.act("typing", chatId, true).catch(() => {});
  }

  stopTyping(chatId) {
    if (this._typingSent?.chatId === chatId) {
      this._typingSent = null;
      this.act("typing", chatId, false).catch(() => {});
    }
  }

  /** A readable message from an error of an action. */
  static describe(error) {
    if (error instanceof ApiError || error?.code) {
      const codes = {
        username_taken: "That username is taken.",
        invalid_credentials: "Wrong username or password.",
        invalid_totp: "That code is wrong or was already used.",
        registration_closed: "This server does not accept new accounts.",
        invalid_invite: "An invite code is needed, or this one is unknown, expired or used up.",
        not_found: "Not found.",
        rate_limited: "Too many attempts: wait a moment and try again.",
        forbidden: "You may not do that here.",
      };
      return codes[error.code] ?? error.message;
    }
    return error?.message ?? String(error);
  }
}
