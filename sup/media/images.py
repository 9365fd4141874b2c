"""Images: orient, strip metadata, thumbnail and blurhash, refusing bombs and broken files.

`process_image` is synchronous and CPU-bound, and decoding a small hostile file can take
seconds and most of a gigabyte; the server calls `sup.media.image_child.process_image_isolated`,
which runs it in a resource-limited child (`sup.media._image_worker`) it can kill. Output is built fully in memory
and returned only when every step succeeded, so a broken file never leaves half a set of
thumbnails behind.

Each file is opened by the one decoder its first bytes call for. HEIC/HEIF photos (iPhones)
are decoded by libheif through pillow-heif, loaded only for them; AVIF by Pillow's own plugin
(libavif). Browsers do not all show either, so their copy without metadata is a JPEG.
"""

from __future__ import annotations

import io
import logging
import os
import struct
from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError, features

# Imported to register them, so that Image.open finds every format in _MIMES and never imports
# all ~40 plugins, which took a third of an image worker's start-up time.
from PIL import GifImagePlugin, JpegImagePlugin, PngImagePlugin, WebPImagePlugin  # noqa: F401  # isort: skip

from sup.media import MediaError, blurhash
from sup.media.image_child import ImageResult, Thumb
from sup.media.limits import (
    JPEG_MAX_SCANS,
    MAX_ANIMATION_FRAMES,
    MAX_ANIMATION_PIXELS,
    MAX_IMAGE_PIXELS,
    SNIFF_BYTES,
    THUMBNAIL_SIZES,
)
from sup.media.sniff import HEIF_MIMES, sniff

log = logging.getLogger(__name__)

# Only these decoders ever see user bytes: Pillow's other plugins include formats that shell
# out (EPS runs Ghostscript) or are rarely exercised against hostile input.
_MIMES = {"JPEG": "image/jpeg", "PNG": "image/png", "GIF": "image/gif", "WEBP": "image/webp"}
_CLASSIC = list(_MIMES)
if features.check("avif"):
    _MIMES["AVIF"] = "image/avif"
    from PIL import AvifImagePlugin

    # One decoding thread: the worker's CPU-time limit counts them all, and jobs run side by side.
    AvifImagePlugin.DEFAULT_MAX_THREADS = 1
_SUPPORTED = ", ".join([*_MIMES, "HEIF"])

# Formats re-encoded without metadata, in their own format; GIF carries no EXIF.
_SANITIZED = ("JPEG", "PNG", "WEBP")
# Formats re-encoded as JPEG (WebP when transparent): Chrome and Firefox show no HEIC, and an
# AVIF encoder is too slow for this. Stills only; an AVIF animation is served as its thumbnail.
_CONVERTED = ("HEIF", "AVIF")
_RGB_PROFILE_MODES = ("RGB", "RGBA", "RGBX", "P", "PA")
_PLACEHOLDER_EDGE = 32
_THUMB_QUALITY = 80
_SANITIZED_QUALITY = 90


def process_image(
    source: str | os.PathLike[str] | bytes,
    *,
    max_pixels: int = MAX_IMAGE_PIXELS,
    sizes: Sequence[int] = THUMBNAIL_SIZES,
    max_frames: int = MAX_ANIMATION_FRAMES,
    max_animation_pixels: int = MAX_ANIMATION_PIXELS,
) -> ImageResult:
    """Inspect an image and derive metadata-free thumbnails (WebP), a blurhash and a sanitized copy.

    Raises `MediaError` for anything that is not a complete, supported image within `max_pixels`,
    and for an animation of more than `max_frames` frames or `max_animation_pixels` in all.
    Thumbnails are bounded by each size on the long edge and never upscaled: a size at least as
    large as the image yields one thumbnail at the image's own size, and larger sizes are skipped.
    `sanitized` is the whole image re-encoded without EXIF/XMP/comments (ICC kept) for JPEG, PNG
    and WebP; for animated WebP the metadata chunks are cut out losslessly instead.
    """
    if isinstance(source, bytes | bytearray | memoryview):
        data = bytes(source)
    else:
        with open(source, "rb") as fh:
            data = fh.read()
    if not data:
        raise MediaError("the image file is empty")
    try:
        return _process(data, max_pixels, sizes, max_frames, max_animation_pixels)
    except MediaError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise MediaError(f"the image is too large to process safely ({exc})") from None
    except UnidentifiedImageError:
        raise MediaError(f"not a supported image (expected one of {_SUPPORTED})") from None
    except MemoryError:
        raise MediaError("the image needs too much memory to process (memory limit)") from None
    except Exception as exc:
        # Pillow reports damage as OSError, SyntaxError, EOFError, ValueError, struct.error...
        raise MediaError(f"the image is truncated or corrupt ({type(exc).__name__}: {exc})") from None


