"""Using mcplane from Python: `create_proxy_server()` returns a proxy that is both an in-process MCP
transport (hand it to `mcp.Client`) and a server you can run over stdio or HTTP."""

from __future__ import annotations

import math
from collections.abc import Mapping
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
from mcplane_sidecar.config import ConfigError, SidecarConfig, build_config
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


AsyncTransport = Literal["sqs", "sns-sqs", "sns_sqs", "webhook"]


def create_proxy_server(
    mcp_url: str | None = None,
    proxy_name: str = "MCPProxy",
    *,
    transport_type: Literal["http", "sse"] | None = None,
    command: list[str] | None = None,
    backend_transport: AsyncTransport | None = None,
    backend_config: Mapping[str, Any] | object | None = None,
    host: str | None = None,
    port: int | None = None,
    server_path: str | None = None,
    session_timeout: float | None = None,
    max_sessions: int | None = None,
    stateless: bool | None = None,
    cors_origins: list[str] | None = None,
    auth_token: str | None = None,
    **settings: Any,
) -> ProxyServer:
    """A proxy in front of `mcp_url` (transport auto-detected unless forced), a stdio `command`, or an
    asynchronous backend (`backend_transport` with its `backend_config`).

    The keywords after `command` are those of the original async proxy design. `backend_config` is either
    a mapping in this project's config shape (`{"sqs": {...}, "aws": {...}}`) or asyncmcp's own client
    config object (SqsClientConfig, SnsSqsClientConfig, WebhookClientConfig), read by attribute name, so
    a deployment of asyncmcp's proxy can switch without rewriting its configuration. AWS credentials come
    from the standard provider chain, not from passed-in clients. Extra keyword arguments are further
    sections of the config file (`security={...}`, `sessions={...}`, `backend={"aws": {...}}`).
    """
    backend: dict[str, Any]
    if backend_transport is not None:
        backend = async_backend_settings(backend_transport, backend_config)
    elif command:
        backend = {"kind": "stdio", "stdio": {"command": command[0], "args": command[1:]}}
    else:
        backend = {"kind": transport_type or "auto", "url": mcp_url}
    layer: dict[str, Any] = {"name": proxy_name, "backend": backend}
    server = {k: v for k, v in {"host": host, "port": port, "path": server_path}.items() if v is not None}
    sessions = {
        k: v
        for k, v in {
            "idle_timeout": session_timeout,
            "max_sessions": max_sessions,
            "stateless": stateless,
        }.items()
        if v is not None
    }
    security: dict[str, Any] = {}
    if cors_origins is not None:
        # Browsers that may call in are also origins allowed past the DNS-rebinding check.
        security |= {"cors_origins": cors_origins, "allowed_origins": cors_origins}
    if auth_token is not None:
        security["tokens"] = [{"value": auth_token}]
    for section, values in (("server", server), ("sessions", sessions), ("security", security)):
        if values:
            layer[section] = values
    return ProxyServer(build_config(layer, settings))


def async_backend_settings(
    transport: AsyncTransport, config: Mapping[str, Any] | object | None
) -> dict[str, Any]:
    """The `backend` section for an asynchronous transport, from our shape or asyncmcp's config object."""
    kind = "sns-sqs" if transport == "sns_sqs" else transport
    if config is None or isinstance(config, Mapping):
        return {"kind": kind, **dict(config or {})}

    def read(name: str) -> Any:
        return getattr(config, name, None)  # asyncmcp's attribute names

    backend: dict[str, Any] = {"kind": kind}
    if read("client_id"):
        backend["client_id"] = read("client_id")
    if read("message_attributes"):
        backend["message_attributes"] = {k: str(v) for k, v in read("message_attributes").items()}
    tuning = {
        "wait_time_seconds": read("wait_time_seconds"),
        "visibility_timeout": read("visibility_timeout_seconds"),
        "max_messages": read("max_messages"),
    }
    tuning = {k: v for k, v in tuning.items() if v is not None}
    if kind == "sqs":
        backend["sqs"] = {
            "request_queue_url": read("read_queue_url"),
            "reply_queue_url": read("response_queue_url"),
        }
        backend["sqs"] |= tuning
    elif kind == "sns-sqs":
        backend["sqs"] = {"reply_queue_url": read("sqs_queue_url"), **tuning}
        reply_topic = read("client_topic_arn")
        if reply_topic is None:
            raise ConfigError(
                "an SNS+SQS backend needs the reply topic: pass backend_config as a mapping "
                "with sns.reply_topic_arn (asyncmcp passes it beside its config, as client_topic_arn)"
            )
        backend["sns"] = {"request_topic_arn": read("sns_topic_arn"), "reply_topic_arn": reply_topic}
    else:
        webhook = {"server_url": read("server_url"), "public_base_url": read("public_base_url")}
        backend["webhook"] = {k: v for k, v in webhook.items() if v is not None}
    return backend
