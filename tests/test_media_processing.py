"""sup.media: sniffing, image processing and sandboxed audio/video probing, against good and hostile files."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import pillow_heif
import pytest
from PIL import AvifImagePlugin, GifImagePlugin, Image, ImageFile

from sup.media import MediaError, _av_worker, av_probe, image_child, images
from sup.media.av_probe import ProbeResult, _interpret, probe_media
from sup.media.image_child import process_image_isolated
from sup.media.images import process_image
from sup.media.sandbox import Outcome, run_worker
from sup.media.sniff import Sniffed, audio_only, is_active_content, sniff
from tests import media_samples as samples

# ---------------------------------------------------------------------------------------------- sniffing


def _mp3_frames() -> bytes:
    header = b"\xff\xfb\x90\x64"  # MPEG-1 layer III, 128 kbit/s, 44.1 kHz: 417-byte frames
    return (header + b"\x00" * 413) * 3


def _ftyp(major: bytes, *compatible: bytes) -> bytes:
    body = major + b"\x00\x00\x02\x00" + b"".join(compatible)
    return (8 + len(body)).to_bytes(4, "big") + b"ftyp" + body + b"\x00\x00\x00\x08free"


def _ogg_page(packet: bytes) -> bytes:
    return b"OggS\x00\x02" + b"\x00" * 20 + bytes([1, len(packet)]) + packet


SNIFF_CASES = [
    (samples.jpeg(32, 32), "image/jpeg", "image", "jpg"),
    (samples.png(32, 32), "image/png", "image", "png"),
    (samples.animated_gif(), "image/gif", "image", "gif"),
    (samples.webp(32, 32), "image/webp", "image", "webp"),
    (_ftyp(b"avif", b"mif1", b"miaf"), "image/avif", "image", "avif"),
    (_ftyp(b"heic", b"mif1", b"heic"), "image/heic", "image", "heic"),
    # The structural brands (mif1, msf1) come first in many files; the codec's brand decides.
    (_ftyp(b"mif1", b"mif1", b"avif", b"miaf"), "image/avif", "image", "avif"),
    (_ftyp(b"mif1", b"mif1", b"heic"), "image/heic", "image", "heic"),
    (_ftyp(b"mif1", b"mif1", b"miaf"), "image/heif", "image", "heif"),
    (_ftyp(b"msf1", b"msf1", b"hevc"), "image/heic-sequence", "image", "heic"),
    (_ftyp(b"avis", b"avis", b"msf1"), "image/avif", "image", "avif"),
    # Brands a phone's voice recorder writes too: only the content can tell (see audio_only).
    (_ftyp(b"mp42", b"mp42", b"isom"), "video/mp4", "video", "mp4"),
    (_ftyp(b"3gp4", b"3gp4", b"isom"), "video/3gpp", "video", "3gp"),
    (_ftyp(b"isom", b"isom", b"avc1"), "video/mp4", "video", "mp4"),
    (_ftyp(b"qt  ", b"qt  "), "video/quicktime", "video", "mov"),
    (_ftyp(b"M4A ", b"M4A ", b"isom"), "audio/mp4", "audio", "m4a"),
    (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01\x42\x82\x84webm" + b"\x86\x85V_VP8", "video/webm", "video", "webm"),
    (b"\x1a\x45\xdf\xa3\x9f\x42\x82\x84webm" + b"\x86\x86A_OPUS", "audio/webm", "audio", "weba"),
    (b"\x1a\x45\xdf\xa3\x9f\x42\x82\x88matroska" + b"\x86\x8fV_MPEG4/ISO/AVC", "video/x-matroska", "video", "mkv"),
    (_ogg_page(b"OpusHead\x01\x01"), "audio/ogg", "audio", "opus"),
    (_ogg_page(b"\x01vorbis\x00\x00"), "audio/ogg", "audio", "ogg"),
    (_ogg_page(b"\x80theora\x03\x02"), "video/ogg", "video", "ogv"),
    (_mp3_frames(), "audio/mpeg", "audio", "mp3"),
    (b"ID3\x04\x00\x00\x00\x00\x00\x0a" + b"\x00" * 10 + _mp3_frames(), "audio/mpeg", "audio", "mp3"),
    (b"\xff\xf1\x50\x80\x02\x1f\xfc" + b"\x00" * 64, "audio/aac", "audio", "aac"),
    (b"RIFF\x24\x00\x00\x00WAVEfmt ", "audio/wav", "audio", "wav"),
    (b"fLaC\x00\x00\x00\x22", "audio/flac", "audio", "flac"),
    (b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n", "application/pdf", "file", "pdf"),
    (b"PK\x03\x04\x14\x00\x00\x00\x08\x00" + b"\x00" * 20 + b"hello.txt", "application/zip", "file", "zip"),
    (b"Hello, world.\nSecond line \xe2\x9c\x93\n", "text/plain", "file", "txt"),
    ("Grüße ✓".encode()[:-1], "text/plain", "file", "txt"),  # a head cut inside a character
    (b"  <!DOCTYPE html>\n<html><script>alert(1)</script>", "text/html", "file", "html"),
    (b"<div onclick=x>", "text/html", "file", "html"),
    (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg"><script/></svg>', "image/svg+xml", "file", "svg"),
    (b'<svg xmlns="http://www.w3.org/2000/svg"/>', "image/svg+xml", "file", "svg"),
    (b'<?xml version="1.0"?><note/>', "application/xml", "file", "xml"),
    (b'<?xml version="1.0"?><html xmlns="http://www.w3.org/1999/xhtml"/>', "application/xhtml+xml", "file", "xhtml"),
    (samples.ELF_HEADER, "application/octet-stream", "file", "bin"),
    (samples.PE_HEADER, "application/octet-stream", "file", "bin"),
    (b"\xcf\xfa\xed\xfe\x07\x00\x00\x01" + b"\x00" * 24, "application/octet-stream", "file", "bin"),
    (bytes(range(256)), "application/octet-stream", "file", "bin"),
    (b"", "application/octet-stream", "file", "bin"),
]


@pytest.mark.parametrize(("head", "mime", "kind", "extension"), SNIFF_CASES)
def test_sniff_recognises_each_type_from_its_bytes(head: bytes, mime: str, kind: str, extension: str) -> None:
    found = sniff(head[:4096])
    assert (found.mime, found.kind, found.extension) == (mime, kind, extension)


@pytest.mark.parametrize("header", [samples.ELF_HEADER, samples.PE_HEADER])
def test_an_executable_named_like_a_photo_is_still_an_executable(tmp_path: Path, header: bytes) -> None:
    photo = tmp_path / "holiday.jpg"
    photo.write_bytes(header + b"\x00" * 4096)
    found = sniff(photo.read_bytes()[:4096])
    assert (found.mime, found.kind) == ("application/octet-stream", "file")
    with pytest.raises(MediaError):
        process_image(photo, max_pixels=1_000_000)


def test_sniff_recognises_generated_audio_and_video(media_dir: Path) -> None:
    assert sniff((media_dir / "clip.mp4").read_bytes()[:4096]).kind == "video"
    assert sniff((media_dir / "clip.webm").read_bytes()[:4096]).mime == "video/webm"
    assert sniff((media_dir / "note.ogg").read_bytes()[:4096]).mime == "audio/ogg"
    assert sniff((media_dir / "note.m4a").read_bytes()[:4096]).mime == "audio/mp4"
    assert sniff(samples.heic(32, 32)[:4096]).mime == "image/heic"
    assert sniff(samples.avif(32, 32)[:4096]).mime == "image/avif"


def test_audio_only_is_what_a_container_without_a_picture_is() -> None:
    assert audio_only(sniff(_ftyp(b"isom", b"isom", b"mp41"))) == Sniffed("audio/mp4", "audio", "m4a")
    assert audio_only(sniff(_ftyp(b"3gp4", b"3gp4", b"isom"))) == Sniffed("audio/3gpp", "audio", "3gp")
    assert audio_only(sniff(_ftyp(b"qt  ", b"qt  "))).mime == "audio/mp4"
    assert audio_only(Sniffed("video/webm", "video", "webm")).mime == "audio/webm"
    assert audio_only(Sniffed("video/ogg", "video", "ogv")).mime == "audio/ogg"
    note = Sniffed("audio/ogg", "audio", "opus")
    assert audio_only(note) is note


@pytest.mark.parametrize(
    ("mime", "active"),
    [
        ("text/html", True),
        ("text/html; charset=utf-8", True),
        ("image/svg+xml", True),
        ("application/xhtml+xml", True),
        ("application/xml", True),
        ("text/xml", True),
        ("application/atom+xml", True),
        ("text/javascript", True),
        ("application/javascript", True),
        ("image/jpeg", False),
        ("video/mp4", False),
        ("text/plain", False),
        ("application/pdf", False),
        ("application/octet-stream", False),
    ],
)
def test_active_content(mime: str, active: bool) -> None:
    assert is_active_content(mime) is active


# ---------------------------------------------------------------------------------------------- images


def _has_exif(data: bytes) -> bool:
    with Image.open(io.BytesIO(data)) as im:
        return bool(im.getexif()) or "exif" in im.info or "xmp" in im.info


def test_exif_orientation_is_applied() -> None:
    result = process_image(samples.jpeg(640, 480, orientation=6), max_pixels=10_000_000)
    assert (result.width, result.height, result.mime) == (480, 640, "image/jpeg")
    assert [(t.size_name, t.width, t.height) for t in result.thumbnails] == [("320", 240, 320), ("1280", 480, 640)]
    with Image.open(io.BytesIO(result.sanitized)) as sanitized:
        assert sanitized.size == (480, 640)


@pytest.mark.parametrize("make", [samples.jpeg, samples.png, samples.webp])
def test_gps_and_other_metadata_are_stripped_from_everything_served(make) -> None:
    original = make()
    assert _has_exif(original)
    result = process_image(original, max_pixels=10_000_000)
    assert result.sanitized is not None
    for data in [result.sanitized, *(t.data for t in result.thumbnails)]:
        assert not _has_exif(data)
        assert b"Exif" not in data
        assert b"secret comment" not in data


def test_icc_profile_is_kept() -> None:
    icc = b"\x00" * 128 + b"acsp-fake-profile"  # Pillow passes the bytes through as they are
    out = io.BytesIO()
    Image.new("RGB", (50, 40), (10, 20, 30)).save(out, "JPEG", icc_profile=icc)
    result = process_image(out.getvalue(), max_pixels=10_000_000)
    with Image.open(io.BytesIO(result.sanitized)) as sanitized:
        assert sanitized.info.get("icc_profile") == icc
    with Image.open(io.BytesIO(result.thumbnails[0].data)) as thumb:
        assert thumb.info.get("icc_profile") == icc


def test_two_thumbnail_sizes_bounded_on_the_long_edge() -> None:
    result = process_image(samples.png(2000, 1000, gps=False), max_pixels=10_000_000)
    assert [(t.size_name, t.width, t.height, t.mime) for t in result.thumbnails] == [
        ("320", 320, 160, "image/webp"),
        ("1280", 1280, 640, "image/webp"),
    ]
    for thumb in result.thumbnails:
        with Image.open(io.BytesIO(thumb.data)) as im:
            assert (im.format, im.size) == ("WEBP", (thumb.width, thumb.height))


def test_small_images_are_never_upscaled() -> None:
    result = process_image(samples.jpeg(100, 80), max_pixels=10_000_000)
    assert [(t.size_name, t.width, t.height) for t in result.thumbnails] == [("320", 100, 80)]
    middle = process_image(samples.jpeg(800, 600), max_pixels=10_000_000)
    assert [(t.size_name, t.width, t.height) for t in middle.thumbnails] == [("320", 320, 240), ("1280", 800, 600)]


def test_placeholder_is_a_blurhash_of_the_image() -> None:
    result = process_image(samples.jpeg(300, 200), max_pixels=10_000_000)
    assert len(result.placeholder) == 28  # 4x3 components: 1 + 1 + 4 + 11 x 2 characters
    assert result.placeholder[0] == "L"  # encodes (4 - 1) + (3 - 1) x 9 = 21
    red = io.BytesIO()
    Image.new("RGB", (40, 30), (255, 0, 0)).save(red, "PNG")
    # Characters 2-5 are the average colour: 0xFF0000 in base 83.
    assert process_image(red.getvalue(), max_pixels=10_000_000).placeholder[2:6] == "TI:j"


def test_transparency_survives_into_thumbnails() -> None:
    image = Image.new("P", (60, 40), 0)
    image.putpalette([255, 0, 0, 0, 255, 0] + [0] * 762)
    out = io.BytesIO()
    image.save(out, "PNG", transparency=0)
    result = process_image(out.getvalue(), max_pixels=10_000_000)
    with Image.open(io.BytesIO(result.thumbnails[0].data)) as thumb:
        assert thumb.convert("RGBA").getpixel((5, 5))[3] == 0
    with Image.open(io.BytesIO(result.sanitized)) as sanitized:
        assert sanitized.convert("RGBA").getpixel((5, 5))[3] == 0


def test_animated_gif_thumbnails_the_first_frame() -> None:
    result = process_image(samples.animated_gif(), max_pixels=10_000_000)
    assert result.animated and result.mime == "image/gif" and result.sanitized is None
    with Image.open(io.BytesIO(result.thumbnails[0].data)) as thumb:
        assert thumb.convert("RGB").getpixel((5, 5)) == pytest.approx((0, 200, 90), abs=8)


def test_animated_webp_keeps_its_frames_but_loses_its_exif() -> None:
    original = samples.animated_webp()
    assert b"EXIF" in original
    result = process_image(original, max_pixels=10_000_000)
    assert result.animated
    assert b"EXIF" not in result.sanitized
    with Image.open(io.BytesIO(result.sanitized)) as sanitized:
        assert sanitized.n_frames == 3 and not sanitized.getexif()


@pytest.mark.parametrize("make", [samples.jpeg, samples.png])
def test_truncated_images_are_refused(make) -> None:
    data = make(300, 200, gps=False)
    with pytest.raises(MediaError, match="truncated or corrupt"):
        process_image(data[: len(data) * 2 // 3], max_pixels=10_000_000)


def test_decompression_bomb_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_decoding(self):
        raise AssertionError("pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    bomb = samples.png_bomb()  # 30000 x 30000, about 100 KiB
    assert len(bomb) < 200_000
    started = time.monotonic()
    with pytest.raises(MediaError, match=r"too large|over the limit") as refused:
        process_image(bomb, max_pixels=50_000_000)
    assert "decoded" not in str(refused.value)
    # Our own limit, below Pillow's built-in one.
    with pytest.raises(MediaError, match=r"2000x3000 \(6000000 pixels\), over the limit of 1000000"):
        process_image(samples.png_bomb(2000, 3000), max_pixels=1_000_000)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize(
    "data",
    [b"", os.urandom(2048), b"\xff\xd8\xff\xe0" + os.urandom(200), b"<svg xmlns='http://www.w3.org/2000/svg'/>"],
    ids=["empty", "random", "jpeg-magic-then-garbage", "svg"],
)
def test_garbage_is_refused(data: bytes) -> None:
    with pytest.raises(MediaError):
        process_image(data, max_pixels=10_000_000)


def test_mpo_is_processed_as_its_first_picture_only() -> None:
    original = samples.mpo(64, 48, orientation=6)
    with Image.open(io.BytesIO(original)) as im:
        assert im.format == "MPO" and im.n_frames == 2
    result = process_image(original, max_pixels=10_000_000)
    assert (result.width, result.height, result.mime, result.animated) == (48, 64, "image/jpeg", False)
    assert [(t.width, t.height) for t in result.thumbnails] == [(48, 64)]
    assert result.sanitized is not None and b"MPF\x00" not in result.sanitized
    assert not _has_exif(result.sanitized)
    with Image.open(io.BytesIO(result.sanitized)) as sanitized:
        assert (sanitized.format, sanitized.size) == ("JPEG", (48, 64))
        assert getattr(sanitized, "n_frames", 1) == 1


def test_a_gif_of_a_thousand_frames_costs_its_first_frame_only(monkeypatch: pytest.MonkeyPatch) -> None:
    data = samples.many_frame_gif(1000)
    with Image.open(io.BytesIO(data)) as im:
        assert im.n_frames == 1000
    seeked: list[tuple[int, bool]] = []
    original_seek = GifImagePlugin.GifImageFile._seek

    def recording_seek(self, frame: int, update_image: bool = True) -> None:
        seeked.append((frame, update_image))
        original_seek(self, frame, update_image)

    monkeypatch.setattr(GifImagePlugin.GifImageFile, "_seek", recording_seek)
    started = time.monotonic()
    result = process_image(data, max_pixels=10_000_000)
    assert time.monotonic() - started < 2
    # The later frames' headers are walked, to count them against media.max_animation_frames;
    # only the first frame is ever decoded.
    assert max(frame for frame, _ in seeked) == 1000 and result.frames == 1000  # 1000: the end, found
    assert {frame for frame, decoded in seeked if decoded} == {0}
    assert result.animated and (result.width, result.height) == (400, 300)
    with Image.open(io.BytesIO(result.thumbnails[0].data)) as thumb:
        assert thumb.convert("RGB").getpixel((5, 5)) == pytest.approx((0, 200, 90), abs=8)


def test_a_jpeg_with_thousands_of_scans_is_refused_before_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    data = samples.many_scan_jpeg(1200)
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: pytest.fail("pixels were decoded"))
    with pytest.raises(MediaError, match=r"the JPEG has 12\d\d scans, over the limit of 1000"):
        process_image(data, max_pixels=10_000_000)
    monkeypatch.undo()
    # libjpeg itself decodes it: the refusal is ours.
    monkeypatch.setattr(images, "JPEG_MAX_SCANS", 5000)
    assert process_image(data, max_pixels=10_000_000).width == 64


# ---------------------------------------------------------------------------------------------- HEIC/HEIF and AVIF


@pytest.fixture(scope="module")
def grid_heic() -> bytes:
    """A 1200x900 HEIC in tiles of 256x256, as iPhones write theirs (in tiles of 512x512)."""
    return samples.heic(1200, 900, tile=256, orientation=1)


def _no_decoding(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(self):
        raise AssertionError("pixels were decoded")

    for plugin in (ImageFile.ImageFile, pillow_heif.HeifImageFile, AvifImagePlugin.AvifImageFile):
        monkeypatch.setattr(plugin, "load", refuse)


@pytest.mark.parametrize(("make", "mime"), [(samples.heic, "image/heic"), (samples.avif, "image/avif")])
def test_heic_and_avif_are_shown_upright_and_served_as_a_jpeg_without_metadata(make, mime: str) -> None:
    original = make(320, 160, orientation=6)
    assert b"SampleCam" in original  # the EXIF, with its GPS, is in the file
    result = process_image(original, max_pixels=10_000_000)
    assert (result.width, result.height, result.mime, result.animated) == (160, 320, mime, False)
    assert result.sanitized is not None and result.sanitized_mime == "image/jpeg"
    assert [(t.size_name, t.width, t.height, t.mime) for t in result.thumbnails] == [("320", 160, 320, "image/webp")]
    for data in [result.sanitized, *(t.data for t in result.thumbnails)]:
        assert not _has_exif(data) and b"SampleCam" not in data
    with Image.open(io.BytesIO(result.sanitized)) as clean:
        assert (clean.format, clean.size) == ("JPEG", (160, 320))
        # The photo's top is dark: turned a quarter clockwise, as its orientation says, it is on the right.
        assert clean.getpixel((150, 160))[0] < 60 and clean.getpixel((10, 160))[0] > 190


def test_a_heic_in_tiles_is_decoded_whole(grid_heic: bytes) -> None:
    heif = pillow_heif.open_heif(grid_heic)
    assert heif.info["tiling"]["num_columns"] == 5 and heif.info["tiling"]["num_rows"] == 4
    result = process_image(grid_heic, max_pixels=10_000_000)
    assert (result.width, result.height, result.sanitized_mime) == (1200, 900, "image/jpeg")
    assert [(t.width, t.height) for t in result.thumbnails] == [(320, 240), (1200, 900)]
    with Image.open(io.BytesIO(result.sanitized)) as clean:
        # The last tile (bottom right) is there, not the flat colour of a missing one: the bottom is light.
        assert clean.size == (1200, 900) and clean.getpixel((1190, 890))[0] > 200


def test_a_transparent_heic_is_served_as_a_transparent_webp() -> None:
    result = process_image(samples.heic(64, 48, alpha=True, gps=False), max_pixels=10_000_000)
    assert result.sanitized_mime == "image/webp"
    with Image.open(io.BytesIO(result.sanitized)) as clean:
        assert (clean.format, clean.mode, clean.size) == ("WEBP", "RGBA", (64, 48))
        assert clean.getpixel((30, 1))[3] < 40 and clean.getpixel((30, 46))[3] > 210


def test_heif_and_avif_bombs_are_refused_before_decoding(monkeypatch: pytest.MonkeyPatch, grid_heic: bytes) -> None:
    heic, cropped, avif = samples.heic(64, 64), samples.heic(64, 48), samples.avif(64, 48)
    _no_decoding(monkeypatch)
    with pytest.raises(MediaError, match=r"is 30000x30000 \(900000000 pixels\), over the limit of 50000000"):
        process_image(samples.claim_image_size(heic, 30000, 30000), max_pixels=50_000_000)
    # 64x48 is coded as 64x64 (whole blocks of 16) and cropped: what is decoded is the whole.
    with pytest.raises(MediaError, match=r"a 64x48 crop of 30000x30000 \(900000000 pixels\), over the limit of 5"):
        process_image(samples.claim_image_size(cropped, 30000, 30000), max_pixels=50_000_000)
    with pytest.raises(MediaError, match=r"is 12000x12000 \(144000000 pixels\), over the limit of 50000000"):
        process_image(samples.claim_image_size(avif, 12000, 12000), max_pixels=50_000_000)
    # A grid's canvas is decoded at the size the grid declares, whatever the header says: that is checked too.
    small_header = samples.claim_image_size(grid_heic, 64, 48)
    with pytest.raises(MediaError, match=r"a grid of 1200x900 \(1080000 pixels\), over the limit of 1000000"):
        process_image(small_header, max_pixels=1_000_000)
    # and so are its tiles, which may be listed many times over.
    huge_tiles = samples.claim_image_size(grid_heic, 16000, 16000, index=1)
    with pytest.raises(MediaError, match=r"5x4 tiles of 16000x16000 .* over twice the limit of 50000000"):
        process_image(huge_tiles, max_pixels=50_000_000)
    # An honest photo over the limit, as well.
    with pytest.raises(MediaError, match=r"is 1200x900 \(1080000 pixels\), over the limit of 1000000"):
        process_image(grid_heic, max_pixels=1_000_000)


def test_a_heif_whose_header_lies_about_its_size_is_refused(grid_heic: bytes) -> None:
    # Within the limit, libheif decodes the grid and then finds it is not the size the header said.
    with pytest.raises(MediaError, match="truncated or corrupt"):
        process_image(samples.claim_image_size(grid_heic, 64, 48), max_pixels=10_000_000)


def _noise(length: int) -> bytes:
    return bytes((i * 73 + 41) % 256 for i in range(length))


def _broken_heif_and_avif() -> dict[str, bytes]:
    heic, grid, avif = samples.heic(320, 240, gps=False), samples.heic(320, 240, tile=128), samples.avif(320, 240)
    meta, mdat = grid.index(b"meta"), grid.index(b"mdat")
    return {
        "truncated heic": heic[: len(heic) * 2 // 3],
        "truncated grid": grid[: len(grid) - 40],  # libheif alone would fill the missing tiles with a flat colour
        "truncated avif": avif[: len(avif) * 2 // 3],
        "heic header then noise": samples.corrupt(heic),
        "avif header then noise": samples.corrupt(avif),
        "noise in the heic index": grid[: meta + 20] + _noise(mdat - 24 - meta) + grid[mdat - 4 :],
        "noise in the heic pictures": grid[: mdat + 4] + _noise(len(grid) - mdat - 4),
        "noise in the avif picture": avif[: avif.index(b"mdat") + 4] + _noise(len(avif) - avif.index(b"mdat") - 4),
    }


@pytest.mark.parametrize(("name", "data"), list(_broken_heif_and_avif().items()), ids=list(_broken_heif_and_avif()))
def test_truncated_and_corrupt_heif_and_avif_are_refused(name: str, data: bytes) -> None:
    with pytest.raises(MediaError, match="truncated or corrupt"):
        process_image(data, max_pixels=10_000_000)


# ---------------------------------------------------------------------------------------------- images in a worker


async def test_isolated_processing_gives_the_same_result_as_in_process(tmp_path: Path) -> None:
    data = samples.jpeg(1600, 1200, orientation=6)
    expected = process_image(data, max_pixels=10_000_000)
    result = await process_image_isolated(data, max_pixels=10_000_000)
    assert result == expected
    assert (result.width, result.height, result.mime) == (1200, 1600, "image/jpeg")
    assert [(t.size_name, t.width, t.height) for t in result.thumbnails] == [("320", 240, 320), ("1280", 960, 1280)]
    assert len(result.placeholder) == 28 and result.sanitized
    path = tmp_path / "photo.jpg"
    path.write_bytes(data)
    assert await process_image_isolated(path, max_pixels=10_000_000, sizes=(320,)) == process_image(
        data, max_pixels=10_000_000, sizes=(320,)
    )


async def test_isolated_mpo_and_animated_webp() -> None:
    mpo = await process_image_isolated(samples.mpo(), max_pixels=10_000_000)
    assert (mpo.mime, mpo.animated) == ("image/jpeg", False)
    webp = await process_image_isolated(samples.animated_webp(), max_pixels=10_000_000)
    assert webp.animated and webp.sanitized is not None and b"EXIF" not in webp.sanitized


async def test_isolated_processing_refuses_bombs_and_broken_files(tmp_path: Path) -> None:
    with pytest.raises(MediaError, match=r"too large|over the limit"):
        await process_image_isolated(samples.png_bomb(), max_pixels=50_000_000)
    data = samples.jpeg(300, 200, gps=False)
    with pytest.raises(MediaError, match="truncated or corrupt"):
        await process_image_isolated(data[: len(data) * 2 // 3], max_pixels=10_000_000)
    with pytest.raises(MediaError, match="empty"):
        await process_image_isolated(b"", max_pixels=10_000_000)
    with pytest.raises(MediaError, match="cannot be read"):
        await process_image_isolated(tmp_path / "missing.jpg", max_pixels=10_000_000)
    with pytest.raises(MediaError, match="not a regular file"):
        await process_image_isolated(tmp_path, max_pixels=10_000_000)


async def test_isolated_heic_and_avif(grid_heic: bytes) -> None:
    for data in (grid_heic, samples.avif(320, 240, orientation=6)):
        assert await process_image_isolated(data, max_pixels=10_000_000) == process_image(data, max_pixels=10_000_000)
    with pytest.raises(MediaError, match=r"a grid of 1200x900 \(1080000 pixels\), over the limit of 1000000"):
        await process_image_isolated(samples.claim_image_size(grid_heic, 64, 48), max_pixels=1_000_000)
    for name, data in _broken_heif_and_avif().items():
        with pytest.raises(MediaError, match="truncated or corrupt"):
            await process_image_isolated(data, max_pixels=10_000_000)
            pytest.fail(f"{name} was accepted")
    with pytest.raises(MediaError, match=r"^image processing timed out after 0.05 s$"):
        await process_image_isolated(grid_heic, max_pixels=10_000_000, timeout=0.05)
    assert _worker_children() == []


def test_the_server_process_never_loads_pillow_pillow_heif_or_ffmpeg() -> None:
    code = (
        "import sys, sup.app, sup.cli, sup.server, sup.domain.processing, sup.media.image_child, sup.media.av_probe;"
        " print(sorted(m for m in ('PIL', 'pillow_heif', 'av') if m in sys.modules))"
    )
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert found.stdout.strip() == "[]", found.stderr


async def test_isolated_processing_within_too_little_memory_says_so() -> None:
    # 12 MP decode to 48 MB of pixels, more than is left of 100 MiB after Python and Pillow.
    with pytest.raises(MediaError, match="memory"):
        await process_image_isolated(samples.jpeg(4000, 3000, gps=False), max_pixels=50_000_000, memory_limit=100 << 20)
    assert _worker_children() == []


async def test_isolated_processing_timeout_kills_the_worker() -> None:
    with pytest.raises(MediaError, match=r"^image processing timed out after 0.05 s$"):
        await process_image_isolated(samples.jpeg(), max_pixels=10_000_000, timeout=0.05)
    assert _worker_children() == []


async def test_cancelling_isolated_processing_kills_the_worker() -> None:
    task = asyncio.create_task(process_image_isolated(samples.jpeg(), max_pixels=10_000_000))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _worker_children() == []


@pytest.mark.parametrize(
    ("outcome", "reason"),
    [
        (Outcome(-signal.SIGKILL, b"", b""), "image processing was killed (memory or CPU limit)"),
        (Outcome(-signal.SIGSEGV, b"", b""), "image processing crashed (SIGSEGV)"),
        (Outcome(1, b"", b"Traceback...\nMemoryError\n"), "image processing ran out of memory (memory limit)"),
        (Outcome(1, b"", b""), "image processing failed (exit status 1)"),
        (Outcome(0, b"not msgpack", b""), "image processing returned a malformed answer"),
        (Outcome(0, b"\x81\xa6result\x81\xa5width\xa4wide", b""), "image processing returned a malformed answer"),
        (Outcome(0, b"\x80", b""), "image processing returned a malformed answer"),
        (Outcome(None, b"", b"", too_much_output=True), "image processing produced more output than allowed"),
    ],
)
def test_a_misbehaving_image_worker_gives_a_media_error(outcome: Outcome, reason: str) -> None:
    with pytest.raises(MediaError) as refused:
        image_child._interpret(outcome, 30)
    assert str(refused.value) == reason


# ---------------------------------------------------------------------------------------------- audio and video


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("media")
    samples.video(directory / "clip.mp4")
    samples.video(directory / "clip.webm", container="webm", codec="libvpx", audio_codec="libopus")
    samples.video(directory / "turned.mp4", size=(64, 32), rotation=90, audio_codec=None)
    samples.voice_note(directory / "note.ogg")
    samples.voice_note(directory / "note.m4a", container="ipod", codec="aac")
    samples.voice_note(directory / "note.mp3", container="mp3", codec="libmp3lame")
    samples.voice_note(directory / "note.flac", container="flac", codec="flac")
    samples.voice_note(directory / "note.wav", container="wav", codec="pcm_s16le")
    # Voice notes as Android's recorders write them: AAC in an `isom` MP4, AMR-NB or AAC in 3GP.
    samples.voice_note(directory / "android.mp4", container="mp4", codec="aac")
    samples.voice_note(directory / "amr.3gp", container="3gp", codec="libopencore_amrnb")
    samples.voice_note(directory / "aac.3gp", container="3gp", codec="aac")
    return directory


def _worker_children() -> list[int]:
    """Live or unreaped children of this process that run a media worker."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                cmdline = fh.read()
        except (OSError, IndexError, ValueError):
            continue
        if ppid == os.getpid() and (b"sup.media._av_worker" in cmdline or b"sup.media._image_worker" in cmdline):
            found.append(int(entry))
    return found


