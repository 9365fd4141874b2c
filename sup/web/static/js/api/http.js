// The REST API (docs/api.md), as one object per signed-in device: JSON in and out, problem+json errors
// as ApiError with the server's stable `code`, and the access token refreshed when it expires.
//
// Tokens: the access token lives in memory only; the refresh token is kept by the caller (IndexedDB, see
// store/db.js) through the `tokens` hooks. Refresh tokens rotate on every use and a reused one ends the
// session, so a refresh never runs twice at once, in this tab or another: it runs under the Web Lock
// `sup-refresh`, re-reads the stored refresh token inside it, and skips the refresh when another tab has
// just done it (that tab shares the new access token over the BroadcastChannel, see state/tabs.js).

/** An error answer of the API: `status`, the stable `code` (docs/api.md "Errors") and the whole `body`. */
export class ApiError extends Error {
  /** @param {number} status @param {Record<string, any>} body */
  constructor(status, body) {
    super(body?.detail || body?.title || `HTTP ${status}`);
    this.name = "ApiError";
    this.status = status;
    this.code = body?.code ?? "http_" + status;
    this.body = body ?? {};
  }
}

/** The session is over (logged out, revoked, refresh token reused): sign in again. */
export class SessionEnded extends Error {
  constructor(message) {
    super(message);
    this.name = "SessionEnded";
  }
}

/** The server could not be reached (no network, or the connection dropped): worth trying again later. */
export class Unreachable extends Error {
  constructor(message) {
    super(message);
    this.name = "Unreachable";
  }
}

/** Whether trying again later may succeed: the server was not reached, or was busy or restarting. */
export function isTransient(error) {
  return error instanceof Unreachable || (error instanceof ApiError && (error.status >= 500 || error.status === 429));
}

/** fetch, with a network failure (a TypeError in every browser, worded differently) as Unreachable. */
async function reach(url, init) {
  try {
    return await fetch(url, init);
  } catch (error) {
    if (error instanceof TypeError) throw new Unreachable(`the server could not be reached (${error.message})`);
    throw error;
  }
}

const SESSION_OVER = new Set(["invalid_token", "invalid_refresh_token", "refresh_token_reused"]);
export const API = "/api/v1";

/**
 * @typedef {object} TokenHooks
 * @property {() => Promise<string | null>} loadRefresh the stored refresh token
 * @property {(session: object) => Promise<void>} saveSession store a new session (its refresh token) before use
 * @property {(access: string) => void} [shareAccess] tell the other tabs the new access token
 */

export class Api {
  /** @param {{base?: string, tokens?: TokenHooks, onSessionEnded?: () => void}} options */
  constructor({ base = "", tokens = null, onSessionEnded = () => {} } = {}) {
    this.base = base;
    this.tokens = tokens;
    this.access = null;
    this.onSessionEnded = onSessionEnded;
  }

  // ---- transport ---------------------------------------------------------------------------------

  /**
   * One request; JSON bodies are encoded, JSON answers decoded, errors thrown as ApiError.
   * @param {string} method @param {string} path under /api/v1
   * @param {{json?: any, body?: BodyInit, query?: Record<string, any>, auth?: boolean, headers?: Record<string,string>,
   *   raw?: boolean}} [options] raw: return the Response (downloads)
   */
  async request(method, path, { json, body, query, auth = true, headers = {}, raw = false } = {}) {
    let url = this.base + API + path;
    if (query) {
      const params = new URLSearchParams();
      for (const [k, v] of Object.entries(query)) if (v !== undefined && v !== null) params.set(k, String(v));
      const text = params.toString();
      if (text) url += "?" + text;
    }
    const send = async () => {
      const h = { ...headers };
      if (json !== undefined) {
        h["Content-Type"] = "application/json";
        body = JSON.stringify(json);
      }
      if (auth) {
        if (this.access === null) await this.refresh(null);
        h.Authorization = `Bearer ${this.access}`;
      }
      return reach(url, { method, headers: h, body, credentials: "omit", cache: "no-store" });
    };
    const usedToken = this.access;
    let response = await send();
    if (auth && response.status === 401) {
      const problem = await response
        .clone()
        .json()
        .catch(() => ({}));
      if (problem.code === "token_expired" || problem.code === "unauthenticated") {
        await this.refresh(usedToken);
        response = await send();
      } else if (SESSION_OVER.has(problem.code)) {
        this._ended();
        throw new SessionEnded(problem.detail || "this session has ended");
      }
    }
    if (raw && response.ok) return response;
    if (response.status === 204) return null;
    const type = response.headers.get("Content-Type") || "";
    const data = type.includes("json") ? await response.json().catch(() => null) : null;
    if (!response.ok) throw new ApiError(response.status, data);
    return data;
  }

