// Stories (docs/api.md "Stories"; not end-to-end encrypted: the server shows them to their audience): the
// full-screen viewer, posting one, and Settings › Stories (close friends). Loaded the first time one of them
// is shown (common.js `lazy`); the rings above the chat list are in chatlist.js.
//
// The viewer plays an author's stories oldest first, from the first one not seen; then the next author with
// stories not seen. Tap (or click) the right of the picture, or press →, for the next story; the left, or ←,
// for the one before; hold it, or press Space, to pause; Escape closes. A photo stays 5 seconds, a video its
// length.

import { html, useEffect, useRef, useState } from "./html.js";
import { actOnUsername, app, Avatar, describe, Field, formatTime, useApp, useLoaded } from "./common.js";
import { storyOrder } from "./chatlist.js";
import { navigate, onLink } from "./router.js";

const PHOTO_MS = 5000;
const HOLD_MS = 250; // a press longer than this pauses instead of moving on

function closeViewer() {
  navigate(app.storyReturn && !app.storyReturn.startsWith("/stories") ? app.storyReturn : "/", { replace: true });
}

/** The URL of a story's file: the large thumbnail of a photo (the original if there is none), a video's file. */
async function storyUrl(story) {
  const kind = story.media?.kind;
  if (kind === "video") return (await app.media.url({ media_id: story.media_id }, "original")).url;
  try {
    return (await app.media.url({ media_id: story.media_id }, "large")).url;
  } catch {
    return (await app.media.url({ media_id: story.media_id }, "original")).url;
  }
}

function ago(ms) {
  const minutes = Math.max(0, Math.round((Date.now() - ms) / 60000));
  if (minutes < 1) return "just now";
  if (minutes < 60) return `${minutes} min ago`;
  return `${Math.round(minutes / 60)} h ago`;
}

// ---- the viewer ---------------------------------------------------------------------------------------

