"""Media benchmark: upload throughput (local disk and S3) and thumbnail time of `sup run`.

Everything runs against a real `python -m sup run` subprocess on a free loopback port, with a fresh
temporary data directory (SQLite by default; with --database-url postgresql://... a fresh Postgres
database per server). For S3 the blob store is moto's S3 server, started as a separate subprocess on
a free loopback port: an in-memory mock on the same machine, so S3 figures measure SUP + moto sharing
the same CPUs, not a real object store.

1. upload throughput: a --size-mb file (MB = 10^6 bytes), generated as it is sent (the client never
   holds it), uploaded (a) as one streamed `POST /api/v1/media/upload` and (b) resumable, chunk by chunk,
   then `complete`; MB/s is the size over the wall time from the first byte sent to the 201 answer.
   Alongside: the server's peak RSS during the upload (VmHWM, reset before each upload), CPU by process;
2. thumbnails: a 12-megapixel JPEG (4000x3000, noise over gradients, EXIF orientation 6) is uploaded
   and `GET /api/v1/media/{id}` polled every 10 ms until `ready`: the time from the 201 answer to
   `ready`; then `sup.media.images.process_image` on the same file in this process, step by step, so
   processing can be told apart from queueing, blob reads and writes and the database.

Usage (from the project root):

    .venv/bin/python bench/media.py [--size-mb 200] [--runs 3] [--skip-s3] [--database-url URL]

A readable table is printed; every figure is written as JSON to --json-out (default
bench/reports/media-<timestamp>.json). Exit status: 0 when every upload arrived whole (size and SHA-256
checked), every image became `ready` with the right dimensions and every server stopped cleanly;
1 otherwise; 2 when the benchmark could not run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import io
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
from foundation import (
    HOST,
    OTHER_LOAD_WARN_PCT,
    PASSWORD,
    BenchError,
    PostgresDatabases,
    ServerProcess,
    add_database_url,
    check_database_url,
    cpu_seconds,
    free_port,
    host_cpu_since,
    host_cpu_times,
    kill_server,
    log_problems,
    post,
    proc_status,
    report_head,
    report_tail,
    run_and_report,
    server_env,
    software_info,
    spawn_server,
    stop_server,
    summary_end,
    wait_healthy,
    working_tree,
)
from watch import thread_cpu

BENCH_DIR = Path(__file__).resolve().parent
API = "/api/v1/media"
MB = 1_000_000  # throughput unit: decimal megabytes
MiB = 1024 * 1024
CLIENT_CHUNK = 1 * MiB  # the client hands the body to aiohttp in pieces of this size, as if read from a file
WARMUP_BYTES = 2 * MiB  # one small upload per mode before measuring: lazy imports, connections, S3 client
POLL_S = 0.010  # GET /api/v1/media/{id} this often while waiting for `ready`
READY_TIMEOUT_S = 120.0
SETTLE_S = 0.5  # pause between measurements: let fsyncs, deletes and job bookkeeping finish
IMAGE_SIZE = (4000, 3000)  # 12 MP
IMAGE_NOISE_SIGMA = 16  # gives a ~5 MB JPEG at quality 90, like a phone photo of that size
IMAGE_QUALITY = 90
EXIF_ORIENTATION = 6  # "rotate 90 CW to display": the server must transpose, as for a portrait phone photo
S3_BUCKET = "sup-bench"
S3_START_TIMEOUT_S = 30.0
# werkzeug logs a request after answering it: SUP may have answered us before moto wrote the last line.
S3_LOG_DELAY_S = 0.3
_ANSI = re.compile(r"\x1b\[[0-9;]*m")  # werkzeug colours the lines of non-2xx answers
_ACCESS_LINE = re.compile(r'"([A-Z]+) (/[^ "]*) HTTP/1\.[01]" (\d{3})')


# -- the payload ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Payload:
    """A file of `size` bytes that is never held in memory: one random block, repeated.

    A fresh block per upload gives every upload its own SHA-256, so the content-addressed blob store
    never deduplicates one run onto the previous one."""

    size: int
    block: bytes
    sha256: str

    @classmethod
    def make(cls, size: int) -> Payload:
        # A fixed text-free prefix: the server sniffs application/octet-stream, so no processing job.
        block = b"\x00SUP-BENCH\x00" + os.urandom(CLIENT_CHUNK - 11)
        hasher = hashlib.sha256()
        view = memoryview(block)
        for offset in range(0, size, CLIENT_CHUNK):
            hasher.update(view[: min(CLIENT_CHUNK, size - offset)])
        return cls(size, block, hasher.hexdigest())

    async def stream(self, start: int, end: int, first_byte: list[float]) -> AsyncIterator[bytes]:
        """Bytes [start, end), generated as aiohttp asks for them; the time of the first is appended."""
        position = start
        while position < end:
            offset = position % CLIENT_CHUNK
            n = min(CLIENT_CHUNK - offset, end - position)
            piece = self.block if n == CLIENT_CHUNK else self.block[offset : offset + n]
            if not first_byte:
                first_byte.append(time.perf_counter())
            yield piece
            position += n


# -- the test image -------------------------------------------------------------------------------


def make_jpeg() -> bytes:
    """A 12 MP JPEG that does not compress to nothing: Gaussian noise over three gradients."""
    from PIL import Image, ImageChops

    width, height = IMAGE_SIZE
    gradients = [
        Image.linear_gradient("L").resize(IMAGE_SIZE),
        Image.linear_gradient("L").rotate(90).resize(IMAGE_SIZE),
        Image.radial_gradient("L").resize(IMAGE_SIZE),
    ]
    channels = [ImageChops.add(g, Image.effect_noise((width, height), IMAGE_NOISE_SIGMA), 1.0, -128) for g in gradients]
    exif = Image.Exif()
    exif[0x0112] = EXIF_ORIENTATION
    out = io.BytesIO()
    Image.merge("RGB", channels).save(out, "JPEG", quality=IMAGE_QUALITY, exif=exif)
    return out.getvalue()


def jpeg_variant(jpeg: bytes, tag: str) -> bytes:
    """The same image with a comment segment after SOI: other bytes (no deduplication), same pixels."""
    comment = f"sup-bench {tag}".encode()
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


def time_process_image(jpeg: bytes, runs: int) -> dict[str, Any]:
    """process_image in this process, `runs` times, with its steps timed (decode = the rest)."""
    from sup.config import MediaConfig
    from sup.media import images
    from sup.media.limits import THUMBNAIL_SIZES

    steps = {
        "_orient_in_place": "orient",
        "_display_image": "to_rgb",
        "_thumbnails": "thumbnails",
        "_placeholder": "blurhash",
        "_reencode": "sanitized_reencode",
    }
    spent: dict[str, float] = {}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name] = spent.get(name, 0.0) + time.perf_counter() - started

        return wrapper

    originals = {attr: getattr(images, attr) for attr in steps}
    per_run: list[dict[str, float]] = []
    result = None
    try:
        for attr, name in steps.items():
            setattr(images, attr, timed(name, originals[attr]))
        for _ in range(runs):
            spent.clear()
            started = time.perf_counter()
            result = images.process_image(jpeg, max_pixels=MediaConfig().max_image_pixels, sizes=THUMBNAIL_SIZES)
            total = time.perf_counter() - started
            run = {"total": total, "open_and_decode": total - sum(spent.values()), **spent}
            per_run.append(run)
    finally:
        for attr, fn in originals.items():
            setattr(images, attr, fn)
    assert result is not None
    keys = ["total", "open_and_decode", *steps.values()]
    return {
        "runs": runs,
        "median_ms": {k: round(statistics.median(r.get(k, 0.0) for r in per_run) * 1000, 1) for k in keys},
        "all_total_ms": [round(r["total"] * 1000, 1) for r in per_run],
        "output": {
            "width": result.width,
            "height": result.height,
            "thumbnails": [
                {"size": t.size_name, "width": t.width, "height": t.height, "bytes": len(t.data)}
                for t in result.thumbnails
            ],
            "sanitized_bytes": len(result.sanitized or b""),
        },
    }


# -- /proc ----------------------------------------------------------------------------------------


def _kib(pid: int, key: str) -> int:
    return int(proc_status(pid)[key].split()[0])


def reset_peak_rss(pid: int) -> bool:
    """Set VmHWM of pid back to its current RSS (Linux >= 4.0; needs the right to write its clear_refs)."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        return False
    return True


