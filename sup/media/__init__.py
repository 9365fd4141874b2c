"""Media inspection and processing, written to be safe against hostile bytes.

- `sup.media.sniff`: what a file is, from its first bytes only.
- `sup.media.images`: orient, strip metadata, thumbnail and blurhash images (Pillow, sync).
- `sup.media.av_probe`: audio/video facts, a poster frame and a waveform, parsed by FFmpeg in a
  separate, resource-limited process (async).

Nothing here imports aiohttp or knows about HTTP.
"""


class MediaError(Exception):
    """Media could not be processed; the message says why, in words a person can act on."""
