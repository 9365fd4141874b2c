// One message: its text, its file (photo, video, voice message with its waveform, or a download), what it
// replies to, reactions, whether it was read, and its actions (reply, react, edit, delete, forward, pin).

import { html, useEffect, useRef, useState } from "./html.js";
import { app, describe, formatTime } from "./common.js";
import { navigate } from "./router.js";

export const QUICK_REACTIONS = ["👍", "❤️", "😂", "😮", "😢", "🎉"];

export function Message({ m, chat, me, mine, readUpTo, replied, actions, showSender }) {
  const [menu, setMenu] = useState(false);
  const menuButton = useRef(null);
  if (m.status === "system") {
    return html`<li class="system-message" id=${`m-${m.id}`}><span>${app.systemText(m.action ?? {})}</span></li>`;
  }
  const sender = mine ? "You" : app.nameOf(m.sender_id);
  const [state, stateClass] = deliveryState(m, mine, readUpTo);
  const close = () => {
    setMenu(false);
    menuButton.current?.focus();
  };
  return html`<li class=${`message ${mine ? "mine" : "theirs"} status-${m.status}${m.sticker_id ? " sticker-message" : ""}`} id=${`m-${m.id}`}>
    <article class="bubble" aria-label=${`${sender}, ${formatTime(m.created_at)}`}>
      ${showSender && !mine ? html`<p class="sender">${sender}</p>` : null}
      ${m.forwarded_from ? html`<p class="forwarded">Forwarded</p>` : null}
      ${m.story ? html`<${StoryReference} story=${m.story} me=${me} />` : null}
      ${
        replied !== undefined && m.reply_to
          ? html`<a class="reply-quote" href=${`#m-${m.reply_to}`}>
            <span class="reply-who">${replied ? (replied.sender_id === me ? "You" : app.nameOf(replied.sender_id)) : "A message"}</span>
            <span class="reply-text">${replied ? quoteText(replied) : "not on this device"}</span>
          </a>`
          : null
      }
      ${
        m.status === "deleted"
          ? html`<p class="text deleted">This message was deleted.</p>`
          : m.status === "undecryptable"
            ? html`<p class="text undecryptable" title=${m.reason ?? ""}>This message could not be decrypted on this device.</p>`
            : m.sticker_id
              ? html`<${Sticker} id=${m.sticker_id} />`
              : html`${(m.attachments ?? []).map((a) => html`<${Attachment} key=${a.media_id ?? "local"} a=${a} pending=${m.status === "pending"} />`)}
            ${m.text ? html`<p class="text">${linkify(m.text)}</p>` : null}`
      }
      <p class="meta">
        ${m.edited_at && m.status === "ok" ? html`<span class="edited">edited</span>` : null}
        ${m.pinned ? html`<span class="pinned-mark">pinned</span>` : null}
        <time datetime=${new Date(m.created_at).toISOString()}>${formatTime(m.created_at)}</time>
        ${state ? html`<span class=${`state state-${stateClass}`}>${state}</span>` : null}
      </p>
      ${
        m.reactions?.length
          ? html`<ul class="reactions" aria-label="Reactions">
            ${m.reactions.map(
              (r) => html`<li>
                <button type="button" class=${r.me ? "reaction mine" : "reaction"} aria-pressed=${r.me ? "true" : "false"}
                  aria-label=${`${r.emoji} ${r.count}${r.me ? ", yours: remove" : ""}`} onClick=${() => actions.react(m, r.emoji, !r.me)}>
                  ${r.emoji} ${r.count}
                </button>
              </li>`,
            )}
          </ul>`
          : null
      }
    </article>
    ${
      m.status === "queued" || m.status === "waiting"
        ? html`<div class="failed-actions outbox-actions">
          <span class="failed-reason">${m.status === "queued" ? "It is sent when the connection is back." : "It is sent by itself when they first sign in."}</span>
          <button type="button" class="link" onClick=${() => actions.discard(m)}>Discard</button>
        </div>`
        : null
    }
    ${
      m.status === "failed"
        ? html`<div class="failed-actions">
          ${m.reason ? html`<span class="failed-reason">${m.reason}</span>` : null}
          ${m.retry ? html`<button type="button" class="link" onClick=${() => actions.retry(m)}>Retry</button>` : null}
          <button type="button" class="link" onClick=${() => actions.discard(m)}>Discard</button>
        </div>`
        : null
    }
    ${
      m.status === "ok" || m.status === "undecryptable" || m.status === "deleted"
        ? html`<div class="message-tools">
          <button type="button" class="icon-button small" aria-haspopup="menu" aria-expanded=${menu ? "true" : "false"}
            aria-label=${`Actions for the message from ${sender}`} ref=${menuButton} onClick=${() => setMenu(!menu)}>⋯</button>
          ${menu ? html`<${MessageMenu} m=${m} chat=${chat} mine=${mine} actions=${actions} close=${close} />` : null}
        </div>`
        : null
    }
  </li>`;
}

