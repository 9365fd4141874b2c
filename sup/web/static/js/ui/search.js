// Search (/search?q=...): one box, one results view. People (start a direct chat), chats (mine open; public
// ones I am not in can be joined), and messages: the server's results for chats it can read merged with this
// device's own index of its encrypted chats (client/search.js). A message opens its chat at that message.

import { html, useEffect, useRef, useState } from "./html.js";
import { app, Avatar, describe, formatTime, useApp } from "./common.js";
import { indexFor, searchEverywhere, showMessage } from "../client/search.js";
import { joinPublic } from "../client/joining.js";
import { navigate, onLink } from "./router.js";

function queryOfUrl() {
  return new URLSearchParams(location.search).get("q") ?? "";
}

export function SearchScreen() {
  const s = useApp();
  const [q, setQ] = useState(queryOfUrl);
  const [results, setResults] = useState(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState("");
  const input = useRef(null);
  const asked = useRef(0);

  const run = async (text) => {
    const ticket = ++asked.current;
    if (!text.trim()) {
      setResults(null);
      return;
    }
    setBusy(true);
    const found = await searchEverywhere(app, indexFor(app), text);
    if (ticket !== asked.current) return; // a newer query was typed meanwhile
    setBusy(false);
    setResults({ ...found, text });
    history.replaceState(null, "", `/search?q=${encodeURIComponent(text)}`);
  };
  useEffect(() => {
    input.current?.focus();
    // A search still running when the screen closes (a result was opened) is dropped: its replaceState
    // would put /search back in the address bar over the chat now shown.
    return () => asked.current++;
  }, []);
  useEffect(() => {
    const t = setTimeout(() => run(q), 300);
    return () => clearTimeout(t);
  }, [q]);

  const chatOf = (id) => s.chats.find((c) => c.id === id);
  const message = async (user) => {
    setError("");
    try {
      const existing = s.chats.find((c) => c.type === "direct" && c.peer?.id === user.id);
      const chat = existing ?? (await app.act("createDirect", user.username));
      navigate(`/chats/${chat.id}`);
    } catch (e) {
      setError(describe(e));
    }
  };
  const join = async (chat) => {
    setError("");
    try {
      const answer = await joinPublic(app, chat.id);
      navigate(`/chats/${answer.chat_id}`);
    } catch (e) {
      setError(describe(e));
    }
  };
  const open = (item) => showMessage(app, item.message.chat_id, item.message.id, navigate);

  return html`<section class="page search-page" aria-labelledby="search-title">
    <header class="page-head">
      <a href="/" onClick=${onLink} class="back icon-button" aria-label="Back to chats">‹</a>
      <h1 id="search-title">Search</h1>
    </header>
    <form class="card search-form" role="search" onSubmit=${(e) => (e.preventDefault(), run(q))}>
      <label for="search-q">Search people, chats and messages</label>
      <div class="search-row">
        <input id="search-q" type="search" ref=${input} value=${q} maxlength="256" autocomplete="off"
          onInput=${(e) => setQ(e.currentTarget.value)} />
        <button type="submit" class="primary">Search</button>
      </div>
      <p class="field-hint">Encrypted chats are searched on this device only, in the messages it has.</p>
    </form>
    ${error ? html`<p class="form-error" role="alert">${error}</p>` : null}
    <div class="results" aria-live="polite" aria-busy=${busy ? "true" : "false"} data-query=${results?.text ?? ""}>
      ${
        results === null
          ? null
          : html`${results.errors.map(
              (e) => html`<p class="form-error" role="alert">Could not search ${e.what}: ${describe(e.error)}</p>`,
            )}
          ${
            !results.users.length && !results.chats.length && !results.messages.length && !results.errors.length
              ? html`<p class="search-none">Nothing found for “${q.trim()}”.</p>`
              : null
          }
          ${results.users.length ? html`<${People} users=${results.users} onMessage=${message} />` : null}
          ${results.chats.length ? html`<${Chats} chats=${results.chats} onJoin=${join} />` : null}
          ${results.messages.length ? html`<${Messages} items=${results.messages} chatOf=${chatOf} onOpen=${open} />` : null}`
      }
    </div>
  </section>`;
}

/** One kind of result: a card with its heading over the list of what was found. */
function Found({ id, title, children }) {
  return html`<section class="card" aria-labelledby=${id}>
    <h2 id=${id}>${title}</h2>
    <ul class="result-list">
      ${children}
    </ul>
  </section>`;
}

function People({ users, onMessage }) {
  return html`<${Found} id="found-people" title="People">
    ${users.map(
      (u) => html`<li key=${u.id}>
        <${Avatar} id=${u.id} name=${u.display_name || u.username} />
        <span class="result-main"><strong>${u.display_name || u.username}</strong> <span class="muted">@${u.username}</span></span>
        <button type="button" class="small" onClick=${() => onMessage(u)} aria-label=${`Message ${u.username}`}>Message</button>
      </li>`,
    )}
  <//>`;
}

function Chats({ chats, onJoin }) {
  return html`<${Found} id="found-chats" title="Chats">
    ${chats.map(
      (c) => html`<li key=${c.id}>
        <${Avatar} id=${c.id} name=${c.title} />
        <span class="result-main">
          <strong>${c.title}</strong>
          <span class="muted"> · ${c.type}${c.visibility === "public" ? ", public" : ""} · ${c.member_count} ${c.member_count === 1 ? "member" : "members"}</span>
          ${c.description ? html`<span class="result-desc">${c.description}</span>` : null}
        </span>
        ${
          c.joined
            ? html`<a class="button small" href=${`/chats/${c.id}`} onClick=${onLink} aria-label=${`Open ${c.title}`}>Open</a>`
            : html`<button type="button" class="small primary" onClick=${() => onJoin(c)} aria-label=${`Join ${c.title}`}>Join</button>`
        }
      </li>`,
    )}
  <//>`;
}

function Messages({ items, chatOf, onOpen }) {
  return html`<${Found} id="found-messages" title="Messages">
    ${items.map((item) => {
      const m = item.message;
      const chat = chatOf(m.chat_id);
      const where = chat ? app.chatTitle(chat) : "a chat";
      const text = item.snippet.map((seg) => seg.text).join("");
      return html`<li key=${m.id}>
        <button type="button" class="result-message" onClick=${() => onOpen(item)}
          aria-label=${`${app.nameOf(m.sender_id)} in ${where}: ${text}`}>
          <span class="result-top">
            <strong>${where}</strong>
            <span class="muted">${formatTime(m.created_at)}</span>
          </span>
          <span class="result-snippet"><span class="muted">${app.nameOf(m.sender_id)}: </span>${item.snippet.map(
            (seg) => (seg.match ? html`<mark>${seg.text}</mark>` : seg.text),
          )}</span>
          ${item.where === "device" ? html`<span class="tag">on this device</span>` : null}
        </button>
      </li>`;
    })}
  <//>`;
}
