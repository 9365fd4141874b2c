// A conversation: header (who, presence, typing), key-change banners, pinned message, the messages (a
// window of the newest ones, scrolling back loads more), and the composer (Enter sends, Shift+Enter is a
// new line; reply, edit, photos and files, voice messages recorded here).

import { html, useEffect, useLayoutEffect, useRef, useState } from "./html.js";
import { app, Avatar, describe, deviceLabel, formatDay, keyDigits, lastSeen, lazy, shortId, useApp } from "./common.js";
import { CallButton } from "./call.js";
import { Message } from "./message.js";
import { navigate, onLink } from "./router.js";

const StickerPicker = lazy(() => import("./stickers.js"), "StickerPicker");

export function ChatScreen({ chatId }) {
  const s = useApp();
  const chat = s.chats.find((c) => c.id === chatId);
  const [reply, setReply] = useState(null);
  const [editing, setEditing] = useState(null);
  const [forwarding, setForwarding] = useState(null);
  const composer = useRef(null);
  useEffect(() => {
    setReply(null);
    setEditing(null);
  }, [chatId]);
  if (!chat) {
    return html`<section class="chat"><p class="empty-screen">${s.chats.length ? "This chat is not here (any more)." : "Loading…"}</p></section>`;
  }
  const title = app.chatTitle(chat);
  const me = s.me?.id;
  const typing = Object.keys(s.typing[chatId] ?? {}).map((id) => app.nameOf(id));
  const presence = chat.peer ? s.presence[chat.peer.id] : null;
  const subtitle = typing.length
    ? `${typing.join(", ")} ${typing.length > 1 ? "are" : "is"} typing…`
    : chat.type === "direct"
      ? [chat.peer ? `@${chat.peer.username}` : "", lastSeen(presence)].filter(Boolean).join(" · ")
      : `${chat.type === "channel" ? "Channel" : chat.encrypted ? "Encrypted group" : "Group"}${chat.member_ids ? ` · ${memberCount(chat)}` : ""}`;
  const readUpTo = Math.max(
    0,
    ...Object.entries(chat.read_by ?? {})
      .filter(([u]) => u !== me)
      .map(([, seq]) => seq),
  );
  const actions = {
    reply: (m) => {
      setEditing(null);
      setReply(m);
      composer.current?.focus();
    },
    edit: (m) => {
      setReply(null);
      setEditing(m);
      composer.current?.focus();
    },
    react: (m, emoji, add) => app.act("react", m.id, emoji, add).catch((e) => app.toast(describe(e))),
    remove: async (m, scope) => {
      if (scope === "everyone" && !confirm("Delete this message for everyone?")) return;
      await app.act("remove", m.id, scope).catch((e) => app.toast(describe(e)));
      composer.current?.focus();
    },
    pin: (m, on) => app.act("setPinned", m.id, on).catch((e) => app.toast(describe(e))),
    forward: (m) => setForwarding(m),
    retry: (m) => app.act("retry", m.id).catch((e) => app.toast(describe(e))),
    discard: (m) => app.act("discard", m.id),
  };
  const pinned = (chat.pinned_ids ?? []).length
    ? s.messages.find((m) => m.id === chat.pinned_ids[chat.pinned_ids.length - 1])
    : null;
  return html`<section class="chat" aria-labelledby="chat-title">
    <header class="chat-head">
      <a href="/" onClick=${onLink} class="back icon-button" aria-label="Back to chats">‹</a>
      <${Avatar} id=${chat.peer?.id ?? chat.id} name=${title} online=${presence?.online} />
      <div class="chat-head-text">
        <h1 id="chat-title">${title}</h1>
        <p class=${`subtitle${typing.length ? " typing" : ""}`} aria-live="polite">${subtitle}</p>
      </div>
      <${CallButton} chat=${chat} />
      ${
        chat.type === "direct" && chat.peer
          ? html`<a class="button small" href=${`/safety/${chat.peer.id}`} onClick=${onLink} aria-label="Safety number"
              >Safety<span class="wide-only"> number</span></a
            >`
          : null
      }
      <a class="button small" href=${`/chats/${chat.id}/info`} onClick=${onLink} aria-label=${`About ${title}`}>Info</a>
    </header>
    <${Notices} chat=${chat} notices=${s.notices} me=${me} />
    ${
      (chat.pinned_ids ?? []).length
        ? html`<div class="pinned-bar">
          <span class="pin-icon" aria-hidden="true">📌</span>
          <a href=${pinned ? `#m-${pinned.id}` : "#"}>
            ${pinned ? pinned.text || "Pinned message" : `${chat.pinned_ids.length} pinned message${chat.pinned_ids.length > 1 ? "s" : ""}`}
          </a>
        </div>`
        : null
    }
    <${MessageList} chat=${chat} s=${s} me=${me} readUpTo=${readUpTo} actions=${actions} />
    ${forwarding ? html`<${ForwardDialog} m=${forwarding} from=${chat} chats=${s.chats} close=${() => setForwarding(null)} />` : null}
    ${
      chat.type === "channel" &&
      !["owner", "admin"].includes(chat.my_role?.kind) &&
      chat.my_role &&
      !chat.my_role.permissions?.includes("send_messages")
        ? html`<p class="read-only">Only admins post in this channel.</p>`
        : html`<${Composer} chat=${chat} reply=${reply} setReply=${setReply} editing=${editing} setEditing=${setEditing} inputRef=${composer} />`
    }
  </section>`;
}

