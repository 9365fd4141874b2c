// Start a chat: a direct chat by username, or a group (encrypted by default) or a channel with members.

import { html, useState } from "./html.js";
import { app, describe, Field, useFocus } from "./common.js";
import { navigate, onLink } from "./router.js";

export function NewChat({ kind }) {
  const tabs = [
    ["direct", "Direct chat", "/new"],
    ["group", "Group", "/new/group"],
    ["channel", "Channel", "/new/channel"],
  ];
  return html`<section class="page" aria-labelledby="new-title">
    <header class="page-head">
      <a href="/" onClick=${onLink} class="back icon-button" aria-label="Back to chats">‹</a>
      <h1 id="new-title">New chat</h1>
    </header>
    <nav class="segmented" aria-label="Kind of chat">
      ${tabs.map(([k, label, href]) => html`<a href=${href} onClick=${onLink} aria-current=${k === kind ? "page" : undefined}>${label}</a>`)}
    </nav>
    ${kind === "direct" ? html`<${NewDirect} />` : html`<${NewGroup} type=${kind === "channel" ? "channel" : "group"} key=${kind} />`}
  </section>`;
}

/**
 * What both forms share: focus on the first field, one submission at a time, and on success the new chat
 * opened. `create(start, notFound)` runs `start` (which gives the chat); `notFound` is what to say when the
 * server knows no user by a name given.
 */
function useNewChat() {
  const [error, setError] = useState("");
  const [busy, setBusy] = useState(false);
  const first = useFocus();
  const create = async (start, notFound) => {
    setBusy(true);
    setError("");
    try {
      const chat = await start();
      await app.refreshChats();
      navigate(`/chats/${chat.id}`);
    } catch (err) {
      setBusy(false);
      setError(err.code === "not_found" ? notFound : describe(err));
    }
  };
  return { error, busy, first, create };
}

function NewDirect() {
  const { error, busy, first, create } = useNewChat();
  const submit = (event) => {
    event.preventDefault();
    const username = String(new FormData(event.currentTarget).get("username")).trim();
    create(() => app.act("createDirect", username), `There is no user “${username}” on this server.`);
  };
  return html`<form class="card" onSubmit=${submit}>
    <p>A direct chat is end-to-end encrypted: the server relays it without being able to read it.</p>
    <${Field} label="Their username" id="nd-username" name="username" required autocapitalize="none" spellcheck="false"
      autocomplete="off" inputRef=${first} error=${error} />
    <button class="primary" type="submit" disabled=${busy}>Start chat</button>
  </form>`;
}

function NewGroup({ type }) {
  const { error, busy, first, create } = useNewChat();
  const submit = (event) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    const usernames = String(form.get("members") ?? "")
      .split(/[\s,]+/)
      .map((u) => u.trim())
      .filter(Boolean);
    const options = {
      type,
      title: String(form.get("title")).trim(),
      usernames,
      encrypted: type === "group" ? form.get("encrypted") === "on" : false,
    };
    create(() => app.act("createGroup", options), "One of those usernames does not exist here.");
  };
  return html`<form class="card" onSubmit=${submit}>
    <${Field} label=${type === "channel" ? "Channel name" : "Group name"} id="ng-title" name="title" required maxlength="128" inputRef=${first} />
    <${Field} label="Members" id="ng-members" name="members" autocapitalize="none" spellcheck="false" autocomplete="off"
      hint="Usernames, separated by spaces or commas" />
    ${
      type === "group"
        ? html`<div class="check">
          <input type="checkbox" id="ng-encrypted" name="encrypted" checked />
          <label for="ng-encrypted">End-to-end encrypted</label>
          <p class="field-hint">Recommended. Unencrypted groups can be searched by the server and messages forwarded.</p>
        </div>`
        : html`<p class="field-hint">Channels are public broadcasts: the server can read them, and only admins post.</p>`
    }
    ${error ? html`<p class="form-error" role="alert">${error}</p>` : null}
    <button class="primary" type="submit" disabled=${busy}>Create ${type}</button>
  </form>`;
}