def _process(
    data: bytes, max_pixels: int, sizes: Sequence[int], max_frames: int, max_animation_pixels: int
) -> ImageResult:
    with _open(data) as im:
        # Only the header has been read: refuse before a single pixel is decoded.
        width, height = im.size
        if width < 1 or height < 1:
            raise MediaError("the image has no pixels")
        if width * height > max_pixels:
            raise MediaError(
                f"the image is {width}x{height} ({width * height} pixels), over the limit of {max_pixels} pixels"
            )
        fmt = im.format or ""
        mime = _MIMES.get(fmt) or im.get_format_mimetype() or "image/heif"
        if fmt == "MPO":
            # A JPEG with more pictures appended (a stereo pair, an Ultra HDR gain map): the first
            # picture is the photo, and only it is decoded and re-encoded, as a plain JPEG.
            fmt, mime, animated = "JPEG", "image/jpeg", False
        elif fmt == "HEIF":
            # More top-level pictures than one are a burst or a collection, not an animation: the
            # primary picture is the photo, and only it is decoded.
            _check_heif_size(im, max_pixels)
            animated = False
        else:
            # GIF, WebP and AVIF decode the first frame only, whatever the frame count.
            animated = bool(getattr(im, "is_animated", False))
        frames = _frame_count(im, fmt, max_frames) if animated else 1
        _check_animation(frames, width, height, max_frames, max_animation_pixels, counted_to_limit=fmt == "GIF")
        if fmt == "JPEG":
            _check_scans(data)
        icc = im.info.get("icc_profile")
        transparency = im.info.get("transparency")
        im.load()
        if im.size != (width, height):
            # libheif and libavif decode what the codec stream says, whatever the header claimed.
            raise MediaError(f"the image decoded to {im.width}x{im.height}, not the {width}x{height} its header says")
        # Browsers show animations unrotated; thumbnail the first frame the same way. HEIF's own
        # rotation and mirroring are applied by libheif, which then resets the EXIF orientation.
        oriented = im.copy() if animated else _orient_in_place(im)

    width, height = oriented.size
    display = _display_image(oriented, transparency)
    display_icc = icc if oriented.mode in _RGB_PROFILE_MODES else None
    thumbnails, smallest = _thumbnails(display, sizes, display_icc)
    placeholder = _placeholder(smallest)

    sanitized: bytes | None = None
    sanitized_mime: str | None = mime
    if fmt in _SANITIZED and not animated:
        sanitized = _reencode(oriented, fmt, icc, transparency, lossless=fmt == "WEBP" and _webp_lossless(data))
    elif fmt in _CONVERTED and not animated:
        target = "WEBP" if display.mode == "RGBA" else "JPEG"
        sanitized, sanitized_mime = _reencode(display, target, display_icc, None, lossless=False), _MIMES[target]
    elif fmt == "WEBP":
        sanitized = _strip_webp_metadata(data)
    return ImageResult(
        width=width,
        height=height,
        mime=mime,
        animated=animated,
        thumbnails=thumbnails,
        placeholder=placeholder,
        sanitized=sanitized,
        sanitized_mime=sanitized_mime if sanitized is not None else None,
        frames=frames,
    )