class PeakRss:
    """Peak RSS of a process over a window: VmHWM reset through /proc/PID/clear_refs ("5") at the start;
    where that is not allowed, VmRSS sampled every 10 ms instead (which can miss a short spike)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before_kib = 0
        self.peak_kib = 0
        self.method = "VmHWM reset"
        self._sampler: asyncio.Task[None] | None = None

    async def __aenter__(self) -> PeakRss:
        self.before_kib = _kib(self.pid, "VmRSS")
        if not reset_peak_rss(self.pid):
            self.method = "VmRSS sampled every 10 ms"
            self.peak_kib = self.before_kib
            self._sampler = asyncio.create_task(self._sample())
        return self

    async def _sample(self) -> None:
        while True:
            with contextlib.suppress(OSError):
                self.peak_kib = max(self.peak_kib, _kib(self.pid, "VmRSS"))
            await asyncio.sleep(0.01)

    async def __aexit__(self, *exc: object) -> None:
        if self._sampler is not None:
            self._sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sampler
        with contextlib.suppress(OSError):
            self.peak_kib = max(self.peak_kib, _kib(self.pid, "VmHWM" if self._sampler is None else "VmRSS"))

    def result(self) -> dict[str, Any]:
        return {
            "rss_before_mib": round(self.before_kib / 1024, 1),
            "peak_rss_mib": round(self.peak_kib / 1024, 1),
            "peak_over_before_mib": round((self.peak_kib - self.before_kib) / 1024, 1),
            "method": self.method,
        }


class CpuWindow:
    """CPU seconds used during a window: the server (event-loop thread and its other threads), this client,
    the S3 server, and the host as a whole; whatever else the host did is "other load"."""

    def __init__(self, server_pid: int, s3_pid: int | None) -> None:
        self.pids = {"server": server_pid, "client": os.getpid(), **({"s3": s3_pid} if s3_pid else {})}
        self.server_pid = server_pid
        self.before = {name: cpu_seconds(pid) for name, pid in self.pids.items()}
        self.loop_before = thread_cpu(server_pid).get(server_pid, 0.0)
        self.host = host_cpu_times()
        self.started = time.perf_counter()

    def result(self) -> dict[str, Any]:
        elapsed = time.perf_counter() - self.started
        used = {name: cpu_seconds(pid) - self.before[name] for name, pid in self.pids.items()}
        loop = min(used["server"], thread_cpu(self.server_pid).get(self.server_pid, 0.0) - self.loop_before)
        host_busy, capacity = host_cpu_since(self.host)
        other = max(0.0, host_busy - sum(used.values()))
        return {
            "elapsed_s": round(elapsed, 3),
            "server_cpu_s": round(used["server"], 2),
            "server_event_loop_thread_cpu_s": round(loop, 2),
            "server_other_threads_cpu_s": round(used["server"] - loop, 2),
            "client_cpu_s": round(used["client"], 2),
            "s3_cpu_s": round(used["s3"], 2) if "s3" in used else None,
            "host_cpu_busy_pct": round(100 * host_busy / capacity, 1) if capacity else 0.0,
            "other_cpu_pct_of_host": round(100 * other / capacity, 1) if capacity else 0.0,
        }


def filesystem_of(path: Path) -> dict[str, str] | None:
    """The mount holding path (longest mount-point prefix in /proc/mounts): device and type."""
    best: tuple[str, str, str] | None = None
    resolved = str(path.resolve())
    with contextlib.suppress(OSError), open("/proc/mounts") as fh:
        for line in fh:
            device, mount, fstype = line.split()[:3]
            inside = resolved == mount or resolved.startswith(mount.rstrip("/") + "/")
            if inside and (best is None or len(mount) > len(best[1])):
                best = (device, mount, fstype)
    return {"device": best[0], "mount": best[1], "type": best[2]} if best else None


# -- moto's S3 server ----------------------------------------------------------------------------


class MotoServer:
    """`python -m moto.server` on a free loopback port: its own process, so its CPU is not the client's."""

    def __init__(self, python: str, log_path: Path) -> None:
        self.python = python
        self.log_path = log_path
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.port = free_port()
        with open(self.log_path, "wb") as log:
            return subprocess.Popen(
                [self.python, "-m", "moto.server", "-H", HOST, "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**server_env(None), "PYTHONUNBUFFERED": "1"},
                cwd=self.log_path.parent,
            )

    async def start(self, session: aiohttp.ClientSession) -> None:
        """Spawn it and wait until it answers HTTP."""
        self.proc = self._spawn()
        deadline = time.perf_counter() + S3_START_TIMEOUT_S
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise BenchError(f"moto_server exited with status {self.proc.returncode}:\n{self.log_tail()}")
            try:
                async with session.get(f"{self.endpoint_url}/moto-api/") as resp:
                    await resp.read()
                    return
            except (aiohttp.ClientError, OSError, TimeoutError):
                await asyncio.sleep(0.05)
        raise BenchError(f"moto_server did not answer within {S3_START_TIMEOUT_S:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def log_offset(self) -> int:
        with contextlib.suppress(OSError):
            return self.log_path.stat().st_size
        return 0

    def requests_since(self, offset: int) -> dict[str, int]:
        """S3 operations moto logged since offset (werkzeug's access log), e.g. {"UploadPart 200": 25}."""
        with open(self.log_path, "rb") as fh:
            fh.seek(offset)
            text = _ANSI.sub("", fh.read().decode(errors="replace"))
        counts: dict[str, int] = {}
        for method, target, status in _ACCESS_LINE.findall(text):
            name = f"{s3_operation(method, target)} {status}"
            counts[name] = counts.get(name, 0) + 1
        return dict(sorted(counts.items()))

    def memory_mib(self) -> dict[str, float]:
        return {
            "rss_mib": round(_kib(self.pid, "VmRSS") / 1024, 1),
            "peak_rss_mib": round(_kib(self.pid, "VmHWM") / 1024, 1),
        }

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def s3_operation(method: str, target: str) -> str:
    """The S3 API call behind a path-style request line (a copy looks like a PUT of an object)."""
    path, _, query = target.partition("?")
    params = {p.split("=", 1)[0] for p in query.split("&") if p}
    is_object = path.strip("/").count("/") >= 1
    if "uploadId" in params:
        if method == "PUT":
            return "UploadPart"
        return {"POST": "CompleteMultipartUpload", "DELETE": "AbortMultipartUpload"}.get(method, f"{method} ?uploadId")
    if "uploads" in params:
        return "CreateMultipartUpload" if method == "POST" else "ListMultipartUploads"
    if "delete" in params:
        return "DeleteObjects"
    if "list-type" in params:
        return "ListObjectsV2"
    if is_object:
        return {"PUT": "PutObject/CopyObject", "GET": "GetObject", "HEAD": "HeadObject", "DELETE": "DeleteObject"}.get(
            method, method
        )
    return f"{method} bucket"


# -- uploads --------------------------------------------------------------------------------------


@dataclass
class Target:
    """One running server with one user, and the S3 server behind it (if any)."""

    backend: str
    server: ServerProcess
    session: aiohttp.ClientSession
    token: str
    moto: MotoServer | None
    problems: list[str]
    other_load: dict[str, float] = field(default_factory=dict)  # measurement -> % of the host's CPU

    @property
    def base(self) -> str:
        return self.server.base_url

    def note_other_load(self, what: str, cpu: dict[str, Any]) -> None:
        self.other_load[what] = cpu["other_cpu_pct_of_host"]

    def other_load_warning(self) -> str | None:
        """One line for all measurements during which other processes used more than OTHER_LOAD_WARN_PCT."""
        high = {what: pct for what, pct in self.other_load.items() if pct > OTHER_LOAD_WARN_PCT}
        if not high:
            return None
        return (
            f"{self.backend}: during {len(high)} of {len(self.other_load)} measurements more than "
            f"{OTHER_LOAD_WARN_PCT:g}% of the host's CPU went to processes that are not this benchmark (other users' "
            f"work; kernel threads such as disk writeback count too): median {statistics.median(high.values()):g}%, "
            f"max {max(high.values()):g}% ({max(high, key=high.__getitem__)}); the figures are lower than on a "
            "quiet host"
        )

    def headers(self, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}", **extra}

    async def request(self, method: str, path: str, expect: int, **kwargs: Any) -> dict[str, Any]:
        async with self.session.request(method, self.base + path, headers=self.headers(), **kwargs) as resp:
            body = await resp.read()
            if resp.status != expect:
                raise BenchError(f"{method} {path} -> {resp.status} (expected {expect}): {body[:300]!r}")
            return json.loads(body)


def _octet(length: int) -> dict[str, str]:
    return {"Content-Type": "application/octet-stream", "Content-Length": str(length)}


async def upload_streamed(t: Target, payload: Payload, name: str) -> dict[str, Any]:
    """One POST with the whole body; the clock starts when aiohttp takes the first byte of the body."""
    first: list[float] = []
    async with t.session.post(
        f"{t.base}{API}/upload",
        params={"filename": name},
        data=payload.stream(0, payload.size, first),
        headers=t.headers(**_octet(payload.size)),
    ) as resp:
        body = await resp.read()
        done = time.perf_counter()
    if resp.status != 201:
        raise BenchError(f"streamed upload -> {resp.status}: {body[:300]!r}")
    return {"seconds": done - first[0], "media": json.loads(body)}


async def upload_resumable(t: Target, payload: Payload, name: str) -> dict[str, Any]:
    """POST /uploads, each chunk PUT in order (one at a time), POST complete; timed from the first request."""
    started = time.perf_counter()
    upload = await t.request("POST", f"{API}/uploads", 201, json={"size": payload.size, "filename": name})
    upload_id, chunk_size, count = upload["upload_id"], upload["chunk_size"], upload["chunk_count"]
    chunk_seconds: list[float] = []
    for index in range(count):
        start, end = index * chunk_size, min((index + 1) * chunk_size, payload.size)
        put_started = time.perf_counter()
        async with t.session.put(
            f"{t.base}{API}/uploads/{upload_id}/chunks/{index}",
            data=payload.stream(start, end, []),
            headers=t.headers(**_octet(end - start)),
        ) as resp:
            body = await resp.read()
        if resp.status != 200:
            raise BenchError(f"chunk {index} -> {resp.status}: {body[:300]!r}")
        chunk_seconds.append(time.perf_counter() - put_started)
    chunks_done = time.perf_counter()
    media = await t.request("POST", f"{API}/uploads/{upload_id}/complete", 201)
    done = time.perf_counter()
    return {
        "seconds": done - started,
        "media": media,
        "chunk_size": chunk_size,
        "chunks": count,
        "chunks_s": round(chunks_done - started, 3),
        "complete_s": round(done - chunks_done, 3),
        "chunk_ms": {
            "median": round(statistics.median(chunk_seconds) * 1000, 1),
            "max": round(max(chunk_seconds) * 1000, 1),
        },
    }


UPLOADS = {"streamed": upload_streamed, "resumable": upload_resumable}


async def measure_upload(t: Target, mode: str, size: int, label: str, *, warmup: bool = False) -> dict[str, Any]:
    payload = await asyncio.to_thread(Payload.make, size)
    await asyncio.sleep(SETTLE_S)
    s3_log = t.moto.log_offset() if t.moto else 0
    async with PeakRss(t.server.pid) as memory:
        cpu = CpuWindow(t.server.pid, t.moto.pid if t.moto else None)
        result = await UPLOADS[mode](t, payload, f"{label}.bin")
        result["cpu"] = cpu.result()
    result["server_memory"] = memory.result()
    if t.moto:
        await asyncio.sleep(S3_LOG_DELAY_S)
        result["s3_requests"] = t.moto.requests_since(s3_log)
    media = result.pop("media")
    result["mb_per_s"] = round(size / MB / result["seconds"], 1)
    result["seconds"] = round(result["seconds"], 3)
    result["media_id"] = media["id"]
    ok = media["size"] == size and media["sha256"] == payload.sha256 and media["status"] == "ready"
    result["verified"] = ok
    if not ok:
        t.problems.append(
            f"{t.backend} {mode} upload {label}: stored size {media['size']}, sha256 {media['sha256'][:12]}, "
            f"status {media['status']}; sent {size} bytes, sha256 {payload.sha256[:12]}"
        )
    if not warmup:
        t.note_other_load(f"upload {label}", result["cpu"])
    return result


# -- thumbnails -----------------------------------------------------------------------------------


async def measure_thumbnail(t: Target, jpeg: bytes, label: str) -> dict[str, Any]:
    """Upload the JPEG, then poll GET /api/v1/media/{id} every 10 ms: 201 -> `ready`."""
    await asyncio.sleep(SETTLE_S)
    started = time.perf_counter()
    async with t.session.post(
        f"{t.base}{API}/upload", params={"filename": f"{label}.jpg"}, data=jpeg, headers=t.headers(**_octet(len(jpeg)))
    ) as resp:
        body = await resp.read()
        answered = time.perf_counter()
    if resp.status != 201:
        raise BenchError(f"image upload -> {resp.status}: {body[:300]!r}")
    media = json.loads(body)
    polls = 0
    cpu = CpuWindow(t.server.pid, t.moto.pid if t.moto else None)
    while media["status"] == "pending" and time.perf_counter() - answered < READY_TIMEOUT_S:
        await asyncio.sleep(POLL_S)
        media = await t.request("GET", f"{API}/{media['id']}", 200)
        polls += 1
    ready = time.perf_counter()
    result = {
        "upload_ms": round((answered - started) * 1000, 1),
        "ready_ms": round((ready - answered) * 1000, 1),
        "polls": polls,
        "status": media["status"],
        "width": media.get("width"),
        "height": media.get("height"),
        "thumbnail": media.get("thumbnail"),
        "cpu": cpu.result(),
    }
    t.note_other_load(f"thumbnail {label}", result["cpu"])
    expected = (IMAGE_SIZE[1], IMAGE_SIZE[0])  # orientation 6: shown as portrait
    if media["status"] != "ready" or (media.get("width"), media.get("height")) != expected or not media["thumbnail"]:
        t.problems.append(
            f"{t.backend} thumbnail {label}: status {media['status']} ({media.get('failure')}), "
            f"{media.get('width')}x{media.get('height')}, thumbnail {media.get('thumbnail')}"
        )
    return result


# -- the benchmark --------------------------------------------------------------------------------


def median_of(values: Sequence[float]) -> dict[str, Any]:
    return {
        "median": round(statistics.median(values), 1),
        "min": round(min(values), 1),
        "max": round(max(values), 1),
        "all": [round(v, 1) for v in values],
    }


def media_env(args: argparse.Namespace, moto: MotoServer | None) -> list[tuple[str, str]]:
    """Server settings: limits that let --size-mb through, and the S3 store when there is one."""
    limit = max(2 * args.size_mb * MB, 2048 * MiB)
    env = [
        ("SUP_MEDIA_MAX_FILE_BYTES", str(limit)),
        ("SUP_MEDIA_QUOTA_BYTES", str(limit * (4 * args.runs + 4))),
    ]
    if moto is not None:
        env += [
            ("SUP_BLOBS_URL", f"s3://{S3_BUCKET}/sup"),
            ("SUP_BLOBS_S3_ENDPOINT_URL", moto.endpoint_url),
            ("SUP_BLOBS_S3_REGION", "us-east-1"),
            ("SUP_BLOBS_S3_ACCESS_KEY_ID", "testing"),
            ("SUP_BLOBS_S3_SECRET_ACCESS_KEY", "testing"),
            ("SUP_BLOBS_S3_ADDRESSING_STYLE", "path"),
            ("SUP_BLOBS_S3_CREATE_BUCKET", "true"),
        ]
    return env


@dataclass
class Bench:
    args: argparse.Namespace
    tmp: Path
    pg: PostgresDatabases | None
    jpeg: bytes
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    servers: list[ServerProcess] = field(default_factory=list)
    motos: list[MotoServer] = field(default_factory=list)

    async def backend(self, name: str, poll: aiohttp.ClientSession) -> dict[str, Any]:
        """Start a server (and for S3 a moto server), then uploads and thumbnails; stop them again."""
        args = self.args
        report: dict[str, Any] = {}
        moto = None
        if name == "s3":
            moto = MotoServer(args.python, self.tmp / "moto.log")
            self.motos.append(moto)
            await moto.start(poll)
        env = media_env(args, moto)
        report["server_env"] = dict(env)
        database_url = await self.pg.create() if self.pg else None
        data_dir = self.tmp / f"data-{name}"
        server = spawn_server(args.python, data_dir, database_url, env, log_per_port=True)
        self.servers.append(server)
        await wait_healthy(server, poll)
        if name == "disk":
            report["filesystem"] = filesystem_of(data_dir)
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=300)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            user = await post(
                session, f"{server.base_url}/api/v1/auth/register", {"username": "bench", "password": PASSWORD}
            )
            t = Target(name, server, session, user["access_token"], moto, self.problems)
            for mode in UPLOADS:  # not measured: first-use costs (imports, the S3 client's connections)
                await measure_upload(t, mode, WARMUP_BYTES, f"warmup-{mode}", warmup=True)
            report["server_rss_before_uploads_mib"] = round(_kib(server.pid, "VmRSS") / 1024, 1)
            runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in UPLOADS}
            for i in range(args.runs):
                for mode in UPLOADS:
                    runs[mode].append(await measure_upload(t, mode, args.size_mb * MB, f"{name}-{mode}-{i}"))
            report["uploads"] = {
                mode: {
                    "mb_per_s": median_of([r["mb_per_s"] for r in results]),
                    "seconds": median_of([r["seconds"] for r in results]),
                    "server_peak_rss_mib": max(r["server_memory"]["peak_rss_mib"] for r in results),
                    "runs": results,
                }
                for mode, results in runs.items()
            }
            thumbs = [
                await measure_thumbnail(t, jpeg_variant(self.jpeg, f"{name}-{i}"), f"{name}-{i}")
                for i in range(args.runs)
            ]
            report["thumbnail"] = {
                "ready_ms": median_of([r["ready_ms"] for r in thumbs]),
                "upload_ms": median_of([r["upload_ms"] for r in thumbs]),
                "runs": thumbs,
            }
            report["server_rss_end_mib"] = round(_kib(server.pid, "VmRSS") / 1024, 1)
            report["other_load_pct_of_host"] = t.other_load
            if warning := t.other_load_warning():
                self.warnings.append(warning)
        if moto is not None:
            report["s3_server_memory"] = moto.memory_mib()
        report["shutdown"] = await stop_server(server)
        if not report["shutdown"]["ok"]:
            self.problems.append(f"{name} server did not exit 0 within 10 s of SIGTERM: {report['shutdown']}")
        bad = log_problems(server)
        report["server_log_problems"] = bad[:40]
        if bad:
            self.problems.append(f"the {name} server logged {len(bad)} ERROR/WARNING/Traceback lines")
        if moto is not None:
            moto.stop()
        if self.pg and database_url:
            await self.pg.drop(database_url)
        return report

    def cleanup(self) -> None:
        for server in self.servers:
            kill_server(server)
        for moto in self.motos:
            moto.stop()


