// Sticker packs (docs/api.md "Sticker packs"): the picker next to the composer, Settings › Sticker packs
// (my installed packs in order, a pack from a share link, the packs I make) and the screen a share link
// opens (/stickers/<slug>). Loaded the first time one of them is shown (common.js `lazy`).
//
// Packs are public: a sticker's image comes through a signed URL like a plaintext chat's photo, and sending
// one names it in the clear (the server checks it is in a published pack) and, in an encrypted chat, in
// the envelope too (receivers take it from there).

import { html, useEffect, useRef, useState } from "./html.js";
import { app, describe, Field, useApp, useLoaded } from "./common.js";
import { onLink } from "./router.js";

/** An image of a sticker (or a pack's cover), through a signed URL; an animated WebP plays by itself. */
function StickerImage({ sticker, label = null }) {
  const [url, setUrl] = useState(null);
  useEffect(() => {
    let live = true;
    app.media.url({ media_id: sticker.media_id }, "original").then(
      (found) => live && setUrl(found.url),
      () => {},
    );
    return () => {
      live = false;
    };
  }, [sticker.media_id]);
  const alt = label ?? `Sticker ${sticker.emoji}`;
  if (url) return html`<img class="sticker-image" src=${url} alt=${alt} loading="lazy" />`;
  return alt
    ? html`<span class="sticker-image placeholder" role="img" aria-label=${alt}></span>`
    : html`<span class="sticker-image placeholder"></span>`;
}

/** The share link of a published pack: this server's /stickers/<slug>. */
export function shareLink(pack) {
  return `${location.origin}/stickers/${pack.slug}`;
}

/** A slug from what was pasted: a link (…/stickers/<slug>, …#/stickers/<slug>) or the slug itself. */
function slugOf(text) {
  const value = text.trim();
  const found = value.match(/stickers\/([A-Za-z0-9_-]+)\/?$/);
  if (found) return found[1];
  return /^[A-Za-z0-9_-]+$/.test(value) ? value : null;
}

// ---- the picker -------------------------------------------------------------------------------------

/** My installed packs as tabs, each a grid of stickers; choosing one sends it. */
export function StickerPicker({ chatId, close }) {
  const s = useApp();
  const [error, setError] = useState("");
  const [tab, setTab] = useState(0);
  const box = useRef(null);
  useEffect(() => {
    if (s.stickerPacks === null) app.loadStickerPacks().catch((e) => setError(describe(e)));
  }, []);
  const packs = s.stickerPacks;
  useEffect(() => {
    box.current?.querySelector('[role="tab"][aria-selected="true"], a, button')?.focus();
  }, [packs === null]);
  const current = packs?.[Math.min(tab, packs.length - 1)] ?? null;
  const send = async (sticker) => {
    close();
    try {
      await app.sendSticker(chatId, sticker.id);
    } catch (e) {
      app.toast(`Sticker not sent: ${describe(e)}`);
    }
  };
  const keys = (event) => {
    if (event.key === "Escape") {
      event.stopPropagation();
      close();
    } else if (event.target.getAttribute("role") === "tab" && ["ArrowLeft", "ArrowRight"].includes(event.key)) {
      event.preventDefault();
      const next = (tab + (event.key === "ArrowRight" ? 1 : -1) + packs.length) % packs.length;
      setTab(next);
      box.current?.querySelectorAll('[role="tab"]')[next]?.focus();
    }
  };
  return html`<section class="sticker-picker" ref=${box} role="dialog" aria-label="Stickers" onKeyDown=${keys}>
    ${
      error
        ? html`<p class="form-error" role="alert">${error}</p>`
        : packs === null
          ? html`<p class="muted" aria-busy="true">Loading…</p>`
          : packs.length === 0
            ? html`<div class="picker-empty">
              <p>No sticker packs yet.</p>
              <p><a href="/settings/stickers" onClick=${(e) => (close(), onLink(e))}>Add sticker packs in Settings</a></p>
            </div>`
            : html`<div class="pack-tabs" role="tablist" aria-label="Sticker packs">
                ${packs.map(
                  (p, i) => html`<button type="button" role="tab" key=${p.id} id=${`pack-tab-${p.id}`}
                    aria-selected=${p === current ? "true" : "false"} aria-controls="pack-panel" tabindex=${p === current ? "0" : "-1"}
                    onClick=${() => setTab(i)}>${p.title}</button>`,
                )}
              </div>
              <div class="sticker-grid" role="tabpanel" id="pack-panel" aria-labelledby=${`pack-tab-${current.id}`}>
                ${current.stickers.map(
                  (st) => html`<button type="button" class="sticker-choice" key=${st.id} aria-label=${`Send sticker ${st.emoji}`}
                    title=${st.emoji} onClick=${() => send(st)}><${StickerImage} sticker=${st} label="" /></button>`,
                )}
              </div>`
    }
  </section>`;
}

// ---- a pack, before installing it ----------------------------------------------------------------------