def _poster_size(result: ProbeResult) -> tuple[int, int]:
    assert result.poster is not None and result.poster_mime == "image/jpeg"
    with Image.open(io.BytesIO(result.poster)) as poster:
        assert poster.format == "JPEG"
        return poster.size


async def test_probe_mp4(media_dir: Path) -> None:
    result = await probe_media(media_dir / "clip.mp4", kind="video")
    assert result.ok, result.reason
    assert result.duration == pytest.approx(1.0, abs=0.1)
    assert (result.width, result.height, result.rotation) == (64, 48, 0)
    assert (result.video_codec, result.audio_codec, result.sample_rate, result.channels) == ("h264", "aac", 48000, 1)
    assert _poster_size(result) == (64, 48) == (result.poster_width, result.poster_height)
    assert (result.kind, result.mime) == ("video", "video/mp4")  # a video with sound stays a video


async def test_probe_webm_with_a_small_poster(media_dir: Path) -> None:
    result = await probe_media(media_dir / "clip.webm", kind="video", poster_max=32)
    assert result.ok, result.reason
    assert (result.container, result.video_codec, result.audio_codec) == ("matroska", "vp8", "opus")
    assert (result.width, result.height) == (64, 48)
    assert _poster_size(result) == (32, 24)


async def test_rotated_video_reports_display_size_and_an_upright_poster(media_dir: Path) -> None:
    result = await probe_media(media_dir / "turned.mp4", kind="video")
    assert result.ok, result.reason
    assert (result.width, result.height, result.rotation) == (32, 64, 270)
    assert result.audio_codec is None
    assert _poster_size(result) == (32, 64)


