"""The built-in TURN credentials: the `turn_credentials` hook in coturn's shared-secret form.

coturn with `use-auth-secret` and `static-auth-secret=<secret>` accepts, until the time it names,
the username "<expiry unix time>:<user id>" with the password base64(HMAC-SHA1(secret, username))
(the "TURN REST API", draft-uberti-behave-turn-rest). SUP and coturn share the secret and nothing
else: coturn never asks SUP anything.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

from sup.clock import Clock
from sup.plugins.hookspecs import TurnCredentials, hookimpl


def coturn_password(secret: str, username: str) -> str:
    return base64.b64encode(hmac.new(secret.encode(), username.encode(), hashlib.sha1).digest()).decode()


class CoturnSecret:
    def __init__(self, secret: str, uris: list[str], ttl_seconds: int, clock: Clock) -> None:
        self._secret = secret
        self._uris = tuple(uris)
        self._ttl = ttl_seconds
        self._clock = clock

    @hookimpl(trylast=True)  # a plugin for another TURN service goes first
    def turn_credentials(self, user_id: str) -> TurnCredentials:
        expires_at = int(self._clock.now()) + self._ttl
        username = f"{expires_at}:{user_id}"
        return TurnCredentials(
            username=username,
            credential=coturn_password(self._secret, username),
            ttl_seconds=self._ttl,
            expires_at=expires_at,
            uris=self._uris,
        )