def _frame_count(im: Any, fmt: str, limit: int) -> int:
    """How many frames an animation has, without decoding any: WebP's and AVIF's demuxers and PNG's
    acTL chunk say it; a GIF's frame headers are walked (image data skipped), no further than one
    past `limit`, so a GIF of a million tiny frames costs no more than one of `limit`."""
    if fmt != "GIF":
        return int(getattr(im, "n_frames", 1))
    count = 1
    try:
        while count <= limit:
            im._seek(count, False)  # what Pillow's own n_frames does, frame by frame
            count += 1
    except EOFError:
        pass
    im.seek(0)
    return count


def _check_animation(
    frames: int, width: int, height: int, max_frames: int, max_pixels: int, *, counted_to_limit: bool
) -> None:
    if frames > max_frames:
        count = f"more than {max_frames}" if counted_to_limit else str(frames)
        raise MediaError(f"the animation has {count} frames, over the limit of {max_frames}")
    if frames * width * height > max_pixels:
        raise MediaError(
            f"the animation has {frames} frames of {width}x{height} ({frames * width * height} pixels in all),"
            f" over the limit of {max_pixels} pixels"
        )


def _open(data: bytes) -> ImageFile.ImageFile:
    """The image, its header read by the one decoder that its first bytes call for."""
    mime = sniff(data[:SNIFF_BYTES]).mime
    if mime in HEIF_MIMES:
        _check_boxes(data)
        return _heif_plugin()(io.BytesIO(data))
    if mime == "image/avif":
        if "AVIF" not in _MIMES:
            raise MediaError("AVIF images are not supported here (Pillow was built without AVIF)")
        _check_boxes(data)
        return AvifImagePlugin.AvifImageFile(io.BytesIO(data))
    return Image.open(io.BytesIO(data), formats=_CLASSIC)


def _heif_plugin() -> Any:
    """pillow-heif's image class (libheif), imported only when a HEIF file comes: it costs 25 ms."""
    import pillow_heif

    # The primary picture only: no embedded thumbnails, depth maps or auxiliary pictures are read
    # as images (transparency is still decoded). One thread, as for AVIF. libheif's own security
    # limits stay on.
    pillow_heif.options.THUMBNAILS = False
    pillow_heif.options.DEPTH_IMAGES = False
    pillow_heif.options.AUX_IMAGES = False
    pillow_heif.options.DECODE_THREADS = 1
    pillow_heif.options.DISABLE_SECURITY_LIMITS = False
    return pillow_heif.HeifImageFile


def _check_boxes(data: bytes) -> None:
    """Refuse an ISO-BMFF file (HEIF, AVIF) whose top-level boxes run past its end.

    libheif decodes a grid photo with tiles missing, filling the gaps with a flat colour; a file
    cut short is refused here instead, as a truncated JPEG or PNG is.
    """
    pos, end = 0, len(data)
    while pos < end:
        if end - pos < 8:
            raise MediaError("the image is truncated or corrupt (it ends inside a box header)")
        (size,) = struct.unpack(">I", data[pos : pos + 4])
        header = 8
        if size == 1:
            if end - pos < 16:
                raise MediaError("the image is truncated or corrupt (it ends inside a box header)")
            (size,) = struct.unpack(">Q", data[pos + 8 : pos + 16])
            header = 16
        elif size == 0:
            return  # the last box, up to the end of the file
        if size < header:
            raise MediaError("the image is truncated or corrupt (a box is smaller than its header)")
        if pos + size > end:
            raise MediaError(f"the image is truncated or corrupt (a box runs {pos + size - end} bytes past its end)")
        pos += size