async def test_voice_notes_get_duration_and_a_waveform(media_dir: Path) -> None:
    for name, codec, rate in (("note.ogg", "opus", 48000), ("note.m4a", "aac", 44100)):
        result = await probe_media(media_dir / name, kind="audio", waveform_points=40)
        assert result.ok, result.reason
        assert (result.kind, result.audio_codec, result.sample_rate, result.channels) == ("audio", codec, rate, 1)
        assert result.duration == pytest.approx(2.0, abs=0.1)
        waveform = result.waveform
        assert waveform is not None and len(waveform) == 40 and result.waveform_complete
        # The note gets louder, pauses in the middle, then gets louder again.
        assert max(waveform) == 255
        assert waveform[1] < waveform[15] and waveform[21] < waveform[38]
        assert min(waveform[19:21]) < 10


@pytest.mark.parametrize(("name", "codec"), [("note.mp3", "mp3"), ("note.flac", "flac"), ("note.wav", "pcm_s16le")])
async def test_other_audio_containers(media_dir: Path, name: str, codec: str) -> None:
    result = await probe_media(media_dir / name, kind="audio", waveform_points=16)
    assert result.ok, result.reason
    assert result.audio_codec == codec and result.duration == pytest.approx(2.0, abs=0.1)
    assert len(result.waveform) == 16 and max(result.waveform) == 255


