"""The public prekey material a device publishes and a peer fetches from the server's key directory."""

from __future__ import annotations

from sup.e2ekeys import Bundle, OneTimePrekey, SignedPrekey

__all__ = ["Bundle", "OneTimePrekey", "SignedPrekey"]