/** What became of a message: [words, class]. Mine say whether the server has it and whether it was read. */
function deliveryState(m, mine, readUpTo) {
  switch (m.status) {
    case "pending":
      return ["Sending…", "sending"];
    case "queued":
      return ["Queued", "queued"];
    case "waiting":
      return [waitingFor(m.waiting_for ?? []), "waiting"];
    case "failed":
      return ["Not sent", "not-sent"];
    default:
      if (!mine) return ["", ""];
      return readUpTo >= m.seq ? ["Read", "read"] : ["Sent", "sent"];
  }
}

/** "Waiting for Grandpa’s first device": members of an encrypted chat with no device to read it yet. */
function waitingFor(userIds) {
  const names = userIds.map((id) => app.nameOf(id));
  if (names.length <= 1) return `Waiting for ${names[0] ?? "a member"}’s first device`;
  return `Waiting for the first device of ${names.slice(0, -1).join(", ")} and ${names[names.length - 1]}`;
}

/** A reply to a story names it (in the envelope): a link to it while it can still be seen. */
function StoryReference({ story, me }) {
  const whose = story.author_id === me ? "your story" : `${app.nameOf(story.author_id)}’s story`;
  const live = (app.snapshot.stories ?? []).some((g) => g.stories.some((st) => st.id === story.id));
  const open = (event) => {
    event.preventDefault();
    app.storyReturn = location.pathname;
    navigate(`/stories/${story.author_id}/${story.id}`);
  };
  return html`<p class="story-ref">
    ${live ? html`<a href=${`/stories/${story.author_id}/${story.id}`} onClick=${open}>Replied to ${whose}</a>` : html`Replied to ${whose} (no longer up)`}
  </p>`;
}

function quoteText(m) {
  if (m.status === "deleted") return "deleted";
  if (m.text) return m.text.length > 80 ? m.text.slice(0, 79) + "…" : m.text;
  if (m.sticker_id) return "a sticker";
  return m.attachments?.length ? "a file" : "";
}

function linkify(text) {
  const parts = text.split(/(https?:\/\/[^\s<]+)/g);
  return parts.map((part, i) =>
    i % 2 ? html`<a href=${part} target="_blank" rel="noopener noreferrer nofollow">${part}</a>` : part,
  );
}