async def test_the_default_waveform_has_64_points(media_dir: Path) -> None:
    result = await probe_media(media_dir / "note.ogg", kind="audio")
    assert result.ok and len(result.waveform) == 64


def test_fold_peaks() -> None:
    assert _av_worker.fold_peaks([0, 10, 5, 20], 2) == [128, 255]
    assert _av_worker.fold_peaks([4, 8], 4) == [128, 128, 255, 255]
    assert _av_worker.fold_peaks([0, 0, 0], 3) == [0, 0, 0]
    assert _av_worker.fold_peaks([], 3) == []


async def test_wrong_kind_is_a_failure_not_an_error(media_dir: Path) -> None:
    assert (await probe_media(media_dir / "turned.mp4", kind="audio")).reason == "the file has no audio stream"
    # A "video" with sound and no picture is the audio it is; audio with a picture is not a video.
    as_video = await probe_media(media_dir / "note.ogg", kind="video")
    assert as_video.ok and (as_video.kind, as_video.mime) == ("audio", "audio/ogg")
    assert (await probe_media(media_dir / "clip.mp4", kind="audio")).kind == "audio"


@pytest.mark.parametrize(
    ("name", "sniffed", "mime", "codec", "served"),
    [
        ("android.mp4", "video/mp4", "audio/mp4", "aac", "audio/mp4"),
        ("amr.3gp", "video/3gpp", "audio/3gpp", "amr_nb", "audio/3gpp"),
        ("aac.3gp", "video/3gpp", "audio/3gpp", "aac", "audio/mp4"),
        ("note.m4a", "audio/mp4", "audio/mp4", "aac", "audio/mp4"),
    ],
)
async def test_an_mp4_or_3gp_with_only_sound_is_audio(
    media_dir: Path, tmp_path: Path, name: str, sniffed: str, mime: str, codec: str, served: str
) -> None:
    data = (media_dir / name).read_bytes()
    # The index comes last, as a phone writes it while recording: the first bytes cannot tell.
    assert data.index(b"moov") > data.index(b"mdat")
    found = sniff(data[:4096])
    assert found.mime == sniffed
    copy = tmp_path / "served"
    result = await probe_media(media_dir / name, kind=found.kind, remux_to=copy)
    assert result.ok, result.reason
    assert (result.kind, result.mime, result.audio_codec, result.remux_mime) == ("audio", mime, codec, served)
    assert result.duration == pytest.approx(2.0, abs=0.1) and result.width is None and result.poster is None
    assert len(result.waveform) == 64 and max(result.waveform) == 255 and result.waveform_complete
    # The copy served to others plays: sound only, the whole of it, its index first.
    assert copy.read_bytes().index(b"moov") < copy.read_bytes().index(b"mdat")
    with av.open(str(copy)) as played:
        assert not played.streams.video and played.streams.audio[0].codec_context.name.startswith(codec[:3])
        assert sum(frame.samples for frame in played.decode(audio=0)) >= 1.9 * played.streams.audio[0].sample_rate


