"""Sample media made in code for the media tests: tiny images, videos and voice notes, and broken ones.

No binary fixtures are checked in; each generator takes a few milliseconds.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from pathlib import Path

import av
import pillow_heif
from PIL import ExifTags, Image

GPS_LATITUDE = (52.0, 22.0, 7.5)
# Tags as a phone or a tagging program writes them; every value contains SECRET_MARK.
SECRET_MARK = "Secret"
SECRET_TAGS = {
    "location": "+48.8577+002.2945/",
    "title": "Secret title",
    "comment": "Secret comment",
    "artist": "Secret artist",
    "make": "SecretPhone",
    "creation_time": "2024-05-06T07:08:09.000000Z",
}
SECRET_STREAM_TAGS = {"handler_name": "Secret handler", "title": "Secret track"}


def _gradient(width: int, height: int, mode: str = "RGB") -> Image.Image:
    image = Image.linear_gradient("L").resize((width, height))
    if mode == "L":
        return image
    other = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    rgb = Image.merge("RGB", (image, other, Image.new("L", (width, height), 90)))
    return rgb.convert(mode)


def exif_with_gps(orientation: int | None = None) -> Image.Exif:
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "SampleCam"
    if orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = GPS_LATITUDE
    gps[ExifTags.GPS.GPSLongitudeRef] = "E"
    gps[ExifTags.GPS.GPSLongitude] = (4.0, 53.0, 2.0)
    return exif


def jpeg(width: int = 640, height: int = 480, *, orientation: int | None = None, gps: bool = True) -> bytes:
    out = io.BytesIO()
    exif = exif_with_gps(orientation) if gps else Image.Exif()
    if not gps and orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    _gradient(width, height).save(out, "JPEG", quality=85, exif=exif.tobytes(), comment=b"secret comment")
    return out.getvalue()


def png(width: int = 400, height: int = 300, *, mode: str = "RGB", gps: bool = True) -> bytes:
    out = io.BytesIO()
    params = {"exif": exif_with_gps().tobytes()} if gps else {}
    _gradient(width, height, mode).save(out, "PNG", **params)
    return out.getvalue()


def webp(width: int = 300, height: int = 200, *, gps: bool = True) -> bytes:
    out = io.BytesIO()
    params = {"exif": exif_with_gps().tobytes()} if gps else {}
    _gradient(width, height).save(out, "WEBP", quality=80, **params)
    return out.getvalue()


def heic(
    width: int = 640,
    height: int = 480,
    *,
    orientation: int | None = None,
    gps: bool = True,
    tile: int = 0,
    alpha: bool = False,
) -> bytes:
    """A HEIC photo as an iPhone writes one: HEVC, EXIF with GPS; `tile` makes it a grid of tiles that size.

    With `alpha`, it fades from transparent at the top to opaque at the bottom.
    pillow-heif turns the EXIF orientation into HEIF's own rotation (irot/imir) and keeps the tag.
    """
    exif = exif_with_gps(orientation) if gps else Image.Exif()
    if not gps and orientation is not None:
        exif[ExifTags.Base.Orientation] = orientation
    out = io.BytesIO()
    image = _gradient(width, height)
    if alpha:
        image.putalpha(_gradient(width, height, "L"))  # transparent at the top, opaque at the bottom
    pillow_heif.from_pillow(image).save(out, quality=70, exif=exif.tobytes(), tile_size=tile)
    return out.getvalue()


def avif(width: int = 640, height: int = 480, *, orientation: int | None = None, gps: bool = True) -> bytes:
    out = io.BytesIO()
    exif = exif_with_gps(orientation) if gps else Image.Exif()
    _gradient(width, height).save(out, "AVIF", quality=70, speed=10, exif=exif.tobytes())
    return out.getvalue()


def claim_image_size(data: bytes, width: int, height: int, *, index: int = 0) -> bytes:
    """The HEIF or AVIF with its `index`-th `ispe` property (0: the picture's, for a grid the canvas's;
    1: a grid's tiles') claiming `width` x `height`."""
    at = -1
    for _ in range(index + 1):
        at = data.index(b"ispe", at + 1)
    return data[: at + 8] + struct.pack(">II", width, height) + data[at + 16 :]


def animated_gif(width: int = 120, height: int = 90, frames: int = 3) -> bytes:
    images = [Image.new("RGB", (width, height), (40 * i, 200 - 40 * i, 90)) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, "GIF", save_all=True, append_images=images[1:], duration=100, loop=0)
    return out.getvalue()


def animated_webp(width: int = 120, height: int = 90, frames: int = 3) -> bytes:
    images = [Image.new("RGB", (width, height), (40 * i, 200 - 40 * i, 90)) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, "WEBP", save_all=True, append_images=images[1:], duration=100, exif=exif_with_gps().tobytes())
    return out.getvalue()


def mpo(width: int = 64, height: int = 48, *, orientation: int | None = None) -> bytes:
    """A JPEG with a second, smaller picture appended (multi-picture format), as Pillow opens as "MPO"."""
    out = io.BytesIO()
    second = Image.new("RGB", (width // 2, height // 2), (10, 200, 10))
    _gradient(width, height).save(
        out, "MPO", save_all=True, append_images=[second], exif=exif_with_gps(orientation).tobytes()
    )
    return out.getvalue()


def many_frame_gif(frames: int = 1000, width: int = 400, height: int = 300) -> bytes:
    """A GIF whose first frame is green and every other frame red: the second frame's blocks repeated."""
    first = Image.new("RGB", (width, height), (0, 200, 90))
    other = Image.new("RGB", (width, height), (200, 0, 90))
    out = io.BytesIO()
    first.save(out, "GIF", save_all=True, append_images=[other], duration=50, loop=0)
    data = out.getvalue()
    # Each frame starts with a graphic control extension; the file ends with the trailer ";".
    second = data.index(b"\x21\xf9\x04", data.index(b"\x21\xf9\x04") + 3)
    return data[:second] + data[second:-1] * (frames - 1) + data[-1:]


