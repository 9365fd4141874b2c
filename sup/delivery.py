"""One event appended to one device's stream: what the database stores, the bus hints and a socket sends.

A leaf module (it imports nothing from SUP) because every layer passes deliveries along.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Delivery:
    device_id: str
    seq: int
    payload: bytes  # the frame exactly as the WebSocket sends it
