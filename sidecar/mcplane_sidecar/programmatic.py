"""Using mcplane from Python: `create_proxy_server()` returns a proxy that is both an in-process MCP
transport (hand it to `mcp.Client`) and a server you can run over stdio or HTTP."""

from __future__ import annotations

import math
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Literal

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from fastapi import FastAPI
from mcp.shared.message import SessionMessage
from mcp_types import jsonrpc_message_adapter

from mcplane_sidecar.app import Sidecar, create_app
from mcplane_sidecar.backends.base import BackendLink, LinkOptions
from mcplane_sidecar.config import SidecarConfig, build_config
from mcplane_sidecar.server import run_http, run_stdio

InProcessStreams = tuple[
    MemoryObjectReceiveStream[SessionMessage | Exception], MemoryObjectSendStream[SessionMessage]
]


class ProxyServer:
    """One proxy configuration. `async with proxy as (read, write)` opens an in-process session."""

    def __init__(self, config: SidecarConfig) -> None:
        self.config = config
        self._stacks: list[AsyncExitStack] = []

    @property
    def name(self) -> str:
        return self.config.name

    def asgi_app(self) -> FastAPI:
        return create_app(self.config)

    def run(self, transport: Literal["stdio", "http", "sse"] | None = None, **server: Any) -> None:
        settings = self.config.server.model_copy(
            update={**server, **({"transport": transport} if transport else {})}
        )
        config = self.config.model_copy(update={"server": settings})
        if config.server.transport == "stdio":
            run_stdio(config)
        else:
            run_http(config)

    async def __aenter__(self) -> InProcessStreams:
        stack = AsyncExitStack()
        try:
            sidecar = Sidecar(self.config)
            await stack.enter_async_context(sidecar.running())
            link = await stack.enter_async_context(
                sidecar.backend.open_link(LinkOptions(session_label="in-process"))
            )
            to_client, client_reads = anyio.create_memory_object_stream[SessionMessage | Exception](math.inf)
            client_writes, from_client = anyio.create_memory_object_stream[SessionMessage](math.inf)
            tg = await stack.enter_async_context(anyio.create_task_group())
            stack.callback(tg.cancel_scope.cancel)
            tg.start_soon(_pump_to_backend, from_client, link)
            tg.start_soon(_pump_to_client, link, to_client)
        except BaseException:
            await stack.aclose()
            raise
        self._stacks.append(stack)
        return client_reads, client_writes

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._stacks.pop().aclose()


async def _pump_to_backend(source: MemoryObjectReceiveStream[SessionMessage], link: BackendLink) -> None:
    async for item in source:
        await link.send(item.message.model_dump(mode="json", by_alias=True, exclude_unset=True))


async def _pump_to_client(
    link: BackendLink, sink: MemoryObjectSendStream[SessionMessage | Exception]
) -> None:
    async with sink:
        async for incoming in link.incoming:
            await sink.send(
                SessionMessage(jsonrpc_message_adapter.validate_python(incoming.message, by_name=False))
            )


def create_proxy_server(
    mcp_url: str | None = None,
    proxy_name: str = "MCPProxy",
    *,
    transport_type: Literal["http", "sse"] | None = None,
    command: list[str] | None = None,
    **settings: Any,
) -> ProxyServer:
    """A proxy in front of `mcp_url` (transport auto-detected unless forced) or a stdio `command`.

    Extra keyword arguments are sections of the config file (`sessions={...}`, `security={...}`).
    """
    if command:
        backend: dict[str, Any] = {"kind": "stdio", "stdio": {"command": command[0], "args": command[1:]}}
    else:
        backend = {"kind": transport_type or "auto", "url": mcp_url}
    return ProxyServer(build_config({"name": proxy_name, "backend": backend, **settings}))
