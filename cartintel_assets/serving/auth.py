"""Bearer tokens of the scoring service, one scope per kind of caller.

- `score`: `POST /score` (the storefront's checkout backend);
- `operations`: `GET /models`, `POST /reload` (the ML engineers and the deployment);
- `reporting`: `GET /dashboard` (the decision-makers: per-cart revenue at risk, no operations).

Each scope's tokens come from a secret (`CARTINTEL_SERVE_<SCOPE>_TOKENS`, comma-separated, or a
file named by `..._FILE`). In local development no token means an open service (bound to
127.0.0.1); anywhere else every scope needs its tokens, or the service does not start. Tokens
are compared in constant time (digests, every token compared) and never logged. `/health` stays
open for probes.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import HTTPException, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from cartintel_assets import settings

SCOPES = ("score", "operations", "reporting")


def token_variable(scope: str) -> str:
    return f"CARTINTEL_SERVE_{scope.upper()}_TOKENS"


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class Tokens:
    """Digests of each scope's tokens (the tokens themselves are not kept)."""

    digests: dict[str, tuple[bytes, ...]] = field(default_factory=dict)

    @classmethod
    def of(cls, by_scope: dict[str, list[str]]) -> Tokens:
        unknown = set(by_scope) - set(SCOPES)
        if unknown:
            raise ValueError(f"unknown scopes {sorted(unknown)}: the scopes are {SCOPES}")
        return cls({s: tuple(_digest(t) for t in ts if t) for s, ts in by_scope.items()})

    @classmethod
    def from_env(cls) -> Tokens:
        """Each scope's tokens from its secret: required outside local development."""
        found = {}
        for scope in SCOPES:
            raw = settings.secret(token_variable(scope)) or ""
            found[scope] = [t.strip() for t in raw.split(",") if t.strip()]
        return cls.of(found)

    @property
    def required(self) -> bool:
        return any(self.digests.values())

    def scopes_of(self, token: str) -> set[str]:
        """The scopes `token` has: every configured token is compared, in constant time."""
        given = _digest(token)
        scopes = set()
        for scope, digests in self.digests.items():
            matched = False
            for d in digests:
                matched |= hmac.compare_digest(given, d)
            if matched:
                scopes.add(scope)
        return scopes


BEARER = HTTPBearer(
    auto_error=False,
    description="A token of the endpoint's scope (score, operations or reporting).",
)


def require(scope: str, tokens: Callable[[], Tokens]) -> Callable[..., None]:
    """A FastAPI dependency: 401 without a known bearer token, 403 with one of another scope."""
    if scope not in SCOPES:
        raise ValueError(f"unknown scope {scope!r}")

    def check(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
    ) -> None:
        configured = tokens()
        if not configured.required:
            return
        if credentials is None:
            raise HTTPException(
                401, "a bearer token is required", headers={"WWW-Authenticate": "Bearer"}
            )
        scopes = configured.scopes_of(credentials.credentials)
        if not scopes:
            raise HTTPException(
                401,
                "unknown bearer token",
                headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
            )
        if scope not in scopes:
            raise HTTPException(403, f"this token does not have the {scope!r} scope")

    return check
