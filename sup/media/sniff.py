"""What a file is, from its first bytes: never from its name or a client's Content-Type.

`sniff` is deliberately conservative: a type is reported only when its signature is
unambiguous, and anything unknown is `application/octet-stream`. Markup a browser would
render (HTML, SVG, XML) is recognised as such so the server can refuse to serve it inline.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass
from typing import Literal

Kind = Literal["image", "video", "audio", "file"]


@dataclass(frozen=True, slots=True)
class Sniffed:
    mime: str
    kind: Kind
    extension: str


OCTET_STREAM = Sniffed("application/octet-stream", "file", "bin")
_TEXT = Sniffed("text/plain", "file", "txt")
_HTML = Sniffed("text/html", "file", "html")
_XHTML = Sniffed("application/xhtml+xml", "file", "xhtml")
_SVG = Sniffed("image/svg+xml", "file", "svg")
_XML = Sniffed("application/xml", "file", "xml")

# Prefix signatures, checked in order.
_MAGIC: tuple[tuple[bytes, Sniffed], ...] = (
    (b"\xff\xd8\xff", Sniffed("image/jpeg", "image", "jpg")),
    (b"\x89PNG\r\n\x1a\n", Sniffed("image/png", "image", "png")),
    (b"GIF87a", Sniffed("image/gif", "image", "gif")),
    (b"GIF89a", Sniffed("image/gif", "image", "gif")),
    (b"%PDF-", Sniffed("application/pdf", "file", "pdf")),
    (b"fLaC", Sniffed("audio/flac", "audio", "flac")),
    (b"\x1f\x8b", Sniffed("application/gzip", "file", "gz")),
    (b"7z\xbc\xaf\x27\x1c", Sniffed("application/x-7z-compressed", "file", "7z")),
    (b"Rar!\x1a\x07", Sniffed("application/vnd.rar", "file", "rar")),
    (b"II*\x00", Sniffed("image/tiff", "file", "tiff")),
    (b"MM\x00*", Sniffed("image/tiff", "file", "tiff")),
    # Executables: never given a type a browser or OS would act on.
    (b"MZ", OCTET_STREAM),
    (b"\x7fELF", OCTET_STREAM),
    (b"\xfe\xed\xfa\xce", OCTET_STREAM),
    (b"\xfe\xed\xfa\xcf", OCTET_STREAM),
    (b"\xce\xfa\xed\xfe", OCTET_STREAM),
    (b"\xcf\xfa\xed\xfe", OCTET_STREAM),
    (b"\xca\xfe\xba\xbe", OCTET_STREAM),  # Mach-O universal binary (and Java class files)
    (b"\x00asm", OCTET_STREAM),
)

_AVIF = Sniffed("image/avif", "image", "avif")
_HEIC = Sniffed("image/heic", "image", "heic")
_HEIC_SEQUENCE = Sniffed("image/heic-sequence", "image", "heic")
_HEIF = Sniffed("image/heif", "image", "heif")
_HEIF_SEQUENCE = Sniffed("image/heif-sequence", "image", "heif")
# Brands that name the codec come first: the structural brands (mif1, msf1) are listed by AVIF
# and HEIC files alike, often before the one that says which it is.
_FTYP_IMAGE = {
    b"avif": _AVIF,
    b"avis": _AVIF,
    b"heic": _HEIC,
    b"heix": _HEIC,
    b"heim": _HEIC,
    b"heis": _HEIC,
    b"hevc": _HEIC_SEQUENCE,
    b"hevx": _HEIC_SEQUENCE,
    b"hevm": _HEIC_SEQUENCE,
    b"hevs": _HEIC_SEQUENCE,
}
_FTYP_IMAGE_GENERIC = {b"mif1": _HEIF, b"msf1": _HEIF_SEQUENCE}
# The HEIF family: decoded by the HEIF plugin (libheif), never by Pillow's own decoders.
HEIF_MIMES = frozenset({_HEIC.mime, _HEIC_SEQUENCE.mime, _HEIF.mime, _HEIF_SEQUENCE.mime})
_M4A = Sniffed("audio/mp4", "audio", "m4a")
_MOV = Sniffed("video/quicktime", "video", "mov")
_MP4 = Sniffed("video/mp4", "video", "mp4")
_3GP = Sniffed("video/3gpp", "video", "3gp")
# A container that may hold a film says nothing about whether it does: an MP4 or 3GP from a
# phone's voice recorder has the brand of a video (isom, mp42, 3gp4) and only sound. What it is
# when FFmpeg finds no picture in it.
_AUDIO_ONLY = {
    "video/mp4": _M4A,
    "video/quicktime": _M4A,
    "video/3gpp": Sniffed("audio/3gpp", "audio", "3gp"),
    "video/webm": Sniffed("audio/webm", "audio", "weba"),
    "video/x-matroska": Sniffed("audio/x-matroska", "audio", "mka"),
    "video/ogg": Sniffed("audio/ogg", "audio", "ogg"),
}

# Matroska CodecID element (0x86), a one-byte size, then a video or audio codec name.
_MKV_VIDEO_CODEC = re.compile(rb"\x86[\x81-\xff]V_")
_MKV_AUDIO_CODEC = re.compile(rb"\x86[\x81-\xff]A_")

# The tags the WHATWG MIME sniffing standard treats as "this is HTML".
_HTML_TAGS = (
    b"<!doctype html",
    b"<html",
    b"<head",
    b"<script",
    b"<iframe",
    b"<h1",
    b"<div",
    b"<font",
    b"<table",
    b"<a",
    b"<style",
    b"<title",
    b"<b",
    b"<body",
    b"<br",
    b"<p",
    b"<!--",
)

_ACTIVE_MIMES = frozenset(
    {
        "text/html",
        "application/xhtml+xml",
        "image/svg+xml",
        "application/xml",
        "text/xml",
        "text/xsl",
        "application/xslt+xml",
        "text/javascript",
        "application/javascript",
        "application/x-javascript",
        "text/ecmascript",
        "application/ecmascript",
        "text/jscript",
        "application/x-shockwave-flash",
        "multipart/x-mixed-replace",
    }
)


def sniff(head: bytes) -> Sniffed:
    """The type of a file from its first bytes (4 KiB is plenty); unknown is octet-stream."""
    for magic, sniffed in _MAGIC:
        if head.startswith(magic):
            return sniffed
    return (
        _riff(head)
        or _ftyp(head)
        or _ebml(head)
        or _ogg(head)
        or _id3_or_mpeg_audio(head)
        or _bmp(head)
        or _zip(head)
        or _tar(head)
        or _markup_or_text(head)
        or OCTET_STREAM
    )


def audio_only(sniffed: Sniffed) -> Sniffed:
    """What a file sniffed as `sniffed` is when it turns out to hold sound and no picture."""
    if sniffed.kind == "audio":
        return sniffed
    return _AUDIO_ONLY.get(sniffed.mime, sniffed)


def is_active_content(mime: str) -> bool:
    """Whether a browser could run script or render markup from this type, so it must not be served inline.

    PDF is not listed: browsers render it in a sandboxed viewer without access to the origin.
    """
    base = mime.split(";", 1)[0].strip().lower()
    return base in _ACTIVE_MIMES or base.endswith("+xml") or "javascript" in base or "ecmascript" in base


def _riff(head: bytes) -> Sniffed | None:
    if not head.startswith(b"RIFF") or len(head) < 12:
        return None
    form = head[8:12]
    if form == b"WEBP":
        return Sniffed("image/webp", "image", "webp")
    if form == b"WAVE":
        return Sniffed("audio/wav", "audio", "wav")
    if form == b"AVI ":
        return Sniffed("video/x-msvideo", "file", "avi")
    return None


def _ftyp(head: bytes) -> Sniffed | None:
    if len(head) < 12 or head[4:8] != b"ftyp":
        return None
    (box_size,) = struct.unpack(">I", head[:4])
    if box_size < 16:
        return None
    major = head[8:12]
    # The compatible brands follow the major brand and the minor version.
    brands = [major] + [head[i : i + 4] for i in range(16, min(box_size, len(head)) - 3, 4)]
    for table in (_FTYP_IMAGE, _FTYP_IMAGE_GENERIC):
        for brand in brands:
            if brand in table:
                return table[brand]
    if major in (b"M4A ", b"M4B ", b"M4P "):
        return _M4A
    if major == b"qt  ":
        return _MOV
    if major.startswith((b"3gp", b"3g2")):
        return _3GP
    return _MP4


def _ebml(head: bytes) -> Sniffed | None:
    if not head.startswith(b"\x1a\x45\xdf\xa3"):
        return None
    # DocType element (0x4282) with a one-byte size, usually in the first few dozen bytes.
    webm = b"\x42\x82\x84webm" in head[:64]
    has_video = _MKV_VIDEO_CODEC.search(head) is not None
    audio_only = not has_video and _MKV_AUDIO_CODEC.search(head) is not None
    if webm:
        return Sniffed("audio/webm", "audio", "weba") if audio_only else Sniffed("video/webm", "video", "webm")
    return Sniffed("audio/x-matroska", "audio", "mka") if audio_only else Sniffed("video/x-matroska", "video", "mkv")


def _ogg(head: bytes) -> Sniffed | None:
    if not head.startswith(b"OggS") or len(head) < 28:
        return None
    segments = head[26]
    packet = head[27 + segments : 27 + segments + 8]
    if packet.startswith(b"OpusHead"):
        return Sniffed("audio/ogg", "audio", "opus")
    if packet.startswith((b"\x01vorbis", b"\x7fFLAC", b"Speex   ")):
        return Sniffed("audio/ogg", "audio", "ogg")
    if packet.startswith((b"\x80theora", b"OVP80")):
        return Sniffed("video/ogg", "video", "ogv")
    return Sniffed("application/ogg", "file", "ogx")


def id3_size(head: bytes) -> int:
    """Bytes taken by a leading ID3v2 tag (0 if none): what follows it says what the audio is."""
    if len(head) < 10 or not head.startswith(b"ID3"):
        return 0
    size_bytes = head[6:10]
    if any(b & 0x80 for b in size_bytes):
        return 0
    size = (size_bytes[0] << 21) | (size_bytes[1] << 14) | (size_bytes[2] << 7) | size_bytes[3]
    footer = 10 if head[5] & 0x10 else 0
    return 10 + size + footer


def _id3_or_mpeg_audio(head: bytes) -> Sniffed | None:
    skip = id3_size(head)
    if skip:
        rest = head[skip:]
        if rest.startswith(b"fLaC"):
            return Sniffed("audio/flac", "audio", "flac")
        if len(rest) >= 2 and _adts(rest):
            return Sniffed("audio/aac", "audio", "aac")
        # The tag outlasted the head, or MPEG frames follow: ID3 is overwhelmingly MP3.
        return Sniffed("audio/mpeg", "audio", "mp3")
    if _adts(head):
        return Sniffed("audio/aac", "audio", "aac")
    if _mpeg_frames(head):
        return Sniffed("audio/mpeg", "audio", "mp3")
    return None


def _adts(head: bytes) -> bool:
    # 12 sync bits, then layer 00; a sampling index of 13+ is reserved.
    return len(head) >= 7 and head[0] == 0xFF and head[1] & 0xF6 == 0xF0 and (head[2] >> 2) & 0x0F < 13


_MPEG_BITRATES_V1_L3 = (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)
_MPEG_BITRATES_V2_L3 = (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160)
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mpeg_frame_length(header: bytes) -> int:
    """Length of an MPEG audio layer III frame starting here, or 0 if this is not a valid header."""
    if len(header) < 4 or header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
        return 0
    version = (header[1] >> 3) & 3
    layer = (header[1] >> 1) & 3
    bitrate_index = header[2] >> 4
    rate_index = (header[2] >> 2) & 3
    if version == 1 or layer != 1 or bitrate_index in (0, 15) or rate_index == 3:
        return 0
    padding = (header[2] >> 1) & 1
    rate = _MPEG_RATES[version][rate_index]
    if version == 3:
        return 144_000 * _MPEG_BITRATES_V1_L3[bitrate_index] // rate + padding
    return 72_000 * _MPEG_BITRATES_V2_L3[bitrate_index] // rate + padding


def _mpeg_frames(head: bytes) -> bool:
    # One sync word is common in random data; two consecutive valid frames are not.
    first = _mpeg_frame_length(head)
    if not first:
        return False
    if len(head) < first + 4:
        return len(head) < 4096  # a whole file shorter than one frame plus a header: trust the one
    return _mpeg_frame_length(head[first : first + 4]) > 0


def _zip(head: bytes) -> Sniffed | None:
    if not head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return None
    if head[30:38] == b"mimetype" and b"application/epub+zip" in head[38:80]:
        return Sniffed("application/epub+zip", "file", "epub")
    if b"[Content_Types].xml" in head or b"_rels/.rels" in head:
        for marker, mime, extension in (
            (b"word/", "application/vnd.openxmlformats-officedocument.wordprocessingml.document", "docx"),
            (b"xl/", "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "xlsx"),
            (b"ppt/", "application/vnd.openxmlformats-officedocument.presentationml.presentation", "pptx"),
        ):
            if marker in head:
                return Sniffed(mime, "file", extension)
    return Sniffed("application/zip", "file", "zip")


def _bmp(head: bytes) -> Sniffed | None:
    # "BM" alone starts plenty of text files; the DIB header size pins it down.
    if head.startswith(b"BM") and len(head) >= 18 and struct.unpack("<I", head[14:18])[0] in (12, 40, 52, 56, 108, 124):
        return Sniffed("image/bmp", "file", "bmp")
    return None


def _tar(head: bytes) -> Sniffed | None:
    if head[257:262] == b"ustar":
        return Sniffed("application/x-tar", "file", "tar")
    return None


def _decode_text(head: bytes) -> str | None:
    """The head as text if it is UTF-8 (or UTF-16 with a BOM) without control characters."""
    encoding = "utf-16" if head.startswith((b"\xff\xfe", b"\xfe\xff")) else "utf-8-sig"
    try:
        text = head.decode(encoding)
    except UnicodeDecodeError as exc:
        # The head may cut a multi-byte character in half; only its last 3 bytes may fail.
        if encoding != "utf-8-sig" or exc.start < len(head) - 3:
            return None
        text = head[: exc.start].decode(encoding)
    if any(ord(c) < 32 and c not in "\t\n\r\f" for c in text):
        return None
    return text


def _markup_or_text(head: bytes) -> Sniffed | None:
    if not head:
        return None
    text = _decode_text(head)
    if text is None:
        return None
    lowered = text.lstrip().lower().encode("utf-8", "replace")
    if lowered.startswith(b"<?xml"):
        if b"<svg" in lowered:
            return _SVG
        if b"<html" in lowered:
            return _XHTML
        return _XML
    if lowered.startswith(b"<svg"):
        return _SVG
    for tag in _HTML_TAGS:
        # A tag-terminating byte must follow, as in the WHATWG algorithm ("<b" is not "<blah").
        if lowered.startswith(tag) and lowered[len(tag) : len(tag) + 1] in (b" ", b">", b"\t", b"\n", b"\r", b"\f"):
            return _HTML
    if lowered.startswith(b"<!doctype svg"):
        return _SVG
    return _TEXT
