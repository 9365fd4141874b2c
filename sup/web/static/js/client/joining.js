// Joining chats (docs/api.md "Joining chats"): public chats joined directly, invite links (whose code goes
// in request bodies, never in a URL the server sees: the web client's link keeps it in the fragment,
// #/join/<code>), and the join requests an admin approves. After a join the chat list is read again, so
// the chat is there to open.

const enc = encodeURIComponent;

/** The code of a link as people paste it: a whole link (…#/join/<code>, …/join/<code>) or the bare code. */
export function codeOf(text) {
  const trimmed = String(text ?? "").trim();
  const found = trimmed.match(/(?:#\/|\/)join\/([A-Za-z0-9_-]+)/);
  return found ? found[1] : trimmed;
}

/** The link to share for an invite: this server's address with the code in the fragment. */
export function inviteLink(code) {
  return `${location.origin}/#/join/${code}`;
}

async function joined(app, answer) {
  if (answer?.status === "joined" || answer?.status === "member") {
    await app.act("syncChats").catch(() => {});
    // what was said before I joined, in a chat the server can read (an encrypted one starts empty)
    await app.act("loadHistory", answer.chat_id, null).catch(() => {});
  }
  return answer;
}

export async function joinPublic(app, chatId) {
  return joined(app, await app.api.post(`/chats/${enc(chatId)}/join`));
}

export function previewInvite(app, code) {
  return app.api.post("/chat-invites/preview", { code });
}

export async function joinByInvite(app, code) {
  return joined(app, await app.api.post("/chat-invites/join", { code }));
}

export async function invites(app, chatId) {
  return (await app.api.get(`/chats/${enc(chatId)}/invites`, { query: { limit: 100 } })).items;
}

/** @param {{name?: string, expires_in?: number, max_uses?: number, requires_approval?: boolean}} fields */
export function createInvite(app, chatId, fields) {
  return app.api.post(`/chats/${enc(chatId)}/invites`, fields);
}

export function revokeInvite(app, chatId, inviteId) {
  return app.api.del(`/chats/${enc(chatId)}/invites/${enc(inviteId)}`);
}

export async function joinRequests(app, chatId) {
  return (await app.api.get(`/chats/${enc(chatId)}/join-requests`, { query: { limit: 100 } })).items;
}

export function approveRequest(app, chatId, userId) {
  return app.api.post(`/chats/${enc(chatId)}/join-requests/${enc(userId)}/approve`);
}

export function declineRequest(app, chatId, userId) {
  return app.api.del(`/chats/${enc(chatId)}/join-requests/${enc(userId)}`);
}