def _check_heif_size(im: Any, max_pixels: int) -> None:
    """Refuse a HEIF whose decoding needs more pixels than the limit, though it shows fewer.

    Its size is the one shown, after cropping (clap): an encoder crops its padding that way, and a
    crafted file shows 64x48 of a picture of 30000x30000. libheif checks that the codec's picture
    is the size the header says, but decodes all of it before cropping.
    """
    try:
        transformations = im._heif_file[im.tell()]._c_image.transformations
    except (AttributeError, IndexError, TypeError):
        raise MediaError("the HEIF image's decoded size cannot be checked (pillow-heif is too old)") from None
    for name, *values in transformations:
        if name == "clap":
            width, height = values[4], values[5]
            if width * height > max_pixels:
                raise MediaError(
                    f"the image is a {im.width}x{im.height} crop of {width}x{height} ({width * height} pixels),"
                    f" over the limit of {max_pixels} pixels"
                )
    _check_tiling(im.info.get("tiling"), max_pixels)


def _check_tiling(tiling: dict[str, int] | None, max_pixels: int) -> None:
    """Refuse a HEIF grid whose canvas or tiles are over the pixel limit, before any tile is decoded.

    A grid photo (an iPhone's are tiles of 512x512) is decoded tile by tile onto a canvas whose
    size the grid itself declares: libheif compares it with the header's only after decoding every
    tile. One small tile can be listed many times, so a few kilobytes can ask for gigapixels.
    """
    if not tiling:
        return
    columns, rows = tiling["num_columns"], tiling["num_rows"]
    tile_width, tile_height = tiling["tile_width"], tiling["tile_height"]
    width, height = tiling["image_width"], tiling["image_height"]
    if width * height > max_pixels:
        raise MediaError(
            f"the image is a grid of {width}x{height} ({width * height} pixels), over the limit of {max_pixels} pixels"
        )
    # Edge tiles may overhang the canvas (encoders pad it to whole tiles), but not by a whole canvas.
    tiles = columns * rows * tile_width * tile_height
    if tiles > 2 * max_pixels:
        raise MediaError(
            f"the image is a grid of {columns}x{rows} tiles of {tile_width}x{tile_height} ({tiles} pixels),"
            f" over twice the limit of {max_pixels} pixels"
        )


def _check_scans(data: bytes) -> None:
    # Each progressive scan makes libjpeg walk every block of the image again, and an AC scan of a
    # large image can be a few bytes (one end-of-band run): the scan count, not the file size,
    # bounds the work. Entropy-coded data escapes 0xFF, so counting SOS markers is exact but for
    # stray bytes inside metadata segments.
    scans = data.count(b"\xff\xda")
    if scans > JPEG_MAX_SCANS:
        raise MediaError(f"the JPEG has {scans} scans, over the limit of {JPEG_MAX_SCANS}")


def _orient_in_place(im: Image.Image) -> Image.Image:
    # In place: a 50 MP photo is 150 MB of pixels, and a rotated copy beside it would double that.
    try:
        ImageOps.exif_transpose(im, in_place=True)
    except MemoryError:
        raise
    except Exception as exc:
        # Broken EXIF is common in camera output; an unrotated image beats refusing the photo.
        log.debug("ignoring unusable EXIF orientation: %s", exc)
    return im


def _display_image(im: Image.Image, transparency: object) -> Image.Image:
    """`im` in RGB or RGBA, without metadata; `im` itself when it already is, to spare a copy."""
    has_alpha = im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or transparency is not None
    mode = "RGBA" if has_alpha else "RGB"
    # convert() reads im.info["transparency"], so metadata is dropped only afterwards.
    display = im if im.mode == mode else im.convert(mode)
    display.info = {}
    return display


def _thumbnails(display: Image.Image, sizes: Sequence[int], icc: bytes | None) -> tuple[list[Thumb], Image.Image]:
    width, height = display.size
    long_edge = max(width, height)
    targets: list[tuple[int, tuple[int, int]]] = []
    for size in sorted(set(sizes)):
        if size < long_edge:
            scale = size / long_edge
            targets.append((size, (max(1, round(width * scale)), max(1, round(height * scale)))))
        else:
            targets.append((size, (width, height)))
            break
    thumbs: list[Thumb] = []
    current = display
    # Largest first, each made from the previous one: far cheaper than resizing the original each time.
    for size, dims in reversed(targets):
        if current.size != dims:
            current = current.resize(dims, Image.Resampling.LANCZOS, reducing_gap=3.0)
        out = io.BytesIO()
        params: dict[str, object] = {"quality": _THUMB_QUALITY}
        if icc:
            params["icc_profile"] = icc
        _save(current, out, "WEBP", params)
        thumbs.append(Thumb(str(size), dims[0], dims[1], "image/webp", out.getvalue()))
    thumbs.reverse()
    return thumbs, current