function PackPreview({ pack, onChange = () => {} }) {
  const [busy, setBusy] = useState(false);
  const [installed, setInstalled] = useState(pack.installed);
  const install = async () => {
    setBusy(true);
    try {
      const packs = await app.api.installStickerPack(pack.id);
      app.set({ stickerPacks: packs });
      setInstalled(true);
      onChange();
    } catch (e) {
      app.toast(describe(e));
    }
    setBusy(false);
  };
  return html`<div class="pack-preview">
    <p><strong>${pack.title}</strong> <span class="muted">· ${count(pack.stickers.length)}</span></p>
    <div class="sticker-grid small" role="list" aria-label=${`Stickers of ${pack.title}`}>
      ${pack.stickers.map((st) => html`<span role="listitem" key=${st.id}><${StickerImage} sticker=${st} /></span>`)}
    </div>
    ${
      installed
        ? html`<p class="muted">Installed: its stickers are in the picker next to the message box.</p>`
        : html`<button type="button" class="primary" disabled=${busy} onClick=${install}
            aria-label=${`Install ${pack.title}`}>Install</button>`
    }
  </div>`;
}

function count(n) {
  return `${n} sticker${n === 1 ? "" : "s"}`;
}

/** /stickers/<slug>: a pack someone shared. */
export function StickerPackScreen({ slug }) {
  const [pack, setPack] = useState(null);
  const [error, setError] = useState("");
  useEffect(() => {
    app.api.stickerPackBySlug(slug).then(setPack, (e) =>
      setError(e.code === "not_found" ? "This sticker pack does not exist, or is not published." : describe(e)),
    );
  }, [slug]);
  return html`<section class="page" aria-labelledby="pack-title">
    <header class="page-head">
      <a href="/" onClick=${onLink} class="back icon-button" aria-label="Back to chats">‹</a>
      <h1 id="pack-title">${pack ? `Sticker pack: ${pack.title}` : "Sticker pack"}</h1>
    </header>
    <div class="card">
      ${
        error
          ? html`<p class="form-error" role="alert">${error}</p>`
          : pack
            ? html`<${PackPreview} pack=${pack} />`
            : html`<p aria-busy="true">Loading…</p>`
      }
    </div>
  </section>`;
}

// ---- Settings › Sticker packs ----------------------------------------------------------------------------

export function StickerSettings() {
  const s = useApp();
  const [error, setError] = useState("");
  useEffect(() => {
    app.loadStickerPacks().catch((e) => setError(describe(e)));
  }, []);
  const packs = s.stickerPacks;
  const move = async (index, by) => {
    const ids = packs.map((p) => p.id);
    [ids[index], ids[index + by]] = [ids[index + by], ids[index]];
    try {
      app.set({ stickerPacks: await app.api.reorderStickerPacks(ids) });
    } catch (e) {
      setError(describe(e));
    }
  };
  const uninstall = async (pack) => {
    try {
      await app.api.uninstallStickerPack(pack.id);
      await app.loadStickerPacks();
    } catch (e) {
      setError(describe(e));
    }
  };
  return html`
    ${error ? html`<p class="form-error" role="alert">${error}</p>` : null}
    <h3>Installed</h3>
    ${
      packs === null
        ? html`<p>Loading…</p>`
        : packs.length === 0
          ? html`<p class="muted">None yet: add one from a link, or make your own below.</p>`
          : html`<ol class="device-list pack-list" aria-label="Installed sticker packs">
            ${packs.map(
              (p, i) => html`<li key=${p.id}>
                <span class="pack-name">${p.stickers[0] ? html`<${StickerImage} sticker=${p.stickers[0]} label="" />` : null}
                  <span><strong>${p.title}</strong> <span class="muted">· ${count(p.stickers.length)}</span></span></span>
                <span class="row-actions">
                  <button type="button" class="small" disabled=${i === 0} onClick=${() => move(i, -1)} aria-label=${`Move ${p.title} up`}>↑</button>
                  <button type="button" class="small" disabled=${i === packs.length - 1} onClick=${() => move(i, 1)}
                    aria-label=${`Move ${p.title} down`}>↓</button>
                  <button type="button" class="small" onClick=${() => uninstall(p)} aria-label=${`Remove ${p.title}`}>Remove</button>
                </span>
              </li>`,
            )}
          </ol>`
    }
    <${AddByLink} />
    <${MyPacks} />
  `;
}

function AddByLink() {
  const [pack, setPack] = useState(null);
  const [error, setError] = useState("");
  const find = async (event) => {
    event.preventDefault();
    setError("");
    setPack(null);
    const slug = slugOf(String(new FormData(event.currentTarget).get("link")));
    if (!slug) return setError("That is not a link to a sticker pack.");
    try {
      setPack(await app.api.stickerPackBySlug(slug));
    } catch (e) {
      setError(e.code === "not_found" ? "No published sticker pack has that link." : describe(e));
    }
  };
  return html`<h3>Add a pack from a link</h3>
    <form class="inline-form" onSubmit=${find}>
      <${Field} label="Link to a sticker pack" id="pack-link" name="link" required autocomplete="off" autocapitalize="none" />
      <button type="submit">Show</button>
    </form>
    ${error ? html`<p class="form-error" role="alert">${error}</p>` : null}
    ${pack ? html`<${PackPreview} pack=${pack} />` : null}`;
}

