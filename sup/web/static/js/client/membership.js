// Chats and members as the server has them, for the messenger (messenger.js): the list synced, a chat's
// members fetched, chats created, members added and removed, chats left and deleted.

import { isEncrypted, previewText } from "./chats.js";
import { Work } from "./receive.js";

export class Membership {
  /** @param {import("./messenger.js").Messenger} messenger */
  constructor(messenger) {
    this.m = messenger;
  }

  /** Every chat from the server, merged with what is stored (previews of encrypted chats stay local). */
  async syncChats() {
    const listed = await this.m.api.chats();
    const work = new Work();
    const seen = new Set();
    for (const chat of listed) {
      seen.add(chat.id);
      const pinned = await this.m.pin(chat);
      pinned.left = false;
      pinned.activity = Math.max(pinned.activity ?? 0, chat.last_message?.created_at ?? chat.updated_at ?? 0);
      if (!isEncrypted(pinned) && chat.last_message) {
        const last = chat.last_message;
        const system = last.kind === "system" ? this.m.inbox.systemRecord(last) : null;
        pinned.preview = {
          // a system message's body is its action as JSON (a join, a new title): the list says it in words
          text: previewText(system ?? { text: last.body, status: "ok" }),
          action: system?.action,
          seq: chat.last_message.seq,
          sender_id: system ? null : chat.last_message.sender_id,
        };
      }
      this.m.putChat(pinned, work);
      if (!pinned.member_ids || (pinned.type === "direct" && !pinned.peer)) {
        work.after.push(() => this.fetchMembers(pinned.id));
      }
    }
    for (const [chatId, chat] of this.m.chats)
      if (!seen.has(chatId) && !chat.left) this.m.putChat({ ...chat, left: true }, work);
    await this.m.store(work);
  }

  async refreshChat(chatId) {
    const work = new Work();
    await this.m.rememberChat(await this.m.api.chat(chatId), work);
    await this.m.store(work);
    await this.fetchMembers(chatId);
  }

  /** A chat's members (for a direct chat, who the other person is), kept on the chat for the screens. */
  async fetchMembers(chatId) {
    const { items: list, count } = await this.m.api.membersAndCount(chatId);
    const chat = this.m.chats.get(chatId);
    if (!chat) return;
    const other = list.find((m) => m.user_id !== this.m.userId) ?? list[0];
    const work = new Work();
    const next = { ...chat, member_ids: list.map((m) => m.user_id), member_count: count };
    if (chat.type === "direct" && other) {
      next.peer = { id: other.user_id, username: other.username, display_name: other.display_name };
    }
    this.m.putChat(next, work);
    await this.m.store(work);
  }

  /** After events were missed: who is listed as a member again was added back meanwhile. */
  async recheckRemoved(chatIds) {
    for (const chatId of chatIds) {
      await this.m._exclusive(async () => {
        if (!this.m.removed.has(chatId)) return;
        const members = (await this.m.api.members(chatId)).map((m) => m.user_id);
        const work = new Work();
        this.m.inbox.membersBack(work, chatId, members);
        await this.m.store(work);
      });
    }
  }

  async createDirect(username) {
    const user = await this.m.api.userByUsername(username.trim().replace(/^@/, ""));
    if (user.id === this.m.userId) throw new Error("That is you: pick someone else.");
    const chat = await this.m.api.createChat({ type: "direct", member_ids: [user.id] });
    const work = new Work();
    const pinned = await this.m.rememberChat(chat, work);
    pinned.peer = { id: user.id, username: user.username, display_name: user.display_name };
    pinned.member_ids = [this.m.userId, user.id];
    work.after = [];
    this.m.putChat(pinned, work);
    await this.m.store(work);
    return pinned;
  }

  async _userIds(usernames) {
    const ids = [];
    for (const name of usernames) ids.push((await this.m.api.userByUsername(name.trim().replace(/^@/, ""))).id);
    return ids;
  }

  /** A group (encrypted unless asked otherwise) or a channel, with members given by username. */
  async createGroup({ type = "group", title, usernames = [], encrypted = true }) {
    const ids = await this._userIds(usernames);
    const body = { type, title, member_ids: ids };
    if (type === "group") body.encrypted = encrypted;
    const chat = await this.m.api.createChat(body);
    const work = new Work();
    const pinned = await this.m.rememberChat(chat, work);
    await this.m.store(work);
    return pinned;
  }

  async addMembers(chatId, usernames) {
    const ids = await this._userIds(usernames);
    const answer = await this.m.api.addMembers(chatId, ids);
    this.m.members.delete(chatId);
    return answer;
  }

  async removeMember(chatId, userId) {
    await this.m.api.removeMember(chatId, userId);
    this.m.members.delete(chatId);
    const work = new Work();
    this.m.needRotation(chatId, work);
    await this.m.store(work);
  }

  async leave(chatId) {
    await this.m.api.leaveChat(chatId);
    const work = new Work();
    this.m.forgetChat(chatId, work);
    await this.m.store(work);
  }

  async deleteChat(chatId) {
    await this.m.api.deleteChat(chatId);
    const work = new Work();
    this.m.forgetChat(chatId, work);
    await this.m.store(work);
  }
}