async def test_a_truncated_voice_note_without_its_index_fails_with_a_reason(media_dir: Path, tmp_path: Path) -> None:
    cut = tmp_path / "cut.mp4"
    data = (media_dir / "android.mp4").read_bytes()
    cut.write_bytes(data[: data.index(b"moov")])  # the recording stopped before the index was written
    result = await probe_media(cut, kind="video")
    assert not result.ok and "not a readable audio or video file" in result.reason


async def test_empty_and_corrupt_files_fail_with_a_reason(media_dir: Path, tmp_path: Path) -> None:
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert await probe_media(empty, kind="video") == ProbeResult.failed("the media file is empty")

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(samples.corrupt((media_dir / "clip.mp4").read_bytes()))
    result = await probe_media(broken, kind="video")
    assert not result.ok and result.reason

    noise = tmp_path / "noise.ogg"
    noise.write_bytes(os.urandom(5000))
    result = await probe_media(noise, kind="audio")
    assert not result.ok and "not an allowed audio or video container" in result.reason

    missing = await probe_media(tmp_path / "missing.mp4", kind="video")
    assert not missing.ok and "cannot be read" in missing.reason


async def test_huge_claimed_duration_is_refused(media_dir: Path, tmp_path: Path) -> None:
    liar = tmp_path / "long.mp4"
    liar.write_bytes(samples.claim_duration((media_dir / "clip.mp4").read_bytes(), 100 * 3600))
    result = await probe_media(liar, kind="video")
    assert result == ProbeResult.failed("the file claims a duration of 360000 s, over the limit of 21600 s")
    # The same file passes when the limit allows it: the refusal really is about the claim.
    allowed = await probe_media(liar, kind="video", max_duration=400_000)
    assert allowed.ok and allowed.duration == pytest.approx(360_000)