/** Banners about the keys of people in this chat: a new device, a changed safety number. */
function Notices({ chat, notices, me }) {
  const members = new Set(chat.member_ids ?? (chat.peer ? [chat.peer.id] : []));
  const mine = notices.filter((n) => n.user_id !== me && members.has(n.user_id));
  if (!mine.length) return null;
  return html`<div class="notices">
    ${mine.map(
      (n) => html`<div class="banner banner-key" role="status" key=${n.id}>
        <p>
          ${
            n.type === "new_device"
              ? html`<strong>${app.nameOf(n.user_id)}</strong> has a new device: ${deviceLabel(n.device_name, n.device_id)}${n.identity_key ? html`, key ${keyDigits(n.identity_key).slice(0, 19)}` : null}.
                Your safety number with them changed.`
              : html`The safety number with <strong>${app.nameOf(n.user_id)}</strong> changed: a device of theirs (id ${shortId(n.device_id)}) has a new key. This happens when they reinstall, or if someone is in the middle.`
          }
        </p>
        <p class="banner-actions">
          <a class="button small" href=${`/safety/${n.user_id}`} onClick=${onLink}>Compare safety numbers</a>
          <button type="button" class="small" onClick=${() => app.act("dismissNotice", n.id)}>Dismiss</button>
        </p>
      </div>`,
    )}
  </div>`;
}

function MessageList({ chat, s, me, readUpTo, actions }) {
  const box = useRef(null);
  const atBottom = useRef(true);
  const previousHeight = useRef(0);
  const loadingOlder = useRef(false);
  const messages = s.messages.filter((m) => m.chat_id === chat.id);
  const byId = new Map(messages.map((m) => [m.id, m]));
  const lastSeq = messages.reduce((top, m) => (m.seq < 1e15 && m.seq > top ? m.seq : top), 0);

  // Stay at the bottom when new messages come, keep the place when older ones are added above.
  useLayoutEffect(() => {
    const el = box.current;
    if (!el) return;
    if (loadingOlder.current) {
      el.scrollTop += el.scrollHeight - previousHeight.current;
      loadingOlder.current = false;
    } else if (atBottom.current) el.scrollTop = el.scrollHeight;
    previousHeight.current = el.scrollHeight;
  }, [messages.length, messages[messages.length - 1]?.id, chat.id]);

  // Read receipts: what is on screen at the bottom, in a visible tab, has been seen.
  useEffect(() => {
    const mark = () => {
      if (
        document.visibilityState === "visible" &&
        atBottom.current &&
        lastSeq > 0 &&
        (lastSeq > (chat.last_read_seq ?? 0) || chat.unread_count)
      ) {
        app.act("markRead", chat.id, lastSeq).catch(() => {});
      }
    };
    mark();
    document.addEventListener("visibilitychange", mark);
    return () => document.removeEventListener("visibilitychange", mark);
  }, [chat.id, lastSeq, chat.unread_count]);

  const older = async () => {
    if (loadingOlder.current || !s.hasOlder) return;
    loadingOlder.current = true;
    previousHeight.current = box.current?.scrollHeight ?? 0;
    await app.loadOlder();
    setTimeout(() => (loadingOlder.current = false), 50);
  };
  const onScroll = (event) => {
    const el = event.currentTarget;
    const bottom = el.scrollHeight - el.scrollTop - el.clientHeight < 40;
    if (bottom && !atBottom.current) {
      atBottom.current = true;
      app.trimWindow();
      if (lastSeq > (chat.last_read_seq ?? 0)) app.act("markRead", chat.id, lastSeq).catch(() => {});
    } else atBottom.current = bottom;
    if (el.scrollTop < 120 && s.hasOlder) older();
  };

  let day = "";
  const rows = [];
  for (let i = 0; i < messages.length; i++) {
    const m = messages[i];
    const thisDay = formatDay(m.created_at);
    if (thisDay !== day) {
      day = thisDay;
      rows.push(html`<li class="day" key=${`day-${m.id}`}><span>${thisDay}</span></li>`);
    }
    const prev = messages[i - 1];
    rows.push(
      html`<${Message} key=${m.id} m=${m} chat=${chat} me=${me} mine=${m.sender_id === me} readUpTo=${readUpTo}
        replied=${m.reply_to ? (byId.get(m.reply_to) ?? null) : undefined} actions=${actions}
        showSender=${chat.type !== "direct" && (!prev || prev.sender_id !== m.sender_id || prev.status === "system")} />`,
    );
  }
  return html`<div class="messages" ref=${box} onScroll=${onScroll} tabindex="0" aria-label=${`Messages with ${app.chatTitle(chat)}`}>
    ${s.hasOlder ? html`<p class="older"><button type="button" class="link" onClick=${older}>Load older messages</button></p>` : null}
    ${
      !s.hasOlder && chat.encrypted
        ? html`<p class="e2e-note">Messages here are end-to-end encrypted. This device shows what arrived since it signed in.</p>`
        : null
    }
    ${messages.length === 0 ? html`<p class="empty-chat">No messages yet. Say hello!</p>` : null}
    <ol class="message-list" aria-live="polite" aria-relevant="additions">${rows}</ol>
  </div>`;
}