def many_scan_jpeg(scans: int = 1200) -> bytes:
    """A small progressive JPEG whose first scan is repeated: libjpeg decodes it, with a warning."""
    out = io.BytesIO()
    _gradient(64, 48).save(out, "JPEG", progressive=True, quality=80)
    data = out.getvalue()
    first = data.index(b"\xff\xda")
    second = data.index(b"\xff\xda", first + 2)
    return data[:second] + data[first:second] * (scans - 1) + data[second:]


def png_bomb(width: int = 30000, height: int = 30000) -> bytes:
    """A 1-bit PNG of `width` x `height` all-black pixels: about 100 KiB that decodes to gigabytes."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    # Compress 1000 rows once and repeat them: a full flush leaves no references across the
    # repeats, so the stream is valid and costs milliseconds instead of deflating 100 MB.
    rows = b"\x00" * (1 + (width + 7) // 8) * 1000
    compressor = zlib.compressobj(9)
    block = compressor.compress(rows) + compressor.flush(zlib.Z_FULL_FLUSH)
    checksum = 1
    for _ in range(height // 1000):
        checksum = zlib.adler32(rows, checksum)
    idat = block[:2] + block[2:] * (height // 1000) + b"\x03\x00" + struct.pack(">I", checksum)
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


ELF_HEADER = b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00" + b"\x00" * 100
PE_HEADER = b"MZ\x90\x00\x03\x00\x00\x00\x04\x00\x00\x00\xff\xff\x00\x00" + b"\x00" * 44 + b"PE\x00\x00"


def video(
    path: Path,
    *,
    container: str = "mp4",
    codec: str = "libx264",
    audio_codec: str | None = "aac",
    size: tuple[int, int] = (64, 48),
    frames: int = 10,
    rate: int = 10,
    rotation: int | None = None,
    metadata: dict[str, str] | None = None,
    stream_metadata: dict[str, str] | None = None,
    options: dict[str, str] | None = None,
) -> Path:
    """A tiny video (and a short tone if `audio_codec`); `rotation` is FFmpeg's counter-clockwise angle.

    `metadata` are container tags, `stream_metadata` tags on every stream, `options` codec options.
    """
    width, height = size
    with av.open(str(path), "w", format=container) as out:
        out.metadata.update(metadata or {})
        stream = out.add_stream(codec, rate=rate, options=options)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.thread_count = 1
        if rotation is not None:
            stream.set_display_rotation(rotation)
        audio = out.add_stream(audio_codec, rate=48000, layout="mono") if audio_codec else None
        for added in (stream, audio):
            if added is not None:
                added.metadata.update(stream_metadata or {})
        for i in range(frames):
            frame = av.VideoFrame.from_image(_gradient(width, height).rotate(i * 10))
            frame.pts = i
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
        if audio is not None:
            _encode_tone(out, audio, 48000, frames / rate)
    return path


# Samples per frame of the encoders that take only one size (the others take 1024).
_FRAME_SIZES = {"libopus": 960, "opus": 960, "libopencore_amrnb": 160}
_RATES = {"libopus": 48000, "libopencore_amrnb": 8000}


def voice_note(
    path: Path,
    *,
    container: str = "ogg",
    codec: str = "libopus",
    seconds: float = 2.0,
    metadata: dict[str, str] | None = None,
) -> Path:
    """Mono speech-like audio: a 220 Hz tone whose loudness rises, pauses, then rises again.

    `metadata` are the container's tags: Vorbis comments in Ogg or FLAC, ID3 in MP3, INFO in WAV.
    The MP4 muxers write the index (moov) at the end, as Android's MediaRecorder does: `mp4`
    with the brand `isom`, `3gp` with `3gp4`, `ipod` (M4A) with `M4A `.
    """
    rate = _RATES.get(codec, 44100)
    with av.open(str(path), "w", format=container) as out:
        out.metadata.update(metadata or {})
        stream = out.add_stream(codec, rate=rate, layout="mono")
        _encode_tone(out, stream, rate, seconds, envelope=True)
    return path


def _encode_tone(
    out: av.container.OutputContainer, stream: av.AudioStream, rate: int, seconds: float, *, envelope: bool = False
) -> None:
    frame_size = _FRAME_SIZES.get(stream.codec_context.name, 1024)
    total = int(rate * seconds)
    period = [math.sin(2 * math.pi * i / (rate / 220)) for i in range(int(rate / 220))]
    pts = 0
    while pts < total:
        position = pts / total
        if not envelope:
            loudness = 0.5
        elif 0.45 < position < 0.55:
            loudness = 0.0
        else:
            loudness = (position % 0.5) * 2
        samples = [int(20000 * loudness * period[(pts + i) % len(period)]) for i in range(frame_size)]
        frame = av.AudioFrame(format="s16", layout="mono", samples=frame_size)
        frame.planes[0].update(struct.pack(f"<{frame_size}h", *samples))
        frame.sample_rate, frame.pts = rate, pts
        pts += frame_size
        for packet in stream.encode(frame):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)


def claim_duration(mp4: bytes, seconds: int) -> bytes:
    """The MP4 with headers that make FFmpeg believe it lasts `seconds` (version 0 boxes).

    FFmpeg trusts the sample tables and edit lists over mvhd/mdhd, so those are forged too:
    the edit lists are renamed away and every sample is stretched to 2^31 ticks; mdhd then caps it.
    """
    data = bytearray(mp4).replace(b"edts", b"free")
    for box in (b"mvhd", b"mdhd"):
        start = 0
        while (at := data.find(box, start)) != -1:
            start = at + 4
            if data[at + 4] != 0:
                continue
            (timescale,) = struct.unpack(">I", data[at + 16 : at + 20])
            data[at + 20 : at + 24] = struct.pack(">I", min(0xFFFFFFFF, seconds * timescale))
    start = 0
    while (at := data.find(b"stts", start)) != -1:
        start = at + 4
        (entries,) = struct.unpack(">I", data[at + 8 : at + 12])
        for k in range(entries):
            delta_at = at + 16 + 8 * k
            data[delta_at : delta_at + 4] = struct.pack(">I", 0x7FFFFFFF)
    return bytes(data)


def corrupt(data: bytes, *, keep: int = 48) -> bytes:
    """The first `keep` bytes (so it still sniffs as its type) followed by noise."""
    noise = bytes((i * 73 + 41) % 256 for i in range(len(data) - keep))
    return data[:keep] + noise


def hls_playlist(target: str) -> bytes:
    return (
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:10\n#EXT-X-MEDIA-SEQUENCE:0\n"
        f"#EXTINF:10.0,\n{target}\n#EXT-X-ENDLIST\n"
    ).encode()


def concat_script(target: str) -> bytes:
    return f"ffconcat version 1.0\nfile {target}\n".encode()