def software(python: str) -> dict[str, Any]:
    from importlib import metadata

    from PIL import features

    info = software_info(python)
    for package in ("pillow", "moto", "aiobotocore", "botocore", "werkzeug"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            info[package] = metadata.version(package)
    info["libjpeg_turbo"] = features.version("libjpeg_turbo")
    info["webp"] = features.version("webp")
    info["working_tree"] = working_tree()
    return info


def config_info(args: argparse.Namespace, jpeg: bytes) -> dict[str, Any]:
    from sup.config import Config, JobsConfig

    defaults = Config()
    return {
        "size_mb": args.size_mb,
        "size_bytes": args.size_mb * MB,
        "mb": "10^6 bytes",
        "runs": args.runs,
        "skip_s3": args.skip_s3,
        "database": "postgres" if args.database_url else "sqlite",
        "client_chunk_bytes": CLIENT_CHUNK,
        "resumable_chunk_bytes": defaults.media.chunk_bytes,
        "s3_part_size_bytes": defaults.blobs.s3_part_size,
        "job_workers": JobsConfig().workers,
        "ready_poll_ms": POLL_S * 1000,
        "image": {
            "width": IMAGE_SIZE[0],
            "height": IMAGE_SIZE[1],
            "bytes": len(jpeg),
            "quality": IMAGE_QUALITY,
            "noise_sigma": IMAGE_NOISE_SIGMA,
            "exif_orientation": EXIF_ORIENTATION,
        },
    }


async def run_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    started = time.perf_counter()
    jpeg = await asyncio.to_thread(make_jpeg)
    pg = PostgresDatabases(args.database_url) if args.database_url else None
    report = report_head("media", "postgres" if pg else "sqlite", software(args.python), config_info(args, jpeg))
    if pg:
        report["software"]["postgres"] = await pg.server_version()
    backends = ["disk"] if args.skip_s3 else ["disk", "s3"]
    with tempfile.TemporaryDirectory(prefix="sup-bench-media-") as tmp:
        bench = Bench(args, Path(tmp), pg, jpeg)
        try:
            # The client's own peak shows that it never holds a file (Pillow's work in it comes afterwards).
            async with (
                asyncio.timeout(args.max_seconds),
                PeakRss(os.getpid()) as client,
                aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=2)) as poll,
            ):
                report["backends"] = {name: await bench.backend(name, poll) for name in backends}
            report["client_memory"] = client.result()
        finally:
            bench.cleanup()
            if pg:
                await pg.drop_all()
    report["process_image"] = await asyncio.to_thread(time_process_image, jpeg, max(3, args.runs))
    return report_tail(report, bench.problems, bench.warnings, started)


