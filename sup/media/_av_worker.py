"""The child process in which FFmpeg (through PyAV) reads untrusted audio and video.

Started by `sup.media.av_probe` as `python -B -s -P -m sup.media._av_worker '<json params>'`
with the media file as its stdin; it prints one JSON object on stdout and exits 0, also when
the media is refused. Asked to (`output_fd`), it also remuxes the media without its metadata
into the one file the parent opened for it and passed down as that descriptor. Resource
limits are set here, first thing, before FFmpeg is even imported: `preexec_fn` in the parent
would do the same but is unsafe in a threaded server.

Defences, outermost first: the container type comes from our own sniffing and FFmpeg is told
to use exactly that demuxer (no probing); `format_whitelist` refuses any other demuxer (HLS,
concat, DASH, image sequences...) before it reads a header; input is read through a file object,
so `protocol_whitelist` can be "none": a demuxer that tries to open a second file or URL fails,
whether it goes through a nested context (which inherits the whitelist) or through `io_open`.
The remuxed copy is written through a file object on the inherited descriptor; the only other
open the muxer may make is reading that same file back (MP4 faststart), answered with `pread`
on the descriptor, so here too nothing is opened by name.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import io
import json
import os
import sys
import time
from typing import Any

from sup.media import MediaError
from sup.media.sandbox import enter_sandbox
from sup.media.sniff import Sniffed, audio_only, id3_size, sniff

# Sniffed type → the one demuxer allowed to read it.
DEMUXERS = {
    "video/mp4": "mov",
    "video/quicktime": "mov",
    "video/3gpp": "mov",
    "audio/mp4": "mov",
    "video/webm": "matroska",
    "audio/webm": "matroska",
    "video/x-matroska": "matroska",
    "audio/x-matroska": "matroska",
    "video/ogg": "ogg",
    "audio/ogg": "ogg",
    "audio/mpeg": "mp3",
    "audio/wav": "wav",
    "audio/flac": "flac",
    "audio/aac": "aac",
}
# FFmpeg's names for those demuxers (mov and matroska answer to several).
FORMAT_WHITELIST = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,ogg,mp3,wav,flac,aac"
_ALLOWED_NAMES = frozenset(FORMAT_WHITELIST.split(","))

_CONTAINER_OPTIONS = {
    "format_whitelist": FORMAT_WHITELIST,
    # Input is a file object; nothing may be opened by protocol name.
    "protocol_whitelist": "none",
    "max_streams": "32",
}
# Sniffed demuxer and kind → the muxers to try in order, each with the MIME type it produces.
# Mostly the first fits; the next takes codecs the first cannot hold (H.264 in Matroska, PCM in
# QuickTime).
REMUXERS: dict[tuple[str, str], tuple[tuple[str, str], ...]] = {
    ("mov", "video"): (("mp4", "video/mp4"), ("mov", "video/quicktime")),
    # AMR (3GP voice notes) fits only a 3GP file.
    ("mov", "audio"): (("ipod", "audio/mp4"), ("mp4", "audio/mp4"), ("3gp", "audio/3gpp")),
    ("matroska", "video"): (("webm", "video/webm"), ("matroska", "video/x-matroska")),
    ("matroska", "audio"): (("webm", "audio/webm"), ("matroska", "audio/x-matroska")),
    ("ogg", "video"): (("ogg", "video/ogg"),),
    ("ogg", "audio"): (("ogg", "audio/ogg"),),
    ("mp3", "audio"): (("mp3", "audio/mpeg"),),
    ("wav", "audio"): (("wav", "audio/wav"),),
    ("flac", "audio"): (("flac", "audio/flac"),),
    ("aac", "audio"): (("adts", "audio/aac"),),
}
# No encoder name and version in the copy either.
_MUXER_OPTIONS = {"fflags": "+bitexact"}
_MUXER_OPTIONS_BY_FORMAT = {
    # The index first, so a browser can play the copy before it has all of it.
    "mp4": {"movflags": "+faststart"},
    "mov": {"movflags": "+faststart"},
    "ipod": {"movflags": "+faststart"},
    "3gp": {"movflags": "+faststart"},
    # Without this the MP3 muxer writes an ID3v2 tag, empty or not.
    "mp3": {"id3v2_version": "0", "write_id3v1": "0"},
}
_WAVEFORM_RATE = 8000
# Peaks kept per second of audio before they are folded into the requested number of points.
_PEAKS_PER_SECOND = 100
_MAX_BAD_PACKETS = 64


def choose_demuxer(fd: int) -> tuple[str, Sniffed]:
    """The demuxer for this file and what the file is, from its bytes; MediaError for a container not allowed."""
    head = os.pread(fd, 4096, 0)
    if not head:
        raise MediaError("the media file is empty")
    sniffed = sniff(head)
    skip = id3_size(head)
    if skip:
        # FLAC or AAC may hide behind an ID3 tag longer than the head (album art): look past it.
        behind = sniff(os.pread(fd, 4096, skip))
        if behind.mime in ("audio/flac", "audio/aac"):
            sniffed = behind
    demuxer = DEMUXERS.get(sniffed.mime)
    if demuxer is None:
        raise MediaError(f"not an allowed audio or video container (the file looks like {sniffed.mime})")
    return demuxer, sniffed


def _refuse_nested_open(url: str, flags: int, options: dict[str, str]) -> Any:
    raise MediaError("the media file refers to other files or URLs, which is not allowed")


def open_container(file: io.BufferedIOBase, demuxer: str | None) -> Any:
    """Open untrusted media with FFmpeg, refusing any demuxer outside the allow-list."""
    import av

    try:
        container = av.open(
            file, mode="r", format=demuxer, container_options=dict(_CONTAINER_OPTIONS), io_open=_refuse_nested_open
        )
    except MediaError:
        raise
    except av.error.FFmpegError as exc:
        raise MediaError(
            f"the file is not a readable audio or video file of an allowed type ({_describe(exc)})"
        ) from None
    names = set(container.format.name.split(","))
    if not names & _ALLOWED_NAMES:
        container.close()
        raise MediaError(f"container format {container.format.name} is not allowed")
    return container


def _describe(exc: BaseException) -> str:
    # FFmpeg messages carry the input's repr; strerror is the part worth showing.
    return getattr(exc, "strerror", None) or type(exc).__name__


def _codec_name(stream: Any) -> str:
    # The format's name ("mp3"), not the decoder's ("mp3float").
    return stream.codec_context.codec.canonical_name


def _durations(container: Any, streams: list[Any]) -> list[float]:
    found = []
    if container.duration is not None and container.duration > 0:
        found.append(container.duration / 1_000_000)
    for stream in streams:
        if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
            found.append(float(stream.duration * stream.time_base))
    return found


def _check_duration(container: Any, streams: list[Any], max_duration: float) -> float | None:
    durations = _durations(container, streams)
    # Every claim is checked: a crafted file may lie in one header and not another.
    if durations and max(durations) > max_duration:
        raise MediaError(
            f"the file claims a duration of {max(durations):.0f} s, over the limit of {max_duration:.0f} s"
        )
    if container.duration is not None and container.duration > 0:
        return container.duration / 1_000_000
    return max(durations) if durations else None


def _film(container: Any) -> Any | None:
    """The first video stream that is not cover art (a one-frame "video" FFmpeg makes of it)."""
    from av.stream import Disposition

    return next((s for s in container.streams.video if not s.disposition & Disposition.attached_pic), None)


def found_kind(container: Any, kind: str) -> str:
    """What the file is, by its streams: a "video" without a picture but with sound is audio.

    The sniffed kind comes from the first bytes, and an MP4 or 3GP brand does not say whether
    there is a picture (Android's recorders write voice notes as `isom` MP4 and 3GP), while the
    index that does may be at the end of the file. Audio stays audio: a picture in it is cover art.
    """
    if kind == "video" and _film(container) is None and container.streams.audio:
        return "audio"
    return kind


def probe_video(container: Any, params: dict[str, Any]) -> dict[str, Any]:
    video = _film(container)
    if video is None:
        raise MediaError("the file has no video stream")
    audio = container.streams.audio[0] if container.streams.audio else None
    width, height = video.codec_context.width, video.codec_context.height
    max_dimension = params["max_dimension"]
    if width <= 0 or height <= 0:
        raise MediaError("the video stream has no picture size")
    if width > max_dimension or height > max_dimension:
        raise MediaError(f"the video is {width}x{height}, over the limit of {max_dimension} pixels on a side")
    duration = _check_duration(container, [s for s in (video, audio) if s is not None], params["max_duration"])
    frame = _first_frame(container, video, params["poster_max_packets"])
    # FFmpeg's display matrix angle is counter-clockwise; viewers want the clockwise turn.
    rotation = round(-(frame.rotation or 0) / 90) % 4 * 90
    poster, poster_width, poster_height = _poster(frame, rotation, params["poster_max"])
    if rotation in (90, 270):
        width, height = height, width
    return {
        "ok": True,
        "kind": "video",
        "container": container.format.name,
        "duration": duration,
        "width": width,
        "height": height,
        "rotation": rotation,
        "video_codec": _codec_name(video),
        "audio_codec": _codec_name(audio) if audio is not None else None,
        "sample_rate": audio.codec_context.sample_rate if audio is not None else None,
        "channels": audio.codec_context.channels if audio is not None else None,
        "poster": base64.b64encode(poster).decode("ascii"),
        "poster_mime": "image/jpeg",
        "poster_width": poster_width,
        "poster_height": poster_height,
    }


def _first_frame(container: Any, video: Any, max_packets: int) -> Any:
    import av

    video.codec_context.thread_count = 1
    packets = 0
    try:
        for packet in container.demux(video):
            packets += 1
            if packets > max_packets:
                break
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                continue
            if frames:
                return frames[0]
    except av.error.FFmpegError:
        pass
    raise MediaError("no video frame could be decoded")


def _poster(frame: Any, rotation: int, poster_max: int) -> tuple[bytes, int, int]:
    from PIL import Image

    # Scale while converting to RGB, so a huge frame never exists as a full-size RGB copy.
    scale = min(1.0, poster_max / max(frame.width, frame.height))
    width, height = max(1, round(frame.width * scale)), max(1, round(frame.height * scale))
    image = frame.reformat(width=width, height=height, format="rgb24").to_image()
    if rotation:
        image = image.transpose(
            {90: Image.Transpose.ROTATE_270, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_90}[rotation]
        )
    out = io.BytesIO()
    image.save(out, "JPEG", quality=80)
    return out.getvalue(), image.width, image.height


def probe_audio(container: Any, params: dict[str, Any]) -> dict[str, Any]:
    if not container.streams.audio:
        raise MediaError("the file has no audio stream")
    audio = container.streams.audio[0]
    duration = _check_duration(container, [audio], params["max_duration"])
    peaks, decoded_seconds, complete = _peaks(container, audio, params["decode_budget"])
    if not peaks:
        raise MediaError("no audio could be decoded")
    if duration is None:
        duration = decoded_seconds
    elif not complete:
        # Decoding stopped early: the undecoded rest shows as silence, at its true position.
        peaks.extend([0] * max(0, round(duration * _PEAKS_PER_SECOND) - len(peaks)))
    return {
        "ok": True,
        "kind": "audio",
        "container": container.format.name,
        "duration": duration,
        "audio_codec": _codec_name(audio),
        "sample_rate": audio.codec_context.sample_rate,
        "channels": audio.codec_context.channels,
        "waveform": fold_peaks(peaks, params["waveform_points"]),
        "waveform_complete": complete,
    }


def _peaks(container: Any, audio: Any, budget: float) -> tuple[list[int], float, bool]:
    """Peak amplitude of each 1/100 s of mono 8 kHz audio, decoding for at most `budget` seconds."""
    from array import array

    import av

    audio.codec_context.thread_count = 1
    resampler = av.AudioResampler(format="s16", layout="mono", rate=_WAVEFORM_RATE)
    chunk = _WAVEFORM_RATE // _PEAKS_PER_SECOND
    pending = array("h")
    peaks: list[int] = []
    samples = 0
    bad = 0
    deadline = time.monotonic() + budget

    def take(frames: list[Any]) -> None:
        nonlocal samples
        for resampled in frames:
            data = array("h")
            data.frombytes(bytes(resampled.planes[0])[: resampled.samples * 2])
            samples += len(data)
            pending.extend(data)
        whole = len(pending) - len(pending) % chunk
        for i in range(0, whole, chunk):
            window = pending[i : i + chunk]
            peaks.append(max(max(window), -min(window)))
        del pending[:whole]

    complete = True
    try:
        for packet in container.demux(audio):
            if time.monotonic() > deadline:
                complete = False
                break
            try:
                frames = packet.decode()
            except av.error.FFmpegError:
                bad += 1
                if bad > _MAX_BAD_PACKETS:
                    break
                continue
            for frame in frames:
                take(resampler.resample(frame))
        if complete:
            take(resampler.resample(None))
    except av.error.FFmpegError:
        # A container damaged part-way: the audio before the damage still makes a waveform.
        pass
    if pending:
        peaks.append(max(max(pending), -min(pending)))
    return peaks, samples / _WAVEFORM_RATE, complete


def fold_peaks(peaks: list[int], points: int) -> list[int]:
    """`points` values 0-255: the loudest peak in each stretch, scaled so the loudest is 255."""
    if points <= 0 or not peaks:
        return []
    n = len(peaks)
    folded = []
    for k in range(points):
        start, end = k * n // points, (k + 1) * n // points
        # Fewer peaks than points (a very short note): neighbouring points share a peak.
        folded.append(max(peaks[start:end]) if end > start else peaks[min(start, n - 1)])
    loudest = max(folded)
    if loudest <= 0:
        return [0] * points
    return [min(255, round(255 * p / loudest)) for p in folded]


def remux(container: Any, demuxer: str, kind: str, output_fd: int) -> dict[str, Any]:
    """Copy the played streams, packet for packet, into `output_fd` with no metadata at all.

    Kept: the codec parameters, with their side data (the display matrix that turns a phone
    video upright, HDR and spatial-video parameters). Dropped: global and per-stream tags
    (location, dates, device, title, handler names, language), chapters, cover art, and every
    stream but the first video (for a video) and the first audio.
    """
    streams = _served_streams(container, kind)
    muxers = REMUXERS.get((demuxer, kind))
    if not streams or muxers is None:
        raise MediaError(f"a {kind} in a {container.format.name} container cannot be copied")
    refused = []
    for muxer, mime in muxers:
        os.ftruncate(output_fd, 0)
        os.lseek(output_fd, 0, os.SEEK_SET)
        try:
            _copy(container, streams, muxer, output_fd)
        except _CodecNotAllowed as exc:
            refused.append(str(exc))
            continue
        return {"remux_mime": mime, "remux_size": os.fstat(output_fd).st_size}
    raise MediaError(f"the streams cannot be copied into a clean file ({'; '.join(refused)})")


class _CodecNotAllowed(Exception):
    pass


def _served_streams(container: Any, kind: str) -> list[Any]:
    audio = container.streams.audio[0] if container.streams.audio else None
    if kind == "audio":
        return [audio] if audio is not None else []
    video = _film(container)
    return [s for s in (video, audio) if s is not None] if video is not None else []


def _copy(container: Any, streams: list[Any], muxer: str, output_fd: int) -> None:
    import av

    options = {**_MUXER_OPTIONS, **_MUXER_OPTIONS_BY_FORMAT.get(muxer, {})}
    try:
        out = av.open(
            _OutputWriter(output_fd), "w", format=muxer, container_options=options, io_open=_output_opener(output_fd)
        )
    except av.error.FFmpegError as exc:
        raise MediaError(f"the {muxer} muxer cannot be opened ({_describe(exc)})") from None
    try:
        targets = {}
        for stream in streams:
            try:
                # opaque: the decoder's codec description, as there is no encoder for some (Theora).
                targets[stream.index] = out.add_stream_from_template(stream, opaque=True)
            except ValueError as exc:
                raise _CodecNotAllowed(str(exc)) from None
        if not _copy_packets(container, streams, targets, out):
            raise MediaError("no packets could be copied")
        # The trailer: MP4's index, moved to the front; Matroska's cues.
        out.close()
    except av.error.FFmpegError as exc:
        raise MediaError(f"the media could not be copied ({_describe(exc)})") from None
    except OSError as exc:
        if exc.errno == errno.EFBIG:
            raise MediaError("the copy of the media grew larger than allowed") from None
        raise MediaError(f"the copy of the media could not be written ({exc.strerror})") from None
    finally:
        # Already closed unless something failed, and then the parent deletes the file anyway.
        with contextlib.suppress(av.error.FFmpegError, OSError):
            out.close()


def _copy_packets(container: Any, streams: list[Any], targets: dict[int, Any], out: Any) -> int:
    import av

    last_dts: dict[int, int] = {}
    copied = bad = 0
    packets = container.demux(streams)
    while True:
        try:
            packet = next(packets)
        except StopIteration:
            break
        except av.error.FFmpegError:
            if not copied:
                raise
            break  # damaged part-way: the copy ends where playback of the original would
        if packet.size == 0:
            continue  # the empty packets that end demuxing
        index = packet.stream.index
        if packet.dts is not None:
            if index in last_dts and packet.dts < last_dts[index]:
                bad += 1
                continue  # going back in time: no muxer takes it, no player misses it
            last_dts[index] = packet.dts
        packet.stream = targets[index]
        try:
            out.mux_one(packet)
        except av.error.ArgumentError:
            # A packet the muxer refuses (timestamps it cannot order): dropped, as players do.
            bad += 1
            if bad > _MAX_BAD_PACKETS:
                raise MediaError("too many packets have broken timestamps") from None
            continue
        copied += 1
    return copied


class _OutputWriter:
    """Writes straight to the descriptor, so a read-back sees every byte written so far."""

    name = "output"

    def __init__(self, fd: int) -> None:
        self._fd = fd

    def write(self, data: bytes) -> int:
        view = memoryview(data)
        while view:
            # FFmpeg takes any count as "all written": a short write must not lose the rest.
            view = view[os.write(self._fd, view) :]
        return len(data)

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        return os.lseek(self._fd, offset, whence)

    def tell(self) -> int:
        return os.lseek(self._fd, 0, os.SEEK_CUR)


class _OutputReader:
    """The output file read back through its descriptor, with an offset of its own."""

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pos = 0

    def read(self, size: int) -> bytes:
        data = os.pread(self._fd, size, self._pos)
        self._pos += len(data)
        return data

    def seek(self, offset: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: os.fstat(self._fd).st_size}[whence]
        self._pos = base + offset
        return self._pos

    def tell(self) -> int:
        return self._pos

    def close(self) -> None:
        pass


def _output_opener(fd: int) -> Any:
    read_only = 1  # AVIO_FLAG_READ

    def io_open(url: str, flags: int, options: dict[str, str]) -> _OutputReader:
        # MP4 faststart reopens its output by name to move the index to the front.
        if flags != read_only:
            raise MediaError("the muxer tried to open a second output file")
        return _OutputReader(fd)

    return io_open


def run(params: dict[str, Any]) -> dict[str, Any]:
    try:
        import av
        import av.logging  # noqa: F401  (loads FFmpeg before any input is read)
        import PIL.Image  # noqa: F401
    except ImportError as exc:
        raise MediaError(f"media probe could not load FFmpeg; is its memory limit too low? ({exc})") from None
    demuxer, sniffed = choose_demuxer(0)
    with os.fdopen(0, "rb", closefd=False) as file:
        with open_container(file, demuxer) as container:
            kind = found_kind(container, params["kind"])
            answer = probe_video(container, params) if kind == "video" else probe_audio(container, params)
        answer["mime"] = (audio_only(sniffed) if kind == "audio" else sniffed).mime
        output_fd = params.get("output_fd")
        if output_fd is not None:
            # A fresh demuxer from the start: the probe's decoding left this one part-way.
            file.seek(0)
            with open_container(file, demuxer) as container:
                answer.update(remux(container, demuxer, kind, output_fd))
    return answer


def main(argv: list[str]) -> int:
    params = enter_sandbox(argv)
    try:
        result = run(params)
    except MediaError as exc:
        result = {"ok": False, "reason": str(exc)}
    except MemoryError:
        result = {"ok": False, "reason": "media probe ran out of memory (memory limit)"}
    except Exception as exc:
        result = {"ok": False, "reason": f"the media could not be read ({_describe(exc)})"}
    sys.stdout.write(json.dumps(result))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