export function StoryViewer({ authorId, storyId = null }) {
  const s = useApp();
  const me = s.me?.id;
  const groups = s.stories;
  const group = groups?.find((g) => g.author.id === authorId) ?? null;
  // oldest first, as they were told
  const stories = group ? [...group.stories].sort((a, b) => a.created_at - b.created_at) : [];
  const [index, setIndex] = useState(() => {
    if (storyId) return Math.max(0, stories.findIndex((st) => st.id === storyId));
    const unseen = stories.findIndex((st) => !st.seen);
    return authorId === me || unseen < 0 ? 0 : unseen;
  });
  const [held, setHeld] = useState(false); // pressed, or paused with Space or the button
  const [busy, setBusy] = useState(false); // typing a reply, reading who viewed: the clock stops
  const [sound, setSound] = useState(false); // videos start muted (browsers play only those by themselves)
  const dialog = useRef(null);
  const onKey = useRef(null);
  useEffect(() => {
    // On the document: a tap replaces the story, and with it the button that had the focus.
    const listener = (event) => onKey.current?.(event);
    document.addEventListener("keydown", listener);
    return () => document.removeEventListener("keydown", listener);
  }, []);
  useEffect(() => {
    if (!dialog.current?.open) dialog.current?.showModal?.();
  }, []);
  useEffect(() => {
    if (groups !== null && !stories.length) closeViewer(); // expired or deleted meanwhile
  }, [groups !== null, stories.length]);
  const story = stories[Math.min(index, stories.length - 1)] ?? null;
  useEffect(() => {
    if (story) app.viewStory(story);
  }, [story?.id]);
  if (!group || !story) {
    return html`<dialog class="story-viewer" ref=${dialog} aria-label="Stories" onCancel=${closeViewer}>
      <p class="story-empty">${groups === null ? "Loading…" : "These stories are gone."}</p>
    </dialog>`;
  }
  const mine = authorId === me;
  const name = mine ? "You" : group.author.display_name || group.author.username;
  const others = storyOrder(groups, me).filter((g) => g.author.id !== me);
  const next = () => {
    if (index < stories.length - 1) return setIndex(index + 1);
    // the next author with stories not seen, in the rings' order (this one's are seen now); else close
    const after = mine ? null : others.find((g) => g.author.id !== authorId && !g.all_seen);
    if (after) navigate(`/stories/${after.author.id}`, { replace: true });
    else closeViewer();
  };
  const previous = () => index > 0 && setIndex(index - 1);
  const paused = held || busy;
  onKey.current = (event) => {
    if (event.target.closest?.("input, textarea, select")) return;
    if (event.key === "ArrowRight") next();
    else if (event.key === "ArrowLeft") previous();
    else if (event.key === " ") {
      event.preventDefault();
      setHeld(!held);
    } else return;
    event.preventDefault();
  };
  return html`<dialog class="story-viewer" ref=${dialog} aria-label=${mine ? "Your stories" : `Stories of ${name}`}
    onCancel=${(e) => (e.preventDefault(), closeViewer())}>
    <div class="story-frame">
      <div class="story-progress" aria-hidden="true">
        ${stories.map((st, i) => html`<span class="segment" key=${st.id}><span class=${`fill${i < index ? " done" : ""}`}></span></span>`)}
      </div>
      <header class="story-head">
        <${Avatar} id=${group.author.id} name=${group.author.display_name || group.author.username} size="m" />
        <p><strong>${name}</strong> <span class="story-time">${ago(story.created_at)}</span></p>
        ${
          story.media?.kind === "video"
            ? html`<button type="button" class="icon-button story-control" aria-pressed=${sound ? "true" : "false"}
                aria-label="Sound" onClick=${() => setSound(!sound)}>${sound ? "🔊" : "🔇"}</button>`
            : null
        }
        <button type="button" class="icon-button story-control" aria-pressed=${held ? "true" : "false"}
          aria-label=${held ? "Play" : "Pause"} onClick=${() => setHeld(!held)}>${held ? "▶" : "❚❚"}</button>
        <button type="button" class="icon-button story-control" aria-label="Close" onClick=${closeViewer}>✕</button>
      </header>
      <${StoryMedia} key=${story.id} story=${story} index=${index} paused=${paused} sound=${sound} done=${next} setHeld=${setHeld}
        previous=${previous} next=${next} label=${`Story ${index + 1} of ${stories.length} from ${name}`} />
      <footer class="story-foot">
        ${story.caption ? html`<p class="story-caption">${story.caption}</p>` : null}
        ${
          mine
            ? html`<${MyStoryTools} story=${story} setBusy=${setBusy} />`
            : html`<${ReplyBox} story=${story} author=${group.author} name=${name} setBusy=${setBusy} />`
        }
      </footer>
    </div>
  </dialog>`;
}

