"""Who may talk to the sidecar: Origin validation (DNS rebinding) and static bearer tokens."""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from typing import Final
from urllib.parse import urlsplit

from starlette.requests import Request

from mcplane_sidecar.config import SecurityConfig

LOOPBACK_HOSTS: Final = frozenset({"localhost", "127.0.0.1", "[::1]", "::1"})


class Guard:
    """Checks applied to every MCP request before it reaches a session."""

    def __init__(self, config: SecurityConfig, tokens: Iterable[str]) -> None:
        self._allowed_origins = {origin.rstrip("/") for origin in config.allowed_origins}
        self._any_origin = "*" in self._allowed_origins
        self._tokens = [token.encode() for token in tokens if token]

    @property
    def auth_enabled(self) -> bool:
        return bool(self._tokens)

    def origin_allowed(self, request: Request) -> bool:
        origin = request.headers.get("origin")
        if origin is None or self._any_origin:
            return True  # non-browser clients send no Origin; DNS rebinding needs a browser
        if origin.rstrip("/") in self._allowed_origins:
            return True
        return (
            urlsplit(origin).hostname in LOOPBACK_HOSTS or f"[{urlsplit(origin).hostname}]" in LOOPBACK_HOSTS
        )

    def bearer_token(self, request: Request) -> str | None:
        header = request.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        return credentials.strip() if scheme.lower() == "bearer" and credentials.strip() else None

    def authenticate(self, request: Request) -> tuple[bool, str | None]:
        """(accepted, token). With no tokens configured every request is accepted anonymously."""
        if not self._tokens:
            return True, None
        token = self.bearer_token(request)
        if token is None:
            return False, None
        candidate = token.encode()
        # Compare against every token so timing says nothing about which one (nearly) matched.
        matched = False
        for known in self._tokens:
            matched |= hmac.compare_digest(candidate, known)
        return matched, token if matched else None


def read_tokens(values: Iterable[str]) -> list[str]:
    """Each configured value may hold several tokens, one per line (a mounted Secret file)."""
    tokens: list[str] = []
    for value in values:
        tokens.extend(
            line.strip() for line in value.splitlines() if line.strip() and not line.startswith("#")
        )
    return tokens
