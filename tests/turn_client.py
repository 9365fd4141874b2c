"""A TURN client just big enough to ask for an allocation (RFC 8656) with long-term credentials
(RFC 8489 section 9.2), over UDP, and to run Debian's coturn for it on a loopback port."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import os
import secrets
import shutil
import socket
import struct
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

MAGIC = 0x2112A442
ALLOCATE, ALLOCATE_OK, ALLOCATE_ERROR = 0x0003, 0x0103, 0x0113
BINDING = 0x0001
USERNAME, MESSAGE_INTEGRITY, ERROR_CODE, REALM, NONCE = 0x0006, 0x0008, 0x0009, 0x0014, 0x0015
REQUESTED_TRANSPORT, XOR_RELAYED_ADDRESS = 0x0019, 0x0016
UDP = 17


@dataclass
class Answer:
    kind: int
    attributes: dict[int, bytes] = field(default_factory=dict)

    @property
    def error(self) -> int | None:
        value = self.attributes.get(ERROR_CODE)
        return None if value is None else value[2] * 100 + value[3]


def _attribute(kind: int, value: bytes) -> bytes:
    return struct.pack("!HH", kind, len(value)) + value + b"\0" * (-len(value) % 4)


def encode(kind: int, transaction: bytes, attributes: list[tuple[int, bytes]], key: bytes | None = None) -> bytes:
    body = b"".join(_attribute(k, v) for k, v in attributes)
    if key is None:
        return struct.pack("!HHI", kind, len(body), MAGIC) + transaction + body
    # MESSAGE-INTEGRITY covers the message with its length already counting the integrity attribute.
    header = struct.pack("!HHI", kind, len(body) + 24, MAGIC) + transaction
    mac = hmac.new(key, header + body, hashlib.sha1).digest()
    return header + body + _attribute(MESSAGE_INTEGRITY, mac)


def decode(data: bytes) -> tuple[bytes, Answer]:
    kind, length, magic = struct.unpack("!HHI", data[:8])
    assert magic == MAGIC, "not a STUN message"
    answer, at = Answer(kind), 20
    while at < 20 + length:
        attr, size = struct.unpack("!HH", data[at : at + 4])
        answer.attributes.setdefault(attr, data[at + 4 : at + 4 + size])
        at += 4 + size + (-size % 4)
    return data[8:20], answer


class _Client(asyncio.DatagramProtocol):
    def __init__(self) -> None:
        self.waiting: dict[bytes, asyncio.Future[Answer]] = {}

    def datagram_received(self, data: bytes, addr) -> None:
        transaction, answer = decode(data)
        future = self.waiting.pop(transaction, None)
        if future is not None and not future.done():
            future.set_result(answer)


class Connection:
    """One UDP socket to the server: coturn ties a nonce to the client's address and port."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port

    async def __aenter__(self) -> Connection:
        loop = asyncio.get_running_loop()
        self.transport, self.client = await loop.create_datagram_endpoint(_Client, remote_addr=(self.host, self.port))
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.transport.close()

    async def ask(self, kind: int, attributes, key: bytes | None = None) -> Answer:
        transaction = secrets.token_bytes(12)
        future = asyncio.get_running_loop().create_future()
        self.client.waiting[transaction] = future
        message = encode(kind, transaction, attributes, key)
        for _ in range(10):  # UDP: send again until an answer comes
            self.transport.sendto(message)
            done, _ = await asyncio.wait([future], timeout=0.3)
            if done:
                return future.result()
        raise TimeoutError(f"no answer from the TURN server at {self.host}:{self.port}")


async def allocate(host: str, port: int, username: str, password: str) -> Answer:
    """An Allocate for a UDP relay: the first answer brings the realm and a nonce, the second is the verdict."""
    transport = [(REQUESTED_TRANSPORT, bytes([UDP, 0, 0, 0]))]
    async with Connection(host, port) as connection:
        challenge = await connection.ask(ALLOCATE, transport)
        assert challenge.kind == ALLOCATE_ERROR and challenge.error == 401, challenge
        realm, nonce = challenge.attributes[REALM], challenge.attributes[NONCE]
        key = hashlib.md5(f"{username}:{realm.decode()}:{password}".encode()).digest()
        attributes = [(USERNAME, username.encode()), (REALM, realm), (NONCE, nonce), *transport]
        return await connection.ask(ALLOCATE, attributes, key)


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Coturn:
    """Debian's coturn on 127.0.0.1, with the TURN REST API's shared secret."""

    def __init__(self, secret: str, workdir: Path, extra: tuple[str, ...] = ()) -> None:
        self.extra = extra  # e.g. --allow-loopback-peers, for two peers that both relay on 127.0.0.1
        self.port = free_udp_port()
        self.secret = secret
        self.log = workdir / "turnserver.log"
        self.userdb = workdir / "turndb"
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary() -> str | None:
        return shutil.which("turnserver")

    async def start(self) -> Coturn:
        args = [
            self.binary() or "turnserver",
            "-n",  # no configuration file: everything is on this line
            "--listening-ip=127.0.0.1",
            f"--listening-port={self.port}",
            "--relay-ip=127.0.0.1",
            "--use-auth-secret",
            f"--static-auth-secret={self.secret}",
            "--realm=sup.test",
            "--no-tls",
            "--no-dtls",
            "--no-tcp",
            "--no-cli",
            "--no-software-attribute",
            f"--log-file={self.log}",
            f"--userdb={self.userdb}",  # not the system's /var/lib/turn/turndb
            "--simple-log",
            *self.extra,
        ]
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ})
        for _ in range(100):  # ready once it answers a Binding request
            if self.proc.poll() is not None:
                raise RuntimeError(f"turnserver exited: {self.log.read_text() if self.log.exists() else ''}")
            try:
                async with Connection("127.0.0.1", self.port) as connection:
                    if (await connection.ask(BINDING, [])).kind == 0x0101:
                        return self
            except TimeoutError:
                pass
        raise RuntimeError("turnserver did not answer")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