async def test_oversized_dimensions_are_refused(media_dir: Path) -> None:
    result = await probe_media(media_dir / "clip.mp4", kind="video", max_dimension=32)
    assert not result.ok and "over the limit of 32 pixels" in result.reason


async def test_playlist_disguised_as_mp4_is_refused_without_opening_its_target(tmp_path: Path) -> None:
    target = tmp_path / "secret.ts"
    target.write_bytes(b"")
    for name, script in (
        ("playlist.mp4", samples.hls_playlist(str(target))),
        ("concat.mp4", samples.concat_script("secret.ts")),
    ):
        (tmp_path / name).write_bytes(script)
        result = await probe_media(tmp_path / name, kind="video")
        assert not result.ok and "not an allowed audio or video container" in result.reason


def test_ffmpeg_itself_refuses_demuxers_off_the_allow_list(tmp_path: Path) -> None:
    # Below the sniffing: even when FFmpeg probes the format itself, scripts that open other
    # files are refused before they open anything.
    samples.video(tmp_path / "secret.mp4", audio_codec=None)
    concat = tmp_path / "concat.mp4"
    concat.write_bytes(samples.concat_script("secret.mp4"))
    playlist = tmp_path / "list.m3u8"
    playlist.write_bytes(samples.hls_playlist(str(tmp_path / "secret.mp4")))
    for script, demuxer in ((concat, "concat"), (playlist, "hls")):
        # FFmpeg left to itself follows the script into secret.mp4: this is the attack.
        with av.open(str(script)) as naive:
            assert naive.format.name == demuxer and naive.streams.video
        with open(script, "rb") as fh, pytest.raises(MediaError, match="not a readable audio or video file"):
            _av_worker.open_container(fh, None)


