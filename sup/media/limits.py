"""Default limits for media processing; the app's config passes its own values."""

MiB = 1024 * 1024

# Bytes `sniff` wants to see; every signature it knows fits in the first 4 KiB.
SNIFF_BYTES = 4096

# 50 MP decodes to about 200 MB of RGBA: a large phone photo fits, a crafted bomb does not.
MAX_IMAGE_PIXELS = 50_000_000
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
# and no file writes at all.
PROBE_MAX_OPEN_FILES = 32
PROBE_MAX_FILE_WRITE = 0
# A poster is base64 in the JSON answer; anything past this is a misbehaving worker.
PROBE_MAX_OUTPUT = 16 * MiB
# Packets read while looking for a first decodable video frame before giving up.
POSTER_MAX_PACKETS = 600