/** The picture or video, the tap zones, and the clock that fills the progress bar. */
function StoryMedia({ story, index, paused, sound, done, setHeld, previous, next, label }) {
  const [url, setUrl] = useState(null);
  const [error, setError] = useState("");
  const [ready, setReady] = useState(false);
  const video = useRef(null);
  const pressed = useRef(0);
  const wasHold = useRef(false);
  const elapsed = useRef(0); // ms of a photo shown, pauses not counted
  const stopped = useRef(paused);
  stopped.current = paused; // read by the clock at once, not after the effects of this render have run
  const finished = useRef(false);
  const finish = () => {
    if (finished.current) return; // the clock and the video's end may both say so
    finished.current = true;
    done();
  };
  const nextButton = useRef(null);
  // A new story: the bars before it are full (their class), this one and those after it empty; the focus,
  // if it was on the tap zone that went with the story before, is on this one's.
  useEffect(() => {
    if (!document.activeElement || document.activeElement === document.body) nextButton.current?.focus();
    document.querySelectorAll(".story-progress .fill").forEach((fill, i) => {
      fill.style.width = i === index ? "0%" : "";
    });
  }, []);
  useEffect(() => {
    let live = true;
    storyUrl(story).then(
      (found) => live && setUrl(found),
      (e) => live && setError(describe(e)),
    );
    return () => {
      live = false;
    };
  }, [story.id]);
  // The clock: a photo's 5 s, a video's own time; the bar is filled through the CSSOM (no style attributes).
  useEffect(() => {
    if (!ready || paused) {
      if (video.current && paused) video.current.pause();
      return undefined;
    }
    if (video.current) video.current.play().catch(() => {});
    const fill = document.querySelectorAll(".story-progress .fill")[index];
    let last = performance.now();
    let frame;
    const tick = (now) => {
      if (stopped.current) return;
      const el = video.current;
      if (!el) elapsed.current += now - last;
      last = now;
      const fraction = el ? (el.duration ? el.currentTime / el.duration : 0) : elapsed.current / PHOTO_MS;
      if (fill) fill.style.width = `${Math.min(100, fraction * 100)}%`;
      if (fraction >= 1 || el?.ended) finish();
      else frame = requestAnimationFrame(tick);
    };
    frame = requestAnimationFrame(tick);
    return () => cancelAnimationFrame(frame);
  }, [ready, paused, story.id]);
  const down = () => {
    pressed.current = Date.now();
    wasHold.current = false;
    setTimeout(() => {
      if (pressed.current && Date.now() - pressed.current >= HOLD_MS) {
        wasHold.current = true;
        setHeld(true);
      }
    }, HOLD_MS);
  };
  const up = () => {
    pressed.current = 0;
    if (wasHold.current) setHeld(false);
  };
  const tap = (go) => () => {
    if (wasHold.current) return; // a hold paused; letting go goes on, it does not skip
    go();
  };
  return html`<div class="story-media">
    ${
      error
        ? html`<p class="story-empty" role="alert">Could not load this story: ${error}</p>`
        : !url
          ? html`<p class="story-empty" aria-busy="true">Loading…</p>`
          : story.media?.kind === "video"
            ? html`<video ref=${video} src=${url} playsinline muted=${!sound} aria-label=${label}
                onLoadedMetadata=${() => setReady(true)} onEnded=${finish}></video>`
            : html`<img src=${url} alt=${story.caption ? `${label}: ${story.caption}` : label} onLoad=${() => setReady(true)} />`
    }
    <button type="button" class="story-tap previous" aria-label="Previous story" onClick=${tap(previous)}
      onPointerDown=${down} onPointerUp=${up} onPointerCancel=${up} onPointerLeave=${up}></button>
    <button type="button" class="story-tap next" aria-label="Next story" ref=${nextButton} onClick=${tap(next)}
      onPointerDown=${down} onPointerUp=${up} onPointerCancel=${up} onPointerLeave=${up}></button>
  </div>`;
}

function ReplyBox({ story, author, name, setBusy }) {
  const [text, setText] = useState("");
  const [sent, setSent] = useState("");
  const send = async (event) => {
    event.preventDefault();
    const value = text.trim();
    if (!value) return;
    setText("");
    try {
      await app.replyToStory(story, author, value);
      setSent(`Sent to ${name}, in your chat.`);
    } catch (e) {
      setSent(`Not sent: ${describe(e)}`);
    }
  };
  return html`<form class="story-reply" onSubmit=${send}>
    <label for="story-reply" class="visually-hidden">Reply to ${name}</label>
    <input id="story-reply" placeholder=${`Reply to ${name}…`} value=${text} autocomplete="off"
      onInput=${(e) => setText(e.currentTarget.value)} onFocus=${() => setBusy(true)} onBlur=${() => setBusy(false)} />
    <button type="submit" class="primary" disabled=${!text.trim()}>Send</button>
    <p class="story-sent" role="status">${sent}</p>
  </form>`;
}

/** My own story: who viewed it, and taking it down. */
function MyStoryTools({ story, setBusy }) {
  const [views, setViews] = useState(null);
  const [count, setCount] = useState(story.view_count ?? 0);
  useEffect(() => {
    // the feed's count is as old as the feed: ask now
    app.api.storyViews(story.id).then(
      (page) => setCount(page.count),
      () => {},
    );
  }, [story.id]);
  const show = async () => {
    if (views) {
      setViews(null);
      setBusy(false);
      return;
    }
    setBusy(true);
    try {
      const page = await app.api.storyViews(story.id);
      setViews(page.items);
      setCount(page.count);
    } catch (e) {
      app.toast(describe(e));
      setBusy(false);
    }
  };
  const remove = async () => {
    setBusy(true);
    if (!confirm("Delete this story? It disappears for everyone.")) return setBusy(false);
    try {
      await app.deleteStory(story.id);
    } catch (e) {
      app.toast(describe(e));
    }
    setBusy(false);
  };
  return html`<div class="story-mine">
    <button type="button" class="small" aria-expanded=${views ? "true" : "false"} onClick=${show}>
      Seen by ${count} ${count === 1 ? "person" : "people"}
    </button>
    <button type="button" class="small danger" onClick=${remove}>Delete story</button>
    ${
      views
        ? html`<ul class="story-views" aria-label="Who viewed your story">
          ${views.length ? null : html`<li class="muted">No one yet.</li>`}
          ${views.map((v) => html`<li key=${v.user.id}>${v.user.display_name || v.user.username} <span class="muted">${formatTime(v.viewed_at)}</span></li>`)}
        </ul>`
        : null
    }
  </div>`;
}