async def test_timeout_kills_the_worker(media_dir: Path) -> None:
    result = await probe_media(media_dir / "clip.mp4", kind="video", timeout=0.001)
    assert result == ProbeResult.failed("media probe timed out after 0.001 s")
    assert _worker_children() == []


async def test_timeout_kills_the_whole_process_group(tmp_path: Path) -> None:
    marker = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time\n"
        "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        f"open({str(marker)!r}, 'w').write(str(child.pid))\n"
        "time.sleep(60)\n"
    )
    started = time.monotonic()
    outcome = await run_worker(
        [sys.executable, "-c", code], stdin=asyncio.subprocess.DEVNULL, timeout=1.0, output_limit=100_000
    )
    assert outcome.timed_out and time.monotonic() - started < 5
    grandchild = int(marker.read_text())
    for _ in range(100):
        try:
            with open(f"/proc/{grandchild}/stat") as fh:
                if fh.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
        except FileNotFoundError:
            break
        await asyncio.sleep(0.02)
    else:
        os.kill(grandchild, signal.SIGKILL)
        pytest.fail("the worker's own child outlived the timeout")


async def test_cancelling_a_probe_kills_the_worker(media_dir: Path) -> None:
    task = asyncio.create_task(probe_media(media_dir / "clip.mp4", kind="video"))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert _worker_children() == []


async def test_memory_limit_gives_a_failure(media_dir: Path) -> None:
    result = await probe_media(media_dir / "clip.mp4", kind="video", memory_limit=48 * 1024 * 1024)
    assert not result.ok and "memory" in result.reason


