"""The one face every backend kind shows the proxy core.

A `Backend` opens `BackendLink`s: one backend MCP session each. A link takes raw JSON-RPC messages with
`send()` and hands back what the backend says on `incoming`, tagged with the request whose stream carried
it when the wire tells us (Streamable HTTP does; stdio does not). A link promises one thing the core
relies on: every request it was given is settled on `incoming` by a response or an error with that
request's id, even when the backend is unreachable or dies.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Protocol

from anyio.streams.memory import MemoryObjectReceiveStream

from mcplane_sidecar.jsonrpc import Message, RequestId


@dataclass(slots=True)
class BackendMessage:
    message: Message
    # The client request this message travelled with (an SSE stream of a POST); None if unsolicited.
    related_id: RequestId | None = None


@dataclass(slots=True)
class LinkOptions:
    """Per-session facts a link needs from the client side."""

    # Headers from the client allowed upstream (Authorization only when the config says so).
    forwarded_headers: dict[str, str] = field(default_factory=dict)
    session_label: str = ""


class BackendLink(Protocol):
    @property
    def incoming(self) -> MemoryObjectReceiveStream[BackendMessage]: ...

    async def send(self, message: Message) -> None:
        """Queue a message for the backend. Never raises for backend trouble: that comes back as errors."""

    def listen(self) -> AbstractAsyncContextManager[None]:
        """While held, the backend may push unsolicited messages (the HTTP GET stream)."""


class Backend(Protocol):
    kind: str

    def open_link(self, options: LinkOptions) -> AbstractAsyncContextManager[BackendLink]:
        """One backend session, closed (DELETE, process stop) when the context exits."""

    def running(self) -> AbstractAsyncContextManager[None]:
        """Held for the sidecar's lifetime: shared clients, reply readers, created queues."""

    async def check_ready(self) -> str | None:
        """None when the backend is reachable, else a sentence saying why not."""

    async def aclose(self) -> None: ...