def _placeholder(im: Image.Image) -> str:
    small = im.copy()
    small.thumbnail((_PLACEHOLDER_EDGE, _PLACEHOLDER_EDGE), Image.Resampling.BILINEAR)
    if small.mode == "RGBA":
        # Transparent pixels often hide black RGB; blur them as the white a viewer most likely shows.
        background = Image.new("RGBA", small.size, (255, 255, 255, 255))
        small = Image.alpha_composite(background, small)
    small = small.convert("RGB")
    return blurhash.encode(small.tobytes(), small.width, small.height, 4, 3)


def _reencode(im: Image.Image, fmt: str, icc: bytes | None, transparency: object, *, lossless: bool) -> bytes:
    # Savers may fall back to im.info (PNG does for ICC): nothing from the original rides along.
    im.info = {}
    params: dict[str, object] = {}
    if icc:
        params["icc_profile"] = icc
    if fmt == "JPEG":
        if im.mode not in ("L", "RGB", "CMYK"):
            if im.mode not in _RGB_PROFILE_MODES:
                params.pop("icc_profile", None)
            im = im.convert("RGB")
        params["quality"] = _SANITIZED_QUALITY
    elif fmt == "PNG":
        if transparency is not None:
            params["transparency"] = transparency
    elif lossless:
        params["lossless"] = True
    else:
        params["quality"] = _SANITIZED_QUALITY
    out = io.BytesIO()
    _save(im, out, fmt, params)
    return out.getvalue()


def _save(im: Image.Image, out: io.BytesIO, fmt: str, params: dict[str, object]) -> None:
    try:
        im.save(out, fmt, **params)
    except ValueError as exc:
        # libwebp's VP8_ENC_ERROR_OUT_OF_MEMORY and VP8_ENC_ERROR_BITSTREAM_OUT_OF_MEMORY.
        if fmt == "WEBP" and str(exc) in ("encoding error 1", "encoding error 2"):
            raise MemoryError from None
        raise


def _webp_chunks(data: bytes) -> list[tuple[bytes, bytes]] | None:
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        return None
    chunks: list[tuple[bytes, bytes]] = []
    pos = 12
    while pos + 8 <= len(data):
        tag = data[pos : pos + 4]
        (size,) = struct.unpack("<I", data[pos + 4 : pos + 8])
        body = data[pos + 8 : pos + 8 + size]
        if len(body) != size:
            return None
        chunks.append((tag, body))
        pos += 8 + size + (size & 1)
    return chunks


def _webp_lossless(data: bytes) -> bool:
    chunks = _webp_chunks(data) or []
    return any(tag == b"VP8L" for tag, _ in chunks)


def _strip_webp_metadata(data: bytes) -> bytes:
    """The WebP without its EXIF and XMP chunks, bit for bit otherwise (animations stay intact)."""
    chunks = _webp_chunks(data)
    if chunks is None:
        raise MediaError("the WebP container is corrupt")
    out = bytearray()
    for tag, body in chunks:
        if tag in (b"EXIF", b"XMP "):
            continue
        if tag == b"VP8X" and body:
            # The header's flags announce EXIF (0x08) and XMP (0x04) chunks that are now gone.
            body = bytes([body[0] & ~0x0C]) + body[1:]
        out += tag + struct.pack("<I", len(body)) + body + (b"\x00" if len(body) & 1 else b"")
    return b"RIFF" + struct.pack("<I", 4 + len(out)) + b"WEBP" + bytes(out)