# -- output -------------------------------------------------------------------------------------


def _range(f: dict[str, Any], unit: str = "") -> str:
    return f"{f['median']:g}{unit} ({f['min']:g}-{f['max']:g})"


def _table(rows: Sequence[Sequence[str]]) -> Iterator[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        cells = [cell.ljust(w) if i < 2 else cell.rjust(w) for i, (cell, w) in enumerate(zip(row, widths, strict=True))]
        yield "   " + "  ".join(cells)
        if n == 0:
            yield "   " + "  ".join("-" * w for w in widths)


def _median_run(runs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    return sorted(runs, key=lambda r: r["seconds"])[len(runs) // 2]


def _upload_lines(report: dict[str, Any]) -> list[str]:
    cfg, backends = report["config"], report.get("backends", {})
    rows = [["backend", "mode", "MB/s", "seconds", "server RSS MiB", "server CPU s", "client", "moto"]]
    notes = []
    for name, b in backends.items():
        for mode, u in b["uploads"].items():
            run = _median_run(u["runs"])
            cpu, mem = run["cpu"], run["server_memory"]
            rows.append(
                [
                    "disk" if name == "disk" else "s3 (moto)",
                    mode,
                    _range(u["mb_per_s"]),
                    _range(u["seconds"]),
                    f"{mem['rss_before_mib']:g} -> {u['server_peak_rss_mib']:g}",
                    f"{cpu['server_cpu_s']:g} = {cpu['server_event_loop_thread_cpu_s']:g} loop + "
                    f"{cpu['server_other_threads_cpu_s']:g} threads",
                    f"{cpu['client_cpu_s']:g}",
                    "-" if cpu["s3_cpu_s"] is None else f"{cpu['s3_cpu_s']:g}",
                ]
            )
            if mode == "resumable":
                notes.append(
                    f"   {name} resumable: {run['chunks']} chunks in {run['chunks_s']:g} s (a PUT: median "
                    f"{run['chunk_ms']['median']:g} ms, max {run['chunk_ms']['max']:g} ms), then complete "
                    f"{run['complete_s']:g} s"
                )
            if "s3_requests" in run:
                calls = ", ".join(f"{k} x{v}" for k, v in run["s3_requests"].items())
                notes.append(f"   {name} {mode}: S3 calls: {calls}")
    client = report.get("client_memory", {})
    lines = [
        f"1. upload of {cfg['size_mb']} MB (MB = 10^6 bytes), median (min-max) of {cfg['runs']} runs; "
        "MB/s = size / (first byte sent -> 201 answer)",
        f"   streamed: one POST of the raw body; resumable: POST /uploads, {cfg['resumable_chunk_bytes'] // MiB} MiB "
        "chunks PUT one after the other, POST complete (joins the chunks into one blob)",
        *_table(rows),
        "   server RSS: before the upload -> the highest peak (VmHWM, reset before each upload) over the runs; "
        "CPU columns: CPU seconds of the median run",
        *notes,
        f"   this client while uploading: RSS {client.get('rss_before_mib')} -> peak {client.get('peak_rss_mib')} MiB "
        "(the payload is generated as it is sent)",
    ]
    if "s3" in backends:
        moto = backends["s3"].get("s3_server_memory", {})
        lines.append(
            "   NOTE: s3 = moto's in-memory S3 mock, a separate process on this machine: the figures measure SUP + "
            "moto sharing the same CPUs and disk, not real S3 (moto keeps objects over ~5 MiB in temporary files; "
            f"its RSS at the end: {moto.get('rss_mib')} MiB)."
        )
    return lines


def _thumbnail_lines(report: dict[str, Any]) -> list[str]:
    cfg, backends = report["config"], report.get("backends", {})
    img = cfg["image"]
    lines = [
        f"2. thumbnails of a {img['width']}x{img['height']} JPEG ({img['bytes'] / MB:.1f} MB, quality "
        f"{img['quality']}, EXIF orientation {img['exif_orientation']}), median (min-max) of {cfg['runs']} runs",
    ]
    for name, b in backends.items():
        th = b["thumbnail"]
        cpu = th["runs"][len(th["runs"]) // 2]["cpu"]
        lines.append(
            f"   {name:<4} 201 -> ready (polled every {cfg['ready_poll_ms']:g} ms): {_range(th['ready_ms'], ' ms')}; "
            f"upload {_range(th['upload_ms'], ' ms')}; server CPU meanwhile {cpu['server_cpu_s']:g} s "
            f"({cpu['server_event_loop_thread_cpu_s']:g} loop + {cpu['server_other_threads_cpu_s']:g} threads), "
            f"host {cpu['host_cpu_busy_pct']:g}% busy"
        )
    p = report.get("process_image")
    if p:
        med = p["median_ms"]
        steps = ", ".join(f"{k} {v:g}" for k, v in med.items() if k != "total")
        lines.append(
            f"   process_image in this process, servers stopped: {med['total']:g} ms (median of {p['runs']}: "
            f"{p['all_total_ms']}); steps in ms: {steps}"
        )
        for name, b in backends.items():
            rest = b["thumbnail"]["ready_ms"]["median"] - med["total"]
            lines.append(
                f"   {name}: ready - process_image = {rest:.0f} ms: job pick-up, reading the blob, storing three blobs "
                "(two WebP thumbnails, the re-encoded original), the database, the 10 ms polling, and any slowdown "
                "from sharing the CPUs with the server's event loop"
            )
    return lines


def format_summary(report: dict[str, Any]) -> str:
    """The human-readable summary of a report."""
    m, sw = report["machine"], report["software"]
    backends = report.get("backends", {})
    lines = [
        f"SUP media benchmark - database: {report['database']}",
        f"machine: {m['cpu_count']} CPUs ({m['cpu_model']}), {m['memory_gib']} GiB, Python {m['python']}",
        f"sup {sw['sup']} @ {(sw['git_commit'] or '?')[:12]}{' (dirty)' if sw.get('git_dirty') else ''}, "
        f"aiohttp {sw['aiohttp']}, Pillow {sw.get('pillow')} (libjpeg-turbo {sw.get('libjpeg_turbo')}), "
        f"moto {sw.get('moto')}",
    ]
    fs = backends.get("disk", {}).get("filesystem")
    if fs:
        lines.append(f"disk blobs: {fs['type']} on {fs['device']} (fsync before every rename)")
    lines += ["", *_upload_lines(report), "", *_thumbnail_lines(report)]
    lines += summary_end(report)
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    p.add_argument("--size-mb", type=int, default=200, help="upload size in MB of 10^6 bytes (default 200)")
    p.add_argument("--runs", type=int, default=3, help="runs of each upload and of the thumbnail (default 3)")
    p.add_argument("--skip-s3", action="store_true", help="local disk only: no moto S3 server")
    add_database_url(
        p,
        "postgresql://host:port/db to run the servers on Postgres: connected to only to CREATE and DROP a "
        "fresh database per server (default: SQLite in the data dir)",
    )
    p.add_argument("--json-out", type=Path, help="JSON report (default bench/reports/media-<timestamp>.json)")
    p.add_argument("--max-seconds", type=float, default=1800.0, help="the whole run is cut off after this (1800)")
    p.add_argument("--python", default=sys.executable, help="interpreter that runs the servers (default: this)")
    args = p.parse_args(argv)
    check_database_url(p, args)
    if args.size_mb < 1 or args.runs < 1:
        p.error("--size-mb and --runs must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    json_out: Path = args.json_out or BENCH_DIR / "reports" / f"media-{stamp}.json"
    return run_and_report("media", run_benchmark(args), format_summary, json_out, args.max_seconds)


if __name__ == "__main__":
    sys.exit(main())
