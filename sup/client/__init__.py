"""SUP client side: the SDK and its end-to-end encryption core.

`from sup.client import Client` is the usual entry point; `SupHttp` (REST), `SupSocket`
(the resumable event stream) and `ClientStore` (local state) are the layers under it.
Names are imported on first use, so importing `sup.client` (or only its crypto core) stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Attachment": "sup.client.values",
    "BadDeviceKeys": "sup.client.values",
    "Client": "sup.client.client",
    "ClientError": "sup.client.values",
    "MemberWithoutDevice": "sup.client.values",
    "MessageDeleted": "sup.client.values",
    "NewDevice": "sup.client.values",
    "ReceivedMessage": "sup.client.values",
    "SafetyNumberChanged": "sup.client.values",
    "Undecryptable": "sup.client.values",
    "ApiError": "sup.client.http",
    "SessionEnded": "sup.client.http",
    "SupHttp": "sup.client.http",
    "Queued": "sup.client.values",
    "QueuedMessageDropped": "sup.client.values",
    "QueuedMessageSent": "sup.client.values",
    "WaitingForDevice": "sup.client.values",
    "Tokens": "sup.client.http",
    "DeviceRevoked": "sup.client.socket",
    "SocketClosed": "sup.client.socket",
    "SupSocket": "sup.client.socket",
    "ClientStore": "sup.client.store",
    "StoreInUse": "sup.client.store",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sup.client' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
