"""Who may do what: the tokens of ``[api] tokens``, each with the scopes ``read`` or ``read``
and ``write``.

Two ways to present a token, for two kinds of client:

- ``Authorization: Bearer <token>`` on relaywatch's own write endpoints (manual blocks, the
  allowlist): no token, another scheme or an unknown token is 401 with
  ``WWW-Authenticate: Bearer``; a token without the ``write`` scope is 403.
- ``X-Api-Key: <token>`` on the CrowdSec-compatible bouncer endpoints, the header CrowdSec's
  bouncers send: a token with the ``read`` scope; anything else is 403, as CrowdSec answers.

Reads of relaywatch's own endpoints need no token.  A presented token is compared with every
configured one, each comparison in constant time (``hmac.compare_digest`` of SHA-256 digests,
so lengths do not show either), so the time of the answer does not tell which token nearly
matched.  Tokens are never logged; their names are.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Annotated

from fastapi import Depends
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from api.deps import AppSettings
from detector.config import ApiToken


class AccessDenied(Exception):
    """A request without the token it needs: 401 (none, or none of ours) or 403 (a token
    that may not do this).  The message says what is missing, never what was sent."""

    def __init__(self, status_code: int, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code


def find_token(tokens: Sequence[ApiToken], presented: str) -> ApiToken | None:
    """The configured token equal to ``presented``, or ``None``; every token is compared,
    also after a match."""
    digest = hashlib.sha256(presented.encode()).digest()
    found = None
    for candidate in tokens:
        if hmac.compare_digest(hashlib.sha256(candidate.token.encode()).digest(), digest):
            found = candidate
    return found


_bearer = HTTPBearer(
    auto_error=False,
    description="a token of [api] tokens with the write scope, for relaywatch's write endpoints",
)
_api_key = APIKeyHeader(
    name="X-Api-Key",
    auto_error=False,
    description="a token of [api] tokens with the read scope, for CrowdSec bouncers",
)


def _writer(
    settings: AppSettings,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> ApiToken:
    if credentials is None:
        raise AccessDenied(401, "this needs a write token: Authorization: Bearer <token>")
    token = find_token(settings.api.tokens, credentials.credentials)
    if token is None:
        raise AccessDenied(401, "the bearer token is not one of [api] tokens")
    if "write" not in token.scopes:
        raise AccessDenied(403, f"the token {token.name!r} has no write scope")
    return token


def _bouncer(settings: AppSettings, key: Annotated[str | None, Depends(_api_key)]) -> ApiToken:
    token = None if key is None else find_token(settings.api.tokens, key)
    if token is None or "read" not in token.scopes:
        raise AccessDenied(403, "this needs X-Api-Key: a token of [api] tokens that may read")
    return token


WriteToken = Annotated[ApiToken, Depends(_writer)]
"""The token of a request allowed to change decisions and the allowlist."""
BouncerKey = Annotated[ApiToken, Depends(_bouncer)]
"""The token of a CrowdSec bouncer allowed to read decisions."""
