// The one place the UI reads from. `AppState` holds a snapshot (plain objects the screens render), tells
// subscribers when it changes, and offers the actions the screens call. It starts the session (sign up,
// log in, a reload), takes part in the tabs' election (tabs.js), and runs the messenger when this tab leads;
// when it follows, the same actions go to the leading tab. Screens never see keys or the crypto modules.

import { ApiError, SessionEnded } from "../api/http.js";
import { DeviceStore } from "../crypto/store.js";
import { CallController } from "../client/calls.js";
import { isEncrypted, systemText } from "../client/chats.js";
import { MediaCache } from "../client/media.js";
import { Messenger } from "../client/messenger.js";
import { LocalStore } from "../store/db.js";
import { LiveEvents } from "./events.js";
import * as sessions from "./session.js";
import { Stories } from "./stories.js";
import { Tabs } from "./tabs.js";
import { MessageWindow } from "./window.js";

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
    this.stories = new Stories(this);
    this.events = new LiveEvents(this);
    /** where closing the story viewer goes back to (the screen it was opened from) */
    this.storyReturn = "/";
    /** @type {Map<string, Promise<object>>} sticker id -> the sticker (public, never changes) */
    this.stickers = new Map();
    this.local = null;
    this.api = null;
    this.tabs = null;
    this.messenger = null;
    this.media = null;
    this.messageWindow = new MessageWindow(this);
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
    return sessions.sessionApi({
      local: () => this.local,
      shareAccess: (access) => this.tabs?.post({ kind: "access", access }),
      onEnded: () => this._ended(),
    });
  }

  /** Sign up; on success this device is signed in and its keys are made and published. */
  async signUp(fields) {
    const { session, access } = await sessions.signUp(this.local, fields);
    await this._start(session, access);
  }

  /** Log in (a new device); `totp` or `recovery` when the server answered totp_required. */
  async logIn(fields) {
    const { session, access } = await sessions.logIn(this.local, fields);
    await this._start(session, access);
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
          this.events.changed(change);
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
    if (deviceId) await sessions.destroyKeys(deviceId);
    await this.local.destroy();
    this.local = await LocalStore.open();
    this.stories.stop();
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
    if (this.messenger === null) throw new Error(`cannot run ${method} here`);
    return this.messenger.run(method, args);
  }

  /** An action of the messenger: here if this tab leads, else in the leading tab. */
  act(method, ...args) {
    if (this.messenger !== null) return Promise.resolve().then(() => this._run(method, args));
    return this.tabs.call(method, args);
  }

  _fromTab(message) {
    if (message.kind === "change") this.events.changed(message.change);
    else if (message.kind === "access") this.api?.setAccess(message.access);
    else if (message.kind === "logout") this._ended();
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

  chat(chatId) {
    return this.snapshot.chats.find((c) => c.id === chatId) ?? null;
  }

  // the open chat's messages are kept by window.js

  refreshMessages() {
    return this.messageWindow.refresh();
  }

  openChat(chatId) {
    return this.messageWindow.open(chatId);
  }

  closeChat() {
    this.set({ activeChatId: null, messages: [] });
  }

  loadOlder() {
    return this.messageWindow.older();
  }

  trimWindow() {
    this.messageWindow.trim();
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

  /** Ask for permission to show notifications (call from a click). */
  async enableNotifications() {
    if (typeof Notification === "undefined") return "unsupported";
    return Notification.requestPermission();
  }

  // ---- stories (kept by stories.js; docs/api.md "Stories": not end-to-end encrypted) ------------------

  loadStories() {
    return this.stories.load();
  }

  _setStories(groups) {
    this.stories.show(groups);
  }

  viewStory(story) {
    return this.stories.view(story);
  }

  postStory(fields) {
    return this.stories.post(fields);
  }

  deleteStory(storyId) {
    return this.stories.remove(storyId);
  }

  replyToStory(story, author, text) {
    return this.stories.reply(story, author, text);
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