function ForwardDialog({ m, from, chats, close }) {
  const ref = useRef(null);
  useEffect(() => ref.current?.showModal?.(), []);
  const targets = chats.filter((c) => c.id !== from.id && !c.encrypted && c.type !== "direct");
  const send = async (chat) => {
    try {
      await app.act("forward", m.id, chat.id);
      app.toast(`Forwarded to ${app.chatTitle(chat)}`);
    } catch (error) {
      app.toast(describe(error));
    }
    close();
  };
  return html`<dialog ref=${ref} class="dialog" onClose=${close} aria-labelledby="fwd-title">
    <h2 id="fwd-title">Forward to…</h2>
    ${
      targets.length
        ? html`<ul class="pick-list">${targets.map((c) => html`<li key=${c.id}><button type="button" onClick=${() => send(c)}>${app.chatTitle(c)}</button></li>`)}</ul>`
        : html`<p>Only unencrypted groups and channels can take a forwarded message, and you have none besides this one.</p>`
    }
    <p class="dialog-actions"><button type="button" onClick=${close}>Cancel</button></p>
  </dialog>`;
}

function Composer({ chat, reply, setReply, editing, setEditing, inputRef }) {
  const [text, setText] = useState("");
  const [busy, setBusy] = useState(false);
  const [recording, setRecording] = useState(null);
  const [stickers, setStickers] = useState(false);
  const fileInput = useRef(null);
  const stickerButton = useRef(null);
  const closeStickers = () => {
    setStickers(false);
    stickerButton.current?.focus();
  };
  // In the same task as the click on Edit: what is typed next replaces the old text, never races it.
  useLayoutEffect(() => {
    if (editing) setText(editing.text ?? "");
  }, [editing?.id]);
  useEffect(() => {
    setText("");
    if (matchMedia("(min-width: 701px)").matches) inputRef.current?.focus();
  }, [chat.id]);
  useLayoutEffect(() => {
    const el = inputRef.current;
    if (!el) return;
    el.style.height = "auto"; // CSSOM, allowed by style-src 'self' (no style attribute in markup)
    el.style.height = `${Math.min(el.scrollHeight, 160)}px`;
  }, [text]);

  const submit = async () => {
    const value = text.trim();
    if (!value) return;
    setText("");
    try {
      if (editing) {
        const m = editing;
        setEditing(null);
        await app.act("edit", m.id, value);
      } else {
        const replyTo = reply?.id ?? null;
        setReply(null);
        await app.send(chat.id, value, replyTo);
      }
    } catch (error) {
      app.toast(`Not sent: ${describe(error)}`);
    }
    inputRef.current?.focus();
  };
  const onKeyDown = (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      submit();
    } else if (event.key === "Escape" && (reply || editing)) {
      setReply(null);
      if (editing) {
        setEditing(null);
        setText("");
      }
    }
  };
  const onFiles = async (event) => {
    const files = [...event.currentTarget.files];
    event.currentTarget.value = "";
    setBusy(true);
    for (const file of files) {
      try {
        await app.sendFile(chat.id, file);
      } catch (error) {
        app.toast(`Could not send ${file.name}: ${describe(error)}`);
      }
    }
    setBusy(false);
    inputRef.current?.focus();
  };
  const record = async () => {
    if (recording) {
      recording.recorder.stop();
      return;
    }
    let stream;
    try {
      stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    } catch (error) {
      app.toast(`No microphone: ${describe(error)}`);
      return;
    }
    const type =
      ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/mp4"].find((t) => MediaRecorder.isTypeSupported(t)) ??
      "";
    const recorder = new MediaRecorder(stream, type ? { mimeType: type } : undefined);
    const chunks = [];
    recorder.ondataavailable = (e) => e.data.size && chunks.push(e.data);
    recorder.onstop = async () => {
      stream.getTracks().forEach((t) => t.stop());
      setRecording(null);
      const mime = (recorder.mimeType || type || "audio/webm").split(";")[0];
      const blob = new Blob(chunks, { type: mime });
      if (blob.size < 200) return;
      const ext = mime.includes("ogg") ? "ogg" : mime.includes("mp4") ? "m4a" : "webm";
      try {
        await app.sendFile(chat.id, blob, { name: `voice-${new Date().toISOString().slice(0, 19)}.${ext}`, mime });
      } catch (error) {
        app.toast(`Voice message not sent: ${describe(error)}`);
      }
    };
    recorder.start();
    setRecording({ recorder, started: Date.now() });
  };

  return html`<form class="composer" onSubmit=${(e) => (e.preventDefault(), submit())}>
    ${
      reply || editing
        ? html`<div class="composer-context">
          <span>${editing ? "Editing your message" : html`Replying to <strong>${reply.sender_id === app.snapshot.me?.id ? "yourself" : app.nameOf(reply.sender_id)}</strong>: ${reply.text?.slice(0, 60) ?? "a file"}`}</span>
          <button type="button" class="icon-button small" aria-label=${editing ? "Cancel editing" : "Cancel reply"}
            onClick=${() => {
              setReply(null);
              if (editing) {
                setEditing(null);
                setText("");
              }
              inputRef.current?.focus();
            }}>✕</button>
        </div>`
        : null
    }
    ${stickers ? html`<${StickerPicker} chatId=${chat.id} close=${closeStickers} />` : null}
    <div class="composer-row">
      <input type="file" ref=${fileInput} class="visually-hidden" id="attach-input" multiple tabindex="-1" aria-hidden="true" onChange=${onFiles} />
      <button type="button" class="icon-button" aria-label="Attach a photo or file" title="Attach" disabled=${busy || !!editing}
        onClick=${() => fileInput.current?.click()}>
        <svg viewBox="0 0 24 24" width="22" height="22" aria-hidden="true"><path d="M16.5 6.5l-8 8a2.5 2.5 0 0 0 3.5 3.5l8.5-8.5a4.5 4.5 0 0 0-6.4-6.4L5.6 11.6a6.5 6.5 0 0 0 9.2 9.2l6.2-6.2" /></svg>
      </button>
      <label for="composer-input" class="visually-hidden">Message</label>
      <textarea id="composer-input" ref=${inputRef} rows="1" placeholder=${recording ? "Recording… press Stop to send" : "Message"} value=${text}
        aria-describedby="composer-help" disabled=${!!recording}
        onInput=${(e) => {
          setText(e.currentTarget.value);
          if (e.currentTarget.value) app.typing(chat.id);
        }}
        onKeyDown=${onKeyDown} onBlur=${() => app.stopTyping(chat.id)}></textarea>
      <span id="composer-help" class="visually-hidden">Enter sends, Shift+Enter starts a new line.</span>
      <button type="button" class="icon-button" ref=${stickerButton} aria-label="Stickers" title="Stickers"
        aria-expanded=${stickers ? "true" : "false"} disabled=${!!editing || !!recording} onClick=${() => setStickers(!stickers)}>
        <svg viewBox="0 0 24 24" width="22" height="22" aria-hidden="true"><path d="M20 12a8 8 0 1 1-8-8h8zM8.5 10h.01M15.5 10h.01M8.5 14.5a4.5 4.5 0 0 0 7 0" /></svg>
      </button>
      ${
        text.trim() || editing
          ? html`<button type="submit" class="send primary" aria-label=${editing ? "Save edit" : "Send"}>
            <svg viewBox="0 0 24 24" width="22" height="22" aria-hidden="true"><path d="M4 12l16-8-6 16-2-6z" /></svg>
          </button>`
          : html`<button type="button" class=${`icon-button${recording ? " recording" : ""}`} onClick=${record}
            aria-label=${recording ? "Stop and send the voice message" : "Record a voice message"} aria-pressed=${recording ? "true" : "false"}>
            ${
              recording
                ? html`<svg viewBox="0 0 24 24" width="22" height="22" aria-hidden="true"><rect x="6" y="6" width="12" height="12" rx="2" /></svg>`
                : html`<svg viewBox="0 0 24 24" width="22" height="22" aria-hidden="true"><path d="M12 3a3 3 0 0 1 3 3v6a3 3 0 0 1-6 0V6a3 3 0 0 1 3-3zM5 11a7 7 0 0 0 14 0M12 18v3" /></svg>`
            }
          </button>`
      }
    </div>
  </form>`;
}

export { navigate };

/** "12 members": every member, though a channel's subscriber is shown only themselves. */
function memberCount(chat) {
  const n = chat.member_count ?? chat.member_ids.length;
  return `${n} ${n === 1 ? "member" : "members"}`;
}