// ---- posting a story ------------------------------------------------------------------------------------

const AUDIENCES = [
  ["chats", "Everyone I share a chat with", "People in your direct chats and groups (not channels)."],
  ["contacts", "My contacts", "The people you added as contacts."],
  ["close_friends", "Close friends", "The people on your close-friends list."],
  ["contacts_except", "My contacts, except…", "Your contacts, but the people on a list you choose."],
];

export function NewStory() {
  const [file, setFile] = useState(null);
  const [preview, setPreview] = useState(null);
  const [audience, setAudience] = useState("contacts");
  const [lists, setLists] = useState(null);
  const [status, setStatus] = useState("");
  const [busy, setBusy] = useState(false);
  useEffect(() => {
    if (!file) return undefined;
    const url = URL.createObjectURL(file);
    setPreview(url);
    return () => URL.revokeObjectURL(url);
  }, [file]);
  useEffect(() => {
    if (audience === "contacts_except" && lists === null) {
      app.api.storyLists().then((all) => setLists(all.filter((l) => l.kind === "exclude")), (e) => setStatus(describe(e)));
    }
  }, [audience]);
  const post = async (event) => {
    event.preventDefault();
    const form = new FormData(event.currentTarget);
    if (!file) return setStatus("Choose a photo or a video.");
    setBusy(true);
    setStatus("Posting…");
    try {
      let listId = null;
      if (audience === "contacts_except") {
        listId = String(form.get("list") ?? "");
        if (listId === "new" || !listId) {
          const leftOut = form.getAll("leave-out").map(String);
          const name = String(form.get("list-name") || "").trim() || `Left out ${new Date().toLocaleDateString()}`;
          listId = (await app.api.createStoryList(name, leftOut)).id;
        }
      }
      const story = await app.postStory({ file, audience, caption: String(form.get("caption") ?? ""), listId });
      app.storyReturn = "/";
      navigate(`/stories/${story.author_id}/${story.id}`, { replace: true });
    } catch (e) {
      setStatus(`Not posted: ${describe(e)}`);
      setBusy(false);
    }
  };
  return html`<section class="page" aria-labelledby="new-story-title">
    <header class="page-head">
      <a href="/" onClick=${onLink} class="back icon-button" aria-label="Back to chats">‹</a>
      <h1 id="new-story-title">New story</h1>
    </header>
    <form class="card new-story" onSubmit=${post}>
      <p class="muted">A story is a photo or video shown for a day to the people you choose. Stories are not
        end-to-end encrypted: the server shows them to their audience, as it does channel posts.</p>
      <div class="field">
        <label for="story-file">Photo or video</label>
        <input id="story-file" type="file" accept="image/*,video/*" required
          onChange=${(e) => setFile(e.currentTarget.files[0] ?? null)} />
      </div>
      ${
        preview
          ? file.type.startsWith("video/")
            ? html`<video class="story-preview" src=${preview} muted playsinline controls aria-label="Your video"></video>`
            : html`<img class="story-preview" src=${preview} alt="Your photo" />`
          : null
      }
      <div class="field">
        <label for="story-caption">Caption</label>
        <textarea id="story-caption" name="caption" rows="2" maxlength="2048"></textarea>
      </div>
      <fieldset class="audience">
        <legend>Who can see it</legend>
        ${AUDIENCES.map(
          ([value, label, hint]) => html`<label class="choice" key=${value}>
            <input type="radio" name="audience" value=${value} checked=${audience === value}
              onChange=${() => setAudience(value)} />
            <span><span class="choice-label">${label}</span> <span class="muted">${hint}</span></span>
          </label>`,
        )}
      </fieldset>
      ${audience === "close_friends" ? html`<p><a href="/settings/stories" onClick=${onLink}>Edit your close friends</a></p>` : null}
      ${audience === "contacts_except" ? html`<${LeaveOut} lists=${lists} />` : null}
      <button type="submit" class="primary" disabled=${busy}>Post story</button>
      <p class="form-status" role="status">${status}</p>
    </form>
  </section>`;
}

