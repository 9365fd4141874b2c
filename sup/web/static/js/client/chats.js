// Small facts about chats and messages that the messenger and the state both need.

/** Every direct chat is end-to-end encrypted, whatever the server says (docs/e2e.md "Encryption is pinned"). */
export function isEncrypted(chat) {
  return Boolean(chat?.encrypted) || chat?.type === "direct";
}

/** A one-line preview of a stored message, for the chat list and notifications. */
export function previewText(record) {
  if (!record) return "";
  switch (record.status) {
    case "deleted":
      return "Message deleted";
    case "undecryptable":
      return "A message that could not be decrypted";
    case "system":
      return systemText(record.action ?? {}, () => "someone");
    default:
      break;
  }
  const text = (record.text ?? "").trim();
  if (text) return text.length > 120 ? text.slice(0, 119) + "…" : text;
  if (record.sticker_id) return "Sticker";
  const file = record.attachments?.[0];
  if (file) {
    const mime = file.mime ?? "";
    if (mime.startsWith("image/")) return "Photo";
    if (mime.startsWith("video/")) return "Video";
    if (mime.startsWith("audio/")) return "Voice message";
    return file.name ? `File: ${file.name}` : "File";
  }
  return "";
}

/**
 * A system message in words. `name(userId)` gives a person's name.
 * @param {Record<string, any>} action @param {(userId: string) => string} name
 */
export function systemText(action, name) {
  switch (action.action) {
    case "members_added":
      return `${(action.user_ids ?? []).map(name).join(", ")} joined`;
    case "member_removed":
      return `${name(action.user_id)} was removed`;
    case "member_left":
      return `${name(action.user_id)} left`;
    case "member_joined":
      return `${name(action.user_id)} joined${action.via === "invite" ? " with an invite link" : ""}`;
    case "visibility_changed":
      return action.visibility === "public" ? "The chat is public now" : "The chat is private now";
    case "title_changed":
      return `The title is now “${action.title}”`;
    case "call":
      return callText(action, name);
    default:
      return "The chat changed";
  }
}

/** A call's line in the history: missed, declined, or how long it lasted. */
function callText(action, name) {
  const what = action.video ? "Video call" : "Call";
  if (action.outcome === "missed") return `Missed ${what.toLowerCase()} from ${name(action.caller_id)}`;
  if (action.outcome === "declined") return `${what} declined`;
  const seconds = Math.round((action.duration_ms ?? 0) / 1000);
  return `${what}, ${Math.floor(seconds / 60)}:${String(seconds % 60).padStart(2, "0")}`;
}

/** A UUID v4 (client ids). */
export function newClientId() {
  return crypto.randomUUID();
}