  get(path, options) {
    return this.request("GET", path, options);
  }
  post(path, json, options = {}) {
    return this.request("POST", path, { ...options, json });
  }
  patch(path, json) {
    return this.request("PATCH", path, { json });
  }
  put(path, json) {
    return this.request("PUT", path, { json });
  }
  del(path, options) {
    return this.request("DELETE", path, options);
  }

  _ended() {
    this.access = null;
    this.onSessionEnded();
  }

  /**
   * Get a fresh access token. `stale` is the token a request failed with: when another tab (or an
   * earlier call here) has replaced it meanwhile, that one is used and nothing is refreshed.
   */
  async refresh(stale) {
    if (this.tokens === null) throw new SessionEnded("not signed in");
    const run = async () => {
      if (this.access !== null && this.access !== stale) return;
      const refreshToken = await this.tokens.loadRefresh();
      if (!refreshToken) {
        this._ended();
        throw new SessionEnded("not signed in");
      }
      const response = await reach(this.base + API + "/auth/refresh", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refresh_token: refreshToken }),
        credentials: "omit",
        cache: "no-store",
      });
      const data = await response.json().catch(() => null);
      if (!response.ok) {
        if (response.status === 401 && SESSION_OVER.has(data?.code)) {
          this._ended();
          throw new SessionEnded(data?.detail || "this session has ended");
        }
        throw new ApiError(response.status, data);
      }
      await this.tokens.saveSession(data); // before the new tokens are used: the old refresh token is dead
      this.access = data.access_token;
      this.tokens.shareAccess?.(data.access_token);
    };
    if (this._refreshing) return this._refreshing;
    this._refreshing = (globalThis.navigator?.locks ? navigator.locks.request("sup-refresh", run) : run()).finally(
      () => (this._refreshing = null),
    );
    return this._refreshing;
  }

  /** Another tab refreshed: use its access token. */
  setAccess(token) {
    this.access = token;
  }

  // ---- accounts ----------------------------------------------------------------------------------

  register(fields) {
    return this.post("/auth/register", fields, { auth: false });
  }
  login(fields) {
    return this.post("/auth/login", fields, { auth: false });
  }
  logout() {
    return this.post("/auth/logout");
  }
  me() {
    return this.get("/users/me");
  }
  user(userId) {
    return this.get(`/users/${encodeURIComponent(userId)}`);
  }
  userByUsername(username) {
    return this.get(`/users/by-username/${encodeURIComponent(username)}`);
  }
  updateProfile(fields) {
    return this.patch("/users/me", fields);
  }
  devices() {
    return this.get("/devices");
  }
  renameDevice(deviceId, name) {
    return this.patch(`/devices/${encodeURIComponent(deviceId)}`, { name });
  }
  revokeDevice(deviceId) {
    return this.del(`/devices/${encodeURIComponent(deviceId)}`);
  }
  changePassword(current, next) {
    return this.post("/auth/password", { current_password: current, new_password: next });
  }
  twoFactor() {
    return this.get("/auth/2fa");
  }
  enable2fa(password) {
    return this.post("/auth/2fa/enable", { password });
  }
  verify2fa(code) {
    return this.post("/auth/2fa/verify", { code });
  }
  disable2fa(fields) {
    return this.post("/auth/2fa/disable", fields);
  }
  contacts(after) {
    return this.get("/users/me/contacts", { query: { limit: 200, after } });
  }
  addContact(userId) {
    return this.post("/users/me/contacts", { user_id: userId });
  }
  removeContact(userId) {
    return this.del(`/users/me/contacts/${encodeURIComponent(userId)}`);
  }
  blocks(after) {
    return this.get("/users/me/blocks", { query: { limit: 200, after } });
  }
  block(userId) {
    return this.post("/users/me/block", { user_id: userId });
  }
  unblock(userId) {
    return this.del(`/users/me/block/${encodeURIComponent(userId)}`);
  }
  presence(userId) {
    return this.get(`/users/${encodeURIComponent(userId)}/presence`);
  }
  setPresenceVisibility(visibility) {
    return this.put("/users/me/presence", { visibility });
  }

  // ---- chats and messages ------------------------------------------------------------------------

  async chats() {
    const all = [];
    let before;
    for (;;) {
      const page = await this.get("/chats", { query: { limit: 200, before } });
      all.push(...page.items);
      if (!page.next_cursor) return all;
      before = page.next_cursor;
    }
  }
  chat(chatId) {
    return this.get(`/chats/${encodeURIComponent(chatId)}`);
  }
  createChat(fields) {
    return this.post("/chats", fields);
  }
  updateChat(chatId, fields) {
    return this.patch(`/chats/${encodeURIComponent(chatId)}`, fields);
  }
  deleteChat(chatId) {
    return this.del(`/chats/${encodeURIComponent(chatId)}`);
  }
  leaveChat(chatId) {
    return this.post(`/chats/${encodeURIComponent(chatId)}/leave`);
  }
  async members(chatId) {
    return (await this.membersAndCount(chatId)).items;
  }
  /** The members I may see (in a channel, only myself unless I manage members) and how many there are. */
  async membersAndCount(chatId) {
    const items = [];
    let after;
    for (;;) {
      const page = await this.get(`/chats/${encodeURIComponent(chatId)}/members`, { query: { limit: 200, after } });
      items.push(...page.items);
      if (!page.next_cursor) return { items, count: page.member_count ?? items.length };
      after = page.next_cursor;
    }
  }
  addMembers(chatId, userIds) {
    return this.post(`/chats/${encodeURIComponent(chatId)}/members`, { user_ids: userIds });
  }
  removeMember(chatId, userId) {
    return this.del(`/chats/${encodeURIComponent(chatId)}/members/${encodeURIComponent(userId)}`);
  }
  setMemberRole(chatId, userId, roleId) {
    return this.patch(`/chats/${encodeURIComponent(chatId)}/members/${encodeURIComponent(userId)}`, {
      role_id: roleId,
    });
  }
  roles(chatId) {
    return this.get(`/chats/${encodeURIComponent(chatId)}/roles`);
  }
  pins(chatId) {
    return this.get(`/chats/${encodeURIComponent(chatId)}/pins`);
  }
  history(chatId, { before, after, limit = 50 } = {}) {
    return this.get(`/messages/chat/${encodeURIComponent(chatId)}`, { query: { before, after, limit } });
  }
  sendMessage(fields) {
    return this.post("/messages", fields);
  }
  message(messageId) {
    return this.get(`/messages/${encodeURIComponent(messageId)}`);
  }
  editMessage(messageId, fields) {
    return this.patch(`/messages/${encodeURIComponent(messageId)}`, fields);
  }
  deleteMessage(messageId, scope) {
    return this.del(`/messages/${encodeURIComponent(messageId)}`, { query: { scope } });
  }
  react(messageId, emoji) {
    return this.post(`/messages/${encodeURIComponent(messageId)}/reactions`, { emoji });
  }
  unreact(messageId, emoji) {
    return this.del(`/messages/${encodeURIComponent(messageId)}/reactions`, { query: { emoji } });
  }
  forward(messageId, chatId, clientId) {
    return this.post(`/messages/${encodeURIComponent(messageId)}/forward`, { chat_id: chatId, client_id: clientId });
  }
  pin(messageId) {
    return this.post(`/messages/${encodeURIComponent(messageId)}/pin`);
  }
  unpin(messageId) {
    return this.del(`/messages/${encodeURIComponent(messageId)}/pin`);
  }
  markRead(chatId, seq) {
    return this.post(`/messages/chat/${encodeURIComponent(chatId)}/read`, { seq });
  }
  typing(chatId, active) {
    return this.post(`/chats/${encodeURIComponent(chatId)}/typing`, { active });
  }

  // ---- keys --------------------------------------------------------------------------------------

  publishKeys(body) {
    return this.post("/crypto/keys", body);
  }
  uploadPrekeys(body) {
    return this.post("/crypto/prekeys", body);
  }
  prekeyStatus() {
    return this.get("/crypto/prekeys");
  }
  async deviceKeys(userId, deviceId) {
    return this.get(`/crypto/keys/${encodeURIComponent(userId)}/${encodeURIComponent(deviceId)}`);
  }
  async userKeys(userId) {
    return (await this.get(`/crypto/keys/${encodeURIComponent(userId)}/all`)).devices;
  }
  prekeyBundle(userId, deviceId) {
    return this.get(`/crypto/prekeys/${encodeURIComponent(userId)}/${encodeURIComponent(deviceId)}`);
  }
  postSenderKey(chatId, distributionId, recipients) {
    return this.post(`/crypto/sender-keys/${encodeURIComponent(chatId)}`, {
      distribution_id: distributionId,
      recipients,
    });
  }

  // ---- media -------------------------------------------------------------------------------------

  /** Upload bytes as the raw body. @param {Blob | Uint8Array} data */
  upload(data, { encrypted = false, filename = "", purpose = "attachment" } = {}) {
    return this.request("POST", "/media/upload", {
      body: data,
      query: { encrypted: encrypted ? "true" : undefined, filename: filename || undefined, purpose },
      headers: { "Content-Type": "application/octet-stream" },
    });
  }
  media(mediaId) {
    return this.get(`/media/${encodeURIComponent(mediaId)}`);
  }
  signedUrl(mediaId, variant = "original") {
    return this.get(`/media/${encodeURIComponent(mediaId)}/url`, { query: { variant } });
  }
  /** A file once the server has processed it (`status` "ready" or "failed"), asking again until then. */
  async processed(mediaId, { within = 60_000 } = {}) {
    const deadline = Date.now() + within;
    for (let pause = 100; ; pause = Math.min(1000, pause * 2)) {
      const media = await this.media(mediaId);
      if (media.status !== "pending") return media;
      if (Date.now() > deadline) throw new Error("the server is still processing the file");
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  }
  /** The stored bytes of a file (an encrypted blob as it was uploaded). */
  async download(mediaId) {
    const response = await this.request("GET", `/media/download/${encodeURIComponent(mediaId)}`, { raw: true });
    return new Uint8Array(await response.arrayBuffer());
  }

  // ---- stories (docs/api.md "Stories"; not end-to-end encrypted) -----------------------------------

  stories(before) {
    return this.get("/stories", { query: { limit: 100, before } });
  }
  story(storyId) {
    return this.get(`/stories/${encodeURIComponent(storyId)}`);
  }
  postStory(fields) {
    return this.post("/stories", fields);
  }
  deleteStory(storyId) {
    return this.del(`/stories/${encodeURIComponent(storyId)}`);
  }
  viewStory(storyId) {
    return this.post(`/stories/${encodeURIComponent(storyId)}/view`);
  }
  storyViews(storyId, before) {
    return this.get(`/stories/${encodeURIComponent(storyId)}/views`, { query: { limit: 100, before } });
  }
  async storyLists() {
    return (await this.get("/stories/lists")).lists;
  }
  storyList(listId) {
    return this.get(`/stories/lists/${encodeURIComponent(listId)}`);
  }
  createStoryList(name, userIds) {
    return this.post("/stories/lists", { name, user_ids: userIds });
  }
  setStoryList(listId, userIds) {
    return this.patch(`/stories/lists/${encodeURIComponent(listId)}`, { user_ids: userIds });
  }

  // ---- sticker packs (docs/api.md "Sticker packs"; public, not encrypted) ----------------------------

  async installedStickerPacks() {
    return (await this.get("/stickers/installed")).packs;
  }
  async installStickerPack(packId) {
    return (await this.post("/stickers/installed", { pack_id: packId })).packs;
  }
  async reorderStickerPacks(packIds) {
    return (await this.put("/stickers/installed", { pack_ids: packIds })).packs;
  }
  uninstallStickerPack(packId) {
    return this.del(`/stickers/installed/${encodeURIComponent(packId)}`);
  }
  async myStickerPacks() {
    return (await this.get("/stickers/packs")).packs;
  }
  stickerPack(packId) {
    return this.get(`/stickers/packs/${encodeURIComponent(packId)}`);
  }
  stickerPackBySlug(slug) {
    return this.get(`/stickers/packs/by-slug/${encodeURIComponent(slug)}`);
  }
  createStickerPack(title) {
    return this.post("/stickers/packs", { title });
  }
  addSticker(packId, mediaId, emoji) {
    return this.post(`/stickers/packs/${encodeURIComponent(packId)}/stickers`, { media_id: mediaId, emoji });
  }
  removeSticker(packId, stickerId) {
    return this.del(`/stickers/packs/${encodeURIComponent(packId)}/stickers/${encodeURIComponent(stickerId)}`);
  }
  publishStickerPack(packId) {
    return this.post(`/stickers/packs/${encodeURIComponent(packId)}/publish`);
  }
  sticker(stickerId) {
    return this.get(`/stickers/${encodeURIComponent(stickerId)}`);
  }
}