function MessageMenu({ m, chat, mine, actions, close }) {
  const ref = useRef(null);
  useEffect(() => {
    ref.current?.querySelector("button")?.focus();
    const away = (event) => {
      if (!ref.current?.contains(event.target)) close();
    };
    setTimeout(() => document.addEventListener("click", away), 0);
    return () => document.removeEventListener("click", away);
  }, []);
  const keys = (event) => {
    if (event.key === "Escape") {
      event.stopPropagation();
      close();
    }
    if (event.key === "ArrowDown" || event.key === "ArrowUp") {
      event.preventDefault();
      const items = [...ref.current.querySelectorAll("button")];
      const at = items.indexOf(document.activeElement);
      items[(at + (event.key === "ArrowDown" ? 1 : -1) + items.length) % items.length]?.focus();
    }
  };
  const run = (fn) => () => {
    close();
    fn();
  };
  const usable = m.status === "ok";
  const canForward = usable && !chat.encrypted && chat.type !== "direct";
  const ownerish = ["owner", "admin"].includes(chat.my_role?.kind);
  return html`<div class="menu" role="menu" ref=${ref} onKeyDown=${keys} aria-label="Message actions">
    ${
      usable
        ? html`<div class="menu-reactions" role="group" aria-label="React">
          ${QUICK_REACTIONS.map(
            (e) =>
              html`<button type="button" role="menuitem" aria-label=${`React ${e}`} onClick=${run(() => actions.react(m, e, true))}>${e}</button>`,
          )}
        </div>`
        : null
    }
    ${usable ? html`<button type="button" role="menuitem" onClick=${run(() => actions.reply(m))}>Reply</button>` : null}
    ${
      usable && mine && !m.sticker_id && (m.text || !m.attachments?.length)
        ? html`<button type="button" role="menuitem" onClick=${run(() => actions.edit(m))}>Edit</button>`
        : null
    }
    ${usable && m.text ? html`<button type="button" role="menuitem" onClick=${run(() => navigator.clipboard?.writeText(m.text))}>Copy text</button>` : null}
    ${canForward ? html`<button type="button" role="menuitem" onClick=${run(() => actions.forward(m))}>Forward</button>` : null}
    ${usable ? html`<button type="button" role="menuitem" onClick=${run(() => actions.pin(m, !m.pinned))}>${m.pinned ? "Unpin" : "Pin"}</button>` : null}
    <button type="button" role="menuitem" onClick=${run(() => actions.remove(m, "me"))}>Delete for me</button>
    ${
      (mine || ownerish) && m.status !== "deleted"
        ? html`<button type="button" role="menuitem" class="danger" onClick=${run(() => actions.remove(m, "everyone"))}>Delete for everyone</button>`
        : null
    }
  </div>`;
}

/** A file in a message: fetched (and decrypted) when shown; a plaintext chat's file is looked up first. */
function Attachment({ a, pending }) {
  const [described, setDescribed] = useState(a.key || a.mime ? a : null);
  useEffect(() => {
    if (pending || described) return undefined;
    let live = true;
    app.media.describe(a).then(
      (d) => live && setDescribed(d),
      () => live && setDescribed({ ...a, mime: "application/octet-stream" }),
    );
    return () => {
      live = false;
    };
  }, [a.media_id]);
  if (!pending && !described) return html`<div class="photo placeholder" role="img" aria-label="A file, loading"></div>`;
  return html`<${ShownFile} a=${described ?? a} pending=${pending} />`;
}

function ShownFile({ a, pending }) {
  const mime = a.mime ?? "";
  const [src, setSrc] = useState(null);
  const [error, setError] = useState("");
  const image = mime.startsWith("image/");
  const video = mime.startsWith("video/");
  const audio = mime.startsWith("audio/");
  useEffect(() => {
    if (pending || !a.media_id || !(image || video || audio)) return undefined;
    let live = true;
    app.media
      .url(a, image ? "large" : "original")
      .then(({ url }) => live && setSrc(url))
      .catch((err) => live && setError(describe(err)));
    return () => {
      live = false;
    };
  }, [a.media_id]);
  if (pending)
    return html`<p class="attachment pending">${image ? "Sending photo…" : audio ? "Sending voice message…" : `Sending ${a.name || "file"}…`}</p>`;
  if (error) return html`<p class="attachment error">Could not load ${a.name || "the file"}: ${error}</p>`;
  if (image) {
    return src
      ? html`<a href=${src} target="_blank" rel="noopener" class="photo-link"><img class="photo" src=${src} alt=${a.name ? `Photo: ${a.name}` : "Photo"} /></a>`
      : html`<div class="photo placeholder" role="img" aria-label="Photo, loading"></div>`;
  }
  if (video)
    return src
      ? html`<video class="video" src=${src} controls preload="metadata" aria-label=${a.name || "Video"}></video>`
      : html`<div class="photo placeholder" role="img" aria-label="Video, loading"></div>`;
  if (audio) return html`<${Voice} a=${a} src=${src} />`;
  return html`<${FileLink} a=${a} />`;
}

