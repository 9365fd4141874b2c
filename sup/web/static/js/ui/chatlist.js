// The chat list: a row of story rings at the top (authors with stories I have not seen first), then each
// chat a link named by its title (or the other person's name and username), with the last message
// (decrypted here for encrypted chats), unread count, presence and typing.

import { html, useState } from "./html.js";
import { app, Avatar, formatTime, useApp } from "./common.js";
import { navigate, onLink } from "./router.js";

export function ChatList({ activeId }) {
  const s = useApp();
  const [filter, setFilter] = useState("");
  const needle = filter.trim().toLowerCase();
  const chats = needle
    ? s.chats.filter((c) => `${app.chatTitle(c)} ${c.peer?.username ?? ""}`.toLowerCase().includes(needle))
    : s.chats;
  return html`<nav class="sidebar" aria-label="Chats">
    <header class="sidebar-head">
      <a class="me" href="/settings" onClick=${onLink} aria-label="Settings and profile">
        <${Avatar} id=${s.me?.id ?? ""} name=${s.me?.display_name || s.me?.username || ""} />
        <span class="me-name">${s.me?.display_name || s.me?.username}</span>
      </a>
      <a class="button icon-button" href="/search" onClick=${onLink} aria-label="Search" title="Search">
        <svg viewBox="0 0 24 24" aria-hidden="true" width="22" height="22"><circle cx="10.5" cy="10.5" r="6" /><path d="M15 15l5 5" /></svg>
      </a>
      <a class="button icon-button" href="/new" onClick=${onLink} aria-label="New chat" title="New chat">
        <svg viewBox="0 0 24 24" aria-hidden="true" width="22" height="22"><path d="M12 5v14M5 12h14" /></svg>
      </a>
    </header>
    <${StoryRings} groups=${s.stories} me=${s.me} />
    <div class="search">
      <label for="chat-filter" class="visually-hidden">Search chats</label>
      <input id="chat-filter" type="search" placeholder="Search chats" value=${filter} onInput=${(e) => setFilter(e.currentTarget.value)} />
    </div>
    ${
      chats.length === 0
        ? html`<div class="empty-list">
          ${
            needle
              ? html`<p>No chat matches “${filter}”.</p>`
              : html`<p>No chats yet.</p>
                <p><a class="button primary" href="/new" onClick=${onLink}>Start a chat</a></p>`
          }
        </div>`
        : html`<ul class="chat-list" role="list">
          ${chats.map((chat) => html`<${ChatItem} key=${chat.id} chat=${chat} active=${chat.id === activeId} s=${s} />`)}
        </ul>`
    }
  </nav>`;
}

function ChatItem({ chat, active, s }) {
  const title = app.chatTitle(chat);
  const typingIds = Object.keys(s.typing[chat.id] ?? {});
  const peerOnline = chat.peer && s.presence[chat.peer.id]?.online;
  const unread = chat.unread_count ?? 0;
  const who =
    chat.preview?.sender_id && chat.type !== "direct" && chat.preview.sender_id !== s.me?.id
      ? `${app.nameOf(chat.preview.sender_id)}: `
      : chat.preview?.sender_id === s.me?.id
        ? "You: "
        : "";
  const preview = typingIds.length ? "typing…" : chat.preview ? who + app.previewOf(chat) : kindLabel(chat);
  const label = [
    title,
    chat.type === "direct" && chat.peer ? `@${chat.peer.username}` : chat.type === "channel" ? "channel" : "group",
    peerOnline ? "online" : "",
    unread ? `${unread} unread` : "",
  ]
    .filter(Boolean)
    .join(", ");
  return html`<li>
    <a href=${`/chats/${chat.id}`} onClick=${onLink} class=${`chat-item${active ? " active" : ""}`} aria-current=${active ? "page" : undefined}
      aria-label=${label} aria-describedby=${`preview-${chat.id}`}>
      <${Avatar} id=${chat.peer?.id ?? chat.id} name=${title} online=${peerOnline} />
      <span class="chat-item-main">
        <span class="chat-item-top">
          <span class="chat-item-title">${title}${chat.type === "channel" ? html` <span class="tag">channel</span>` : null}</span>
          <span class="chat-item-time">${formatTime(chat.activity)}</span>
        </span>
        <span class="chat-item-bottom">
          <span id=${`preview-${chat.id}`} class=${`chat-item-preview${typingIds.length ? " typing" : ""}`}>${preview}</span>
          ${unread ? html`<span class="badge" aria-hidden="true">${unread > 99 ? "99+" : unread}</span>` : null}
        </span>
      </span>
    </a>
  </li>`;
}

function kindLabel(chat) {
  if (chat.type === "channel") return "Channel";
  if (chat.type === "group") return chat.encrypted ? "Encrypted group" : "Group";
  return "End-to-end encrypted";
}

/** Authors in the order the rings show them: me first, then whoever has stories I have not seen, then the rest. */
export function storyOrder(groups, me) {
  const mine = groups.filter((g) => g.author.id === me);
  const others = groups.filter((g) => g.author.id !== me);
  return [...mine, ...others.filter((g) => !g.all_seen), ...others.filter((g) => g.all_seen)];
}

function StoryRings({ groups, me }) {
  if (!me) return null;
  const ordered = storyOrder(groups ?? [], me.id);
  const mine = ordered[0]?.author.id === me.id ? ordered[0] : null;
  const open = (authorId) => {
    app.storyReturn = location.pathname;
    navigate(`/stories/${authorId}`);
  };
  return html`<ul class="story-rings" aria-label="Stories">
    ${
      mine
        ? html`<li>
          <button type="button" class="story-ring seen" onClick=${() => open(me.id)}
            aria-label=${`Your story, ${mine.stories.length} up`}>
            <${Avatar} id=${me.id} name=${me.display_name || me.username} />
            <span class="story-name">Your story</span>
          </button>
        </li>`
        : null
    }
    <li>
      <a class="story-ring add" href="/stories/new" onClick=${onLink}>
        <span class="add-plus" aria-hidden="true">+</span>
        <span class="story-name">Add story</span>
      </a>
    </li>
    ${ordered
      .filter((g) => g.author.id !== me.id)
      .map((g) => {
        const name = g.author.display_name || g.author.username;
        const unseen = g.stories.filter((st) => !st.seen).length;
        return html`<li key=${g.author.id}>
          <button type="button" class=${`story-ring${g.all_seen ? " seen" : ""}`} onClick=${() => open(g.author.id)}
            aria-label=${`Stories of ${name}, ${unseen ? `${unseen} new` : "all seen"}`}>
            <${Avatar} id=${g.author.id} name=${name} />
            <span class="story-name">${name}</span>
          </button>
        </li>`;
      })}
  </ul>`;
}