function MyPacks() {
  const [editing, setEditing] = useState(null);
  const [error, setError] = useState("");
  const [packs, load] = useLoaded(() => app.api.myStickerPacks(), (e) => setError(describe(e)));
  const create = async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    setError("");
    try {
      const pack = await app.api.createStickerPack(String(new FormData(form).get("title")).trim());
      form.reset();
      setEditing(pack.id);
      load();
    } catch (e) {
      setError(describe(e));
    }
  };
  return html`<h3>Your packs</h3>
    ${error ? html`<p class="form-error" role="alert">${error}</p>` : null}
    ${
      packs === null
        ? html`<p>Loading…</p>`
        : packs.length === 0
          ? html`<p class="muted">You have not made a sticker pack.</p>`
          : html`<ul class="device-list" aria-label="Your sticker packs">
            ${packs.map(
              (p) => html`<li key=${p.id}>
                <span><strong>${p.title}</strong> <span class="muted">· ${count(p.stickers.length)}</span>
                  ${p.published ? null : html` <span class="tag">draft</span>`}
                  ${p.published ? html`<br /><span class="muted share-link">Share: <span class="mono">${shareLink(p)}</span></span>` : null}</span>
                <span class="row-actions">
                  ${
                    p.published
                      ? html`<button type="button" class="small" onClick=${() => copy(shareLink(p))} aria-label=${`Copy the link to ${p.title}`}>Copy link</button>`
                      : html`<button type="button" class="small" onClick=${() => setEditing(editing === p.id ? null : p.id)}
                          aria-expanded=${editing === p.id ? "true" : "false"} aria-label=${`Edit ${p.title}`}>Edit</button>`
                  }
                </span>
                ${editing === p.id && !p.published ? html`<${PackEditor} pack=${p} changed=${load} />` : null}
              </li>`,
            )}
          </ul>`
    }
    <form class="inline-form" onSubmit=${create}>
      <${Field} label="Title of a new pack" id="pack-title-new" name="title" required maxlength="64" />
      <button type="submit">Create pack</button>
    </form>`;
}

function copy(text) {
  navigator.clipboard?.writeText(text).then(
    () => app.toast("Link copied."),
    () => app.toast(text),
  );
}

/** A draft of mine: add stickers (PNG or WebP, an emoji each), take them out, publish. */
function PackEditor({ pack, changed }) {
  const [status, setStatus] = useState("");
  const [busy, setBusy] = useState(false);
  const add = async (event) => {
    event.preventDefault();
    const form = event.currentTarget;
    const data = new FormData(form);
    const file = data.get("image");
    const emoji = String(data.get("emoji")).trim();
    if (!(file instanceof File) || !file.size) return setStatus("Choose an image.");
    setBusy(true);
    setStatus("Uploading…");
    try {
      const uploaded = await app.api.upload(file, { purpose: "sticker", filename: file.name });
      setStatus("Checking the image…");
      const media = await app.api.processed(uploaded.id);
      if (media.status !== "ready") throw new Error(media.failure || "the server could not use this image");
      await app.api.addSticker(pack.id, media.id, emoji);
      form.reset();
      setStatus(`Added ${emoji}.`);
      changed();
    } catch (e) {
      setStatus(`Not added: ${describe(e)}`);
    }
    setBusy(false);
  };
  const remove = async (sticker) => {
    await app.api.removeSticker(pack.id, sticker.id).catch((e) => setStatus(describe(e)));
    changed();
  };
  const publish = async () => {
    if (!confirm(`Publish “${pack.title}”? Everyone on this server will be able to see and use it, for good.`)) return;
    try {
      await app.api.publishStickerPack(pack.id);
      await app.api.installStickerPack(pack.id);
      await app.loadStickerPacks();
      changed();
    } catch (e) {
      setStatus(describe(e));
    }
  };
  return html`<div class="pack-editor">
    ${
      pack.stickers.length
        ? html`<ul class="sticker-grid small" aria-label=${`Stickers of ${pack.title}`}>
          ${pack.stickers.map(
            (st) => html`<li key=${st.id}><${StickerImage} sticker=${st} />
              <button type="button" class="link" onClick=${() => remove(st)} aria-label=${`Take ${st.emoji} out`}>Take out</button></li>`,
          )}
        </ul>`
        : html`<p class="muted">No stickers yet.</p>`
    }
    <form class="inline-form" onSubmit=${add}>
      <div class="field">
        <label for=${`sticker-file-${pack.id}`}>Sticker image (PNG or WebP, animated or not, up to 1 MB)</label>
        <input id=${`sticker-file-${pack.id}`} name="image" type="file" accept="image/png,image/webp" required />
      </div>
      <${Field} label="Emoji" id=${`sticker-emoji-${pack.id}`} name="emoji" required maxlength="32" hint="The emoji it stands for" />
      <button type="submit" disabled=${busy}>Add sticker</button>
    </form>
    <p class="form-status" role="status">${status}</p>
    <button type="button" class="primary" disabled=${!pack.stickers.length} onClick=${publish}>Publish ${pack.title}</button>
  </div>`;
}
