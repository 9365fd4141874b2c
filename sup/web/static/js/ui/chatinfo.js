// About a chat: its members and their roles (add, remove, change roles when allowed), pinned messages,
// invite links and join requests (invites.js, for those who may invite), leaving or deleting it.

import { html, useEffect, useState } from "./html.js";
import { app, Avatar, describe, Field, lazy, useApp } from "./common.js";
import { navigate, onLink } from "./router.js";

const ChatInvites = lazy(() => import("./invites.js"), "ChatInvites");

export function ChatInfo({ chatId }) {
  const s = useApp();
  const chat = s.chats.find((c) => c.id === chatId);
  const [members, setMembers] = useState(null);
  const [roles, setRoles] = useState([]);
  const [error, setError] = useState("");
  const load = async () => {
    try {
      setMembers(await app.api.members(chatId));
      setRoles((await app.api.roles(chatId)).roles);
    } catch (err) {
      setError(describe(err));
    }
  };
  useEffect(() => {
    load();
  }, [chatId, chat?.member_ids?.length]); // someone joined or left meanwhile
  if (!chat) return html`<section class="page"><p>This chat is not here.</p></section>`;
  const title = app.chatTitle(chat);
  const perms = chat.my_role?.permissions ?? [];
  const owner = chat.my_role?.kind === "owner";
  const can = (p) => owner || perms.includes(p);
  const add = async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const names = String(new FormData(form).get("usernames"))
      .split(/[\s,]+/)
      .filter(Boolean);
    try {
      await app.act("addMembers", chatId, names);
      form.reset();
      await load();
    } catch (err) {
      setError(err.code === "not_found" ? "One of those usernames does not exist here." : describe(err));
    }
  };
  const remove = async (m) => {
    if (!confirm(`Remove ${m.display_name || m.username} from ${title}?`)) return;
    try {
      await app.act("removeMember", chatId, m.user_id);
      await load();
    } catch (err) {
      setError(describe(err));
    }
  };
  const setRole = async (m, roleId) => {
    try {
      await app.api.setMemberRole(chatId, m.user_id, roleId);
      await load();
    } catch (err) {
      setError(describe(err));
    }
  };
  const leave = async () => {
    if (!confirm(chat.type === "direct" ? "Delete this chat for both of you?" : `Leave ${title}?`)) return;
    try {
      await app.act(chat.type === "direct" ? "deleteChat" : "leave", chatId);
      navigate("/");
    } catch (err) {
      setError(describe(err));
    }
  };
  return html`<section class="page" aria-labelledby="info-title">
    <header class="page-head">
      <a href=${`/chats/${chatId}`} onClick=${onLink} class="back icon-button" aria-label="Back to the chat">‹</a>
      <h1 id="info-title">${title}</h1>
    </header>
    <div class="card">
      <p>
        ${
          chat.type === "channel"
            ? "A channel: a public broadcast the server can read."
            : chat.encrypted || chat.type === "direct"
              ? "End-to-end encrypted: only the members' devices can read it."
              : "An unencrypted group: the server can read it."
        }
      </p>
      ${chat.description ? html`<p>${chat.description}</p>` : null}
    </div>
    ${error ? html`<p class="form-error" role="alert">${error}</p>` : null}
    <h2>Members${members ? ` (${members.length})` : ""}</h2>
    ${
      members === null
        ? html`<p>Loading…</p>`
        : html`<ul class="member-list">
          ${members.map(
            (m) => html`<li key=${m.user_id}>
              <${Avatar} id=${m.user_id} name=${m.display_name || m.username} online=${s.presence[m.user_id]?.online} />
              <span class="member-name">${m.display_name || m.username} <span class="muted">@${m.username}</span></span>
              ${
                can("manage_roles") && chat.type !== "direct" && m.user_id !== s.me?.id && m.role.kind !== "owner"
                  ? html`<label class="visually-hidden" for=${`role-${m.user_id}`}>Role of ${m.username}</label>
                    <select id=${`role-${m.user_id}`} value=${m.role.id} onChange=${(e) => setRole(m, e.currentTarget.value)}>
                      ${roles.filter((r) => r.kind !== "owner").map((r) => html`<option value=${r.id}>${r.name}</option>`)}
                    </select>`
                  : html`<span class="tag">${m.role.name}</span>`
              }
              ${
                m.user_id !== s.me?.id
                  ? html`<a class="button small" href=${`/safety/${m.user_id}`} onClick=${onLink} aria-label=${`Safety number with ${m.username}`}>Safety</a>`
                  : null
              }
              ${
                can("remove_members") && chat.type !== "direct" && m.user_id !== s.me?.id && m.role.kind !== "owner"
                  ? html`<button type="button" class="small danger" onClick=${() => remove(m)} aria-label=${`Remove ${m.username}`}>Remove</button>`
                  : null
              }
            </li>`,
          )}
        </ul>`
    }
    ${
      can("add_members") && chat.type !== "direct"
        ? html`<form class="card inline-form" onSubmit=${add}>
          <${Field} label="Add members" id="ci-add" name="usernames" hint="Usernames, separated by spaces" autocapitalize="none" autocomplete="off" />
          <button type="submit">Add</button>
        </form>`
        : null
    }
    ${can("invite_users") && chat.type !== "direct" ? html`<${ChatInvites} chatId=${chatId} />` : null}
    <p><button type="button" class="danger" onClick=${leave}>${chat.type === "direct" ? "Delete chat" : "Leave"}</button></p>
  </section>`;
}
