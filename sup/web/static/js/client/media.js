// Files in messages, as something the page can show: an object URL (blob:) for an encrypted attachment,
// fetched and checked against its digest, then decrypted here; a signed URL for a plaintext chat's file (the
// server made its thumbnails), which is this server's or, with S3 blob storage, the bucket's (the page's
// Content-Security-Policy names the bucket's origin for images and video). Any tab may do this: it reads no
// ratchet state.

import { fromBase64 } from "../crypto/bytes.js";
import { decryptAttachment } from "../crypto/attachments.js";
import { ApiError } from "../api/http.js";

const BARS = 48;

export class MediaCache {
  /** @param {import("../api/http.js").Api} api */
  constructor(api) {
    this.api = api;
    /** @type {Map<string, Promise<{url: string, blob?: Blob}>>} */
    this.urls = new Map();
    /** @type {Map<string, Promise<number[]>>} */
    this.waveforms = new Map();
    /** @type {Map<string, Promise<object>>} */
    this.files = new Map();
  }

  /**
   * A plaintext chat's file as its message names it (`media_id` only), with what the server knows of it:
   * its type, name and size (an encrypted attachment carries these in its envelope instead).
   */
  describe(attachment) {
    if (attachment.key || attachment.mime || !attachment.media_id) return Promise.resolve(attachment);
    let found = this.files.get(attachment.media_id);
    if (!found) {
      found = this.api.media(attachment.media_id).then((m) => ({
        ...attachment,
        mime: m.mime ?? "",
        name: m.filename ?? "",
        size: m.size ?? 0,
      }));
      found.catch(() => this.files.delete(attachment.media_id));
      this.files.set(attachment.media_id, found);
    }
    return found;
  }

  /**
   * A URL for an attachment. `variant` ("small", "large", "original") matters for server-made thumbnails.
   * @returns {Promise<{url: string, blob?: Blob}>}
   */
  url(attachment, variant = "original") {
    const id = `${attachment.media_id}:${attachment.key ? "e2e" : variant}`;
    let found = this.urls.get(id);
    if (!found) {
      found = attachment.key ? this._decrypted(attachment) : this._signed(attachment.media_id, variant);
      found.catch(() => this.urls.delete(id)); // try again next time
      this.urls.set(id, found);
    }
    return found;
  }

  async _decrypted(a) {
    const blob = await this.api.download(a.media_id);
    const data = await decryptAttachment(blob, { key: fromBase64(a.key), digest: fromBase64(a.digest), size: a.size });
    const file = new Blob([data], { type: safeType(a.mime) });
    return { url: URL.createObjectURL(file), blob: file };
  }

  async _signed(mediaId, variant) {
    for (let attempt = 0; ; attempt++) {
      try {
        return { url: (await this.api.signedUrl(mediaId, variant)).url };
      } catch (error) {
        // Still being processed (thumbnails, probing): wait for it.
        if (!(error instanceof ApiError) || error.code !== "media_not_ready" || attempt > 20) throw error;
        await new Promise((resolve) => setTimeout(resolve, Math.min(5000, 300 * 2 ** attempt)));
      }
    }
  }

  /** Bars (0..1) of a voice message, from its decoded sound. */
  waveform(attachment) {
    let found = this.waveforms.get(attachment.media_id);
    if (!found) {
      found = this._waveform(attachment);
      this.waveforms.set(attachment.media_id, found);
    }
    return found;
  }

  async _waveform(attachment) {
    // A plaintext chat's file through the API: its signed URL may be an S3 bucket's, which the page may show
    // (img-src, media-src) but not read (connect-src 'self', and the bucket need not allow CORS).
    const data = attachment.key
      ? await (await this.url(attachment)).blob.arrayBuffer()
      : (await this.api.download(attachment.media_id)).buffer;
    const context = new OfflineAudioContext(1, 1, 44100);
    const audio = await context.decodeAudioData(data);
    const samples = audio.getChannelData(0);
    const step = Math.max(1, Math.floor(samples.length / BARS));
    const bars = [];
    for (let i = 0; i < BARS; i++) {
      let peak = 0;
      for (let j = i * step; j < Math.min(samples.length, (i + 1) * step); j++)
        peak = Math.max(peak, Math.abs(samples[j]));
      bars.push(peak);
    }
    const top = Math.max(...bars, 0.01);
    return bars.map((b) => b / top);
  }

  /** Drop every object URL (logging out). */
  clear() {
    for (const found of this.urls.values())
      found.then(({ url }) => url.startsWith("blob:") && URL.revokeObjectURL(url)).catch(() => {});
    this.urls.clear();
    this.waveforms.clear();
    this.files.clear();
  }
}

/** Types the page may render inline from a decrypted blob; anything else is a download. */
function safeType(mime) {
  return /^(image\/(png|jpeg|gif|webp|avif)|video\/(mp4|webm|ogg)|audio\/(mpeg|mp4|ogg|webm|wav|aac|x-m4a))(;.*)?$/.test(
    mime ?? "",
  )
    ? mime
    : "application/octet-stream";
}