/** A sticker message: the sticker's image (an animated WebP plays by itself), named by its emoji. */
function Sticker({ id }) {
  const [shown, setShown] = useState(null);
  const [missing, setMissing] = useState(false);
  useEffect(() => {
    let live = true;
    app
      .stickerInfo(id)
      .then(async (sticker) => {
        const { url } = await app.media.url({ media_id: sticker.media_id }, "original");
        if (live) setShown({ url, emoji: sticker.emoji });
      })
      .catch(() => live && setMissing(true));
    return () => {
      live = false;
    };
  }, [id]);
  if (missing) return html`<p class="text undecryptable">A sticker that is not available.</p>`;
  if (!shown) return html`<div class="sticker placeholder" role="img" aria-label="Sticker, loading"></div>`;
  return html`<img class="sticker" src=${shown.url} alt=${`Sticker ${shown.emoji}`} title=${shown.emoji} />`;
}

function FileLink({ a }) {
  const [busy, setBusy] = useState(false);
  const download = async () => {
    setBusy(true);
    try {
      const { url } = await app.media.url(a);
      const link = document.createElement("a");
      link.href = url;
      link.download = a.name || "file";
      link.click();
    } catch (error) {
      app.toast(`Could not download: ${describe(error)}`);
    }
    setBusy(false);
  };
  return html`<button type="button" class="file" onClick=${download} disabled=${busy}>
    <span class="file-icon" aria-hidden="true">⤓</span>
    <span><span class="file-name">${a.name || "file"}</span> <span class="file-size">${size(a.size)}</span></span>
  </button>`;
}

function size(bytes) {
  if (!bytes) return "";
  if (bytes < 1024) return `${bytes} B`;
  if (bytes < 1048576) return `${(bytes / 1024).toFixed(0)} KB`;
  return `${(bytes / 1048576).toFixed(1)} MB`;
}

/** A voice message: play/pause, and its waveform (drawn from the decoded sound) showing the progress. */
function Voice({ a, src }) {
  const audio = useRef(null);
  const [bars, setBars] = useState(null);
  const [playing, setPlaying] = useState(false);
  const [progress, setProgress] = useState(0);
  const [duration, setDuration] = useState(0);
  useEffect(() => {
    if (!src) return;
    app.media
      .waveform(a)
      .then(setBars)
      .catch(() => setBars([]));
  }, [src]);
  const toggle = () => {
    const el = audio.current;
    if (!el) return;
    if (el.paused) el.play();
    else el.pause();
  };
  const shown = bars?.length ? bars : new Array(48).fill(0.15);
  return html`<div class="voice">
    <button type="button" class="play" onClick=${toggle} disabled=${!src} aria-label=${playing ? "Pause voice message" : "Play voice message"}>
      ${playing ? "❚❚" : "▶"}
    </button>
    <svg class="waveform" viewBox=${`0 0 ${shown.length * 4} 32`} preserveAspectRatio="none" role="img"
      aria-label=${`Voice message${duration ? `, ${Math.round(duration)} seconds` : ""}`}>
      ${shown.map((b, i) => {
        const h = Math.max(2, Math.round(b * 30));
        return html`<rect x=${i * 4} y=${(32 - h) / 2} width="3" height=${h} rx="1" class=${i / shown.length < progress ? "played" : ""} />`;
      })}
    </svg>
    <span class="voice-time">${formatDuration(playing || progress ? duration * progress : duration)}</span>
    ${
      src
        ? html`<audio ref=${audio} src=${src} preload="metadata" onPlay=${() => setPlaying(true)} onPause=${() => setPlaying(false)}
          onEnded=${() => {
            setPlaying(false);
            setProgress(0);
          }}
          onLoadedMetadata=${(e) => Number.isFinite(e.currentTarget.duration) && setDuration(e.currentTarget.duration)}
          onTimeUpdate=${(e) => {
            const el = e.currentTarget;
            if (Number.isFinite(el.duration) && el.duration > 0) {
              setDuration(el.duration);
              setProgress(el.currentTime / el.duration);
            }
          }}></audio>`
        : null
    }
  </div>`;
}

function formatDuration(seconds) {
  if (!seconds || !Number.isFinite(seconds)) return "0:00";
  const s = Math.round(seconds);
  return `${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
}