@pytest.mark.parametrize(
    ("code", "reason"),
    [
        ("import os, signal; os.kill(os.getpid(), signal.SIGSEGV)", "media probe crashed (SIGSEGV)"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", "media probe was killed (memory or CPU limit)"),
        ("import os, signal; os.kill(os.getpid(), signal.SIGXCPU)", "media probe was killed (CPU time limit)"),
        ("print('not json')", "media probe failed (exit status 0)"),
        ("raise MemoryError", "media probe ran out of memory (memory limit)"),
        ("print('[1, 2]')", "media probe failed (exit status 0)"),
        ('print(\'{"ok": true, "kind": "video", "width": "wide"}\')', "media probe returned a malformed answer"),
        ("import sys; sys.stdout.write('x' * 200_000)", "media probe produced more output than allowed"),
    ],
)
async def test_a_misbehaving_worker_never_crashes_the_parent(code: str, reason: str) -> None:
    outcome = await run_worker(
        [sys.executable, "-c", code], stdin=asyncio.subprocess.DEVNULL, timeout=10, output_limit=100_000
    )
    assert _interpret(outcome, 10) == ProbeResult.failed(reason)


# ---------------------------------------------------------------------------------------------- metadata-free copies


@pytest.fixture(scope="module")
def tagged_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Media carrying location, dates, names and device tags, in every container a copy is made of."""
    directory = tmp_path_factory.mktemp("tagged")
    tags, stream_tags = samples.SECRET_TAGS, samples.SECRET_STREAM_TAGS
    samples.video(directory / "clip.mp4", metadata=tags, stream_metadata=stream_tags, rotation=90)
    samples.video(
        directory / "clip.webm",
        container="webm",
        codec="libvpx",
        audio_codec="libopus",
        metadata=tags,
        stream_metadata=stream_tags,
    )
    samples.voice_note(directory / "note.ogg", metadata=tags)
    samples.voice_note(directory / "note.mp3", container="mp3", codec="libmp3lame", metadata=tags)
    samples.voice_note(directory / "note.m4a", container="ipod", codec="aac", metadata=tags)
    samples.voice_note(directory / "note.flac", container="flac", codec="flac", metadata=tags)
    samples.voice_note(directory / "note.wav", container="wav", codec="pcm_s16le", metadata=tags)
    return directory


def _tags(path: Path) -> list[tuple[str, str]]:
    """Every tag FFmpeg reads from the file, the container's and each stream's, keys lower-cased."""
    with av.open(str(path)) as container:
        found = [(k.lower(), v) for k, v in container.metadata.items()]
        for stream in container.streams:
            found += [(k.lower(), v) for k, v in stream.metadata.items()]
    return found


def _facts(path: Path) -> tuple[float, list[str], int]:
    """Duration, codecs, and how many frames of the first stream decode."""
    with av.open(str(path)) as container:
        duration = container.duration / 1_000_000
        codecs = [s.codec_context.codec.canonical_name for s in container.streams if s.type in ("video", "audio")]
        first = container.streams[0]
        decoded = sum(len(packet.decode()) for packet in container.demux(first))
    return duration, codecs, decoded


@pytest.mark.parametrize(
    ("name", "kind", "mime"),
    [
        ("clip.mp4", "video", "video/mp4"),
        ("clip.webm", "video", "video/webm"),
        ("note.ogg", "audio", "audio/ogg"),
        ("note.mp3", "audio", "audio/mpeg"),
        ("note.m4a", "audio", "audio/mp4"),
        ("note.flac", "audio", "audio/flac"),
        ("note.wav", "audio", "audio/wav"),
    ],
)
async def test_the_copy_for_others_has_no_metadata(
    tagged_dir: Path, tmp_path: Path, name: str, kind: str, mime: str
) -> None:
    original = tagged_dir / name
    assert samples.SECRET_MARK.encode() in original.read_bytes()
    assert any(samples.SECRET_MARK in v or k == "location" for k, v in _tags(original))
    copy = tmp_path / "copy"

    result = await probe_media(original, kind=kind, remux_to=copy)

    assert result.ok, result.reason
    assert result.remux_mime == mime and result.remux_size == copy.stat().st_size
    assert sniff(copy.read_bytes()[:4096]).mime == mime
    data = copy.read_bytes()
    assert samples.SECRET_MARK.encode() not in data and b"48.8577" not in data
    assert not data.startswith(b"ID3")
    tags = _tags(copy)
    assert not [
        (k, v) for k, v in tags if samples.SECRET_MARK in v or k in ("location", "location-eng", "creation_time")
    ]
    # What the probe saw is what others get: same streams, same length, and it plays.
    duration, codecs, decoded = _facts(copy)
    original_duration, original_codecs, _ = _facts(original)
    assert duration == pytest.approx(original_duration, abs=0.1)
    assert duration == pytest.approx(result.duration, abs=0.1)
    assert codecs == original_codecs
    assert decoded > 0


async def test_a_copied_phone_video_stays_upright_and_starts_with_its_index(tagged_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy.mp4"
    result = await probe_media(tagged_dir / "clip.mp4", kind="video", remux_to=copy)
    assert result.ok and result.rotation == 270
    again = await probe_media(copy, kind="video")
    assert (again.width, again.height, again.rotation) == (result.width, result.height, 270)
    data = copy.read_bytes()
    # faststart: a browser can start playing before the whole file is there.
    assert data.index(b"moov") < data.index(b"mdat")
    # Nothing names the program that wrote it either.
    assert b"Lavf" not in data


async def test_only_the_played_tracks_are_copied(tmp_path: Path) -> None:
    original = samples.video(tmp_path / "two.mkv", container="matroska", audio_codec="libopus")
    with av.open(str(original)) as source, av.open(str(tmp_path / "more.mkv"), "w", format="matroska") as out:
        streams = [out.add_stream_from_template(s) for s in source.streams]
        extra = out.add_stream_from_template(source.streams.audio[0])
        extra.metadata["title"] = "Secret commentary"
        for packet in source.demux():
            if packet.size:
                index = packet.stream.index
                packet.stream = streams[index]
                out.mux(packet)
    copy = tmp_path / "copy.mkv"
    result = await probe_media(tmp_path / "more.mkv", kind="video", remux_to=copy)
    assert result.ok, result.reason
    # H.264 does not go into WebM: the copy stays Matroska.
    assert result.remux_mime == "video/x-matroska"
    with av.open(str(copy)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]


async def test_a_copy_that_cannot_be_made_fails_and_leaves_no_file(media_dir: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(samples.corrupt((media_dir / "clip.mp4").read_bytes()))
    copy = tmp_path / "copy"
    result = await probe_media(broken, kind="video", remux_to=copy)
    assert not result.ok and result.reason
    assert not copy.exists()

    wrong = await probe_media(media_dir / "turned.mp4", kind="audio", remux_to=copy)
    assert wrong.reason == "the file has no audio stream" and not copy.exists()

    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    assert (await probe_media(empty, kind="video", remux_to=copy)).reason == "the media file is empty"
    assert not copy.exists()


async def test_a_timed_out_copy_leaves_no_file(media_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    result = await probe_media(media_dir / "clip.mp4", kind="video", timeout=0.001, remux_to=copy)
    assert result == ProbeResult.failed("media probe timed out after 0.001 s")
    assert not copy.exists() and _worker_children() == []


async def test_a_cancelled_copy_leaves_no_file(media_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    task = asyncio.create_task(probe_media(media_dir / "clip.mp4", kind="video", remux_to=copy))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not copy.exists() and _worker_children() == []


async def test_the_copy_cannot_grow_past_its_file_size_limit(
    media_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(av_probe, "REMUX_MAX_GROWTH", 0)
    monkeypatch.setattr(av_probe, "REMUX_OUTPUT_MARGIN", 1000)
    copy = tmp_path / "copy"
    result = await probe_media(media_dir / "clip.mp4", kind="video", remux_to=copy)
    assert result == ProbeResult.failed("the copy of the media grew larger than allowed")
    assert not copy.exists()


async def test_an_existing_file_is_never_overwritten(media_dir: Path, tmp_path: Path) -> None:
    existing = tmp_path / "existing"
    existing.write_bytes(b"keep me")
    with pytest.raises(FileExistsError):
        await probe_media(media_dir / "clip.mp4", kind="video", remux_to=existing)
    assert existing.read_bytes() == b"keep me"
