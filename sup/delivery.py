"""One event appended to one device's stream: what the database stores, the bus hints and a socket sends.

A leaf module (it imports nothing from SUP) because every layer passes deliveries along.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Delivery:
    device_id: str
    seq: int
    payload: bytes  # the frame exactly as the WebSocket sends it
    # When it was made (time.monotonic): in its transaction, or on arrival from another process.
    # Only for the delivery-lag metric; not part of what a delivery is.
    at: float = field(default_factory=time.monotonic, compare=False, repr=False)
