"""Default limits for media processing; the app's config passes its own values."""

MiB = 1024 * 1024

# Bytes `sniff` wants to see; every signature it knows fits in the first 4 KiB.
SNIFF_BYTES = 4096

# 50 MP decodes to about 200 MB of RGBA: a large phone photo fits, a crafted bomb does not.
MAX_IMAGE_PIXELS = 50_000_000
# Only an animation's first frame is decoded here, but every viewer's browser decodes them all:
# a few kilobytes of WebP can hold thousands of frames of a large canvas.
MAX_ANIMATION_FRAMES = 2000
MAX_ANIMATION_PIXELS = 1_000_000_000  # frames x width x height
THUMBNAIL_SIZES = (320, 1280)

PROBE_TIMEOUT = 20.0
# The worker needs about 150 MB of address space to start (Python, FFmpeg, Pillow).
PROBE_MEMORY_LIMIT = 512 * MiB
# Longer than any voice note or chat video; a larger claim is a broken or crafted file.
PROBE_MAX_DURATION = 6 * 3600.0
PROBE_MAX_DIMENSION = 16384
POSTER_MAX = 1280
WAVEFORM_POINTS = 64
# The worker reads its input from stdin and writes JSON to stdout; it needs few descriptors
# and no file writes, except for a remuxed copy (below).
PROBE_MAX_OPEN_FILES = 32
PROBE_MAX_FILE_WRITE = 0
# A remuxed copy differs from its input only in framing and tags; more than this many times
# the input (plus a little for the headers of a tiny file) is a misbehaving worker. It is the
# worker's file size limit while it remuxes, so it also bounds the disk a runaway can fill.
REMUX_MAX_GROWTH = 2
REMUX_OUTPUT_MARGIN = 4 * MiB
# A poster is base64 in the JSON answer; anything past this is a misbehaving worker.
PROBE_MAX_OUTPUT = 16 * MiB
# Packets read while looking for a first decodable video frame before giving up.
POSTER_MAX_PACKETS = 600

# Image decoding runs in a worker like the probe: a 49 MP WebP of 87 KB peaks near 900 MB.
IMAGE_TIMEOUT = 30.0
IMAGE_MEMORY_LIMIT = 1024 * MiB
# The worker reads the image from stdin and writes its answer to stdout: no files at all.
IMAGE_MAX_OPEN_FILES = 16
IMAGE_MAX_FILE_WRITE = 0
# libjpeg's default progression has 10 scans; thousands only serve to make decoding slow.
JPEG_MAX_SCANS = 1000