/** Who "my contacts, except…" leaves out: one of my lists, or a new one picked from my contacts. */
function LeaveOut({ lists }) {
  const [choice, setChoice] = useState("new");
  // Contacts that cannot be fetched show as none to pick: an optional part of the form, not worth an error.
  const [contacts] = useLoaded(() => app.api.contacts().then((page) => page.items, () => []));
  useEffect(() => {
    if (lists?.length) setChoice(lists[0].id);
  }, [lists?.length]);
  if (lists === null) return html`<p aria-busy="true">Loading your lists…</p>`;
  return html`<fieldset class="audience">
    <legend>Leave out</legend>
    ${lists.map(
      (l) => html`<label class="choice" key=${l.id}>
        <input type="radio" name="list" value=${l.id} checked=${choice === l.id} onChange=${() => setChoice(l.id)} />
        <span>${l.name} <span class="muted">(${l.size} ${l.size === 1 ? "person" : "people"})</span></span>
      </label>`,
    )}
    <label class="choice">
      <input type="radio" name="list" value="new" checked=${choice === "new"} onChange=${() => setChoice("new")} />
      <span>A new list</span>
    </label>
    ${
      choice === "new"
        ? html`<div class="new-list">
          <${Field} label="Name of the list" id="list-name" name="list-name" maxlength="64" />
          ${
            contacts === null
              ? html`<p>Loading your contacts…</p>`
              : contacts.length === 0
                ? html`<p class="muted">You have no contacts to leave out.</p>`
                : contacts.map(
                    (c) => html`<label class="choice" key=${c.user.id}>
                      <input type="checkbox" name="leave-out" value=${c.user.id} />
                      <span>${c.user.display_name || c.user.username} <span class="muted">@${c.user.username}</span></span>
                    </label>`,
                  )
          }
        </div>`
        : null
    }
  </fieldset>`;
}

// ---- Settings › Stories ------------------------------------------------------------------------------------

/** My close-friends list: who is on it, add by username, take off. */
export function StorySettings() {
  const [error, setError] = useState("");
  const [members, load] = useLoaded(
    () => app.api.storyList("close-friends").then((list) => list.members),
    (e) => setError(describe(e)),
  );
  const add = async (event) => {
    event.preventDefault();
    setError("");
    const failed = await actOnUsername(
      event.currentTarget,
      (id) => app.api.post("/stories/lists/close-friends/members", { user_ids: [id] }),
      (e) =>
        e.status === 422
          ? "You can only add people you know: your contacts and people you share a chat with."
          : describe(e),
    );
    if (failed) setError(failed);
    else load();
  };
  const remove = async (userId) => {
    await app.api.del(`/stories/lists/close-friends/members/${encodeURIComponent(userId)}`).catch((e) => setError(describe(e)));
    load();
  };
  return html`
    <p>Who sees the stories you post for “Close friends”.</p>
    ${error ? html`<p class="form-error" role="alert">${error}</p>` : null}
    ${
      members === null
        ? html`<p>Loading…</p>`
        : members.length === 0
          ? html`<p class="muted">No one yet.</p>`
          : html`<ul class="device-list" aria-label="Close friends">
            ${members.map(
              (m) => html`<li key=${m.user.id}><span>${m.user.display_name} <span class="muted">@${m.user.username}</span></span>
                <button type="button" class="small" onClick=${() => remove(m.user.id)} aria-label=${`Take ${m.user.username} off`}>Take off</button></li>`,
            )}
          </ul>`
    }
    <form class="inline-form" onSubmit=${add}>
      <${Field} label="Add a close friend by username" id="cf-username" name="username" required autocapitalize="none" autocomplete="off" />
      <button type="submit">Add</button>
    </form>
  `;
}
