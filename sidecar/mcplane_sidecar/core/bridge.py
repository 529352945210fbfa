"""Era bridging: 2026-07-28 stateless requests served on handshake-era backend sessions.

A backend that only knows `initialize` (legacy SSE, stdio servers of older SDKs, asyncmcp's queues)
still serves a 2026-07-28 client: the proxy opens a backend session per principal, answers
`server/discover` from that session's initialize result, and relays every other request with its
id (and progress token) rewritten so concurrent clients never collide. Results gain the fields the
new era requires (`resultType`, list `ttlMs`/`cacheScope`, the `serverInfo` stamp). The bridged
session declares no client capabilities: a handshake-era server cannot ask a stateless client for
sampling or elicitation mid-request.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Final

import anyio
from mcp_types import (
    CLIENT_CAPABILITIES_META_KEY,
    CLIENT_INFO_META_KEY,
    LOG_LEVEL_META_KEY,
    PROTOCOL_VERSION_META_KEY,
    SERVER_INFO_META_KEY,
)
from mcp_types.jsonrpc import METHOD_NOT_FOUND
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from mcplane_sidecar.backends.base import LinkOptions
from mcplane_sidecar.core.registry import SessionRegistry
from mcplane_sidecar.core.session import ProxySession
from mcplane_sidecar.errors import BackendUnavailable
from mcplane_sidecar.jsonrpc import (
    Message,
    RequestId,
    error_response,
    is_response,
    method_of,
    params_of,
)

logger = logging.getLogger(__name__)

BRIDGE_PROTOCOL_VERSION: Final = "2025-11-25"
# Envelope keys of the stateless era; a handshake-era server has no use for them.
MODERN_META_KEYS: Final = frozenset(
    {PROTOCOL_VERSION_META_KEY, CLIENT_CAPABILITIES_META_KEY, CLIENT_INFO_META_KEY, LOG_LEVEL_META_KEY}
)
LIST_METHODS: Final = frozenset({"tools/list", "prompts/list", "resources/list", "resources/templates/list"})
BRIDGE_CLIENT_INFO: Final = {"name": "mcplane-bridge", "version": "1"}


@dataclass
class _Bridged:
    session: ProxySession
    initialize_result: dict[str, Any]


class HandshakeBridge:
    def __init__(self, registry: SessionRegistry) -> None:
        self._registry = registry
        self._sessions: dict[str | None, _Bridged] = {}
        self._lock = anyio.Lock()
        self._ids = itertools.count(1)

    async def _bridged(self, principal: str | None, message: Message, options: LinkOptions) -> _Bridged:
        async with self._lock:
            current = self._sessions.get(principal)
            if current is not None and not current.session.closed:
                return current
            session = await self._registry.open_session("bridge", principal, options)
            client_info = _meta(message).get(CLIENT_INFO_META_KEY) or BRIDGE_CLIENT_INFO
            init_id = f"mcplane-bridge-init-{next(self._ids)}"
            initialize: Message = {
                "jsonrpc": "2.0",
                "id": init_id,
                "method": "initialize",
                "params": {
                    "protocolVersion": BRIDGE_PROTOCOL_VERSION,
                    "capabilities": {},
                    "clientInfo": client_info,
                },
            }
            reply = await _final(await session.request(initialize), init_id)
            if reply is None or not isinstance(reply.get("result"), dict):
                self._registry.close(session)
                raise BackendUnavailable(
                    "backend refused the bridged initialize", data=reply and reply.get("error")
                )
            await session.notify({"jsonrpc": "2.0", "method": "notifications/initialized"})
            bridged = _Bridged(session, reply["result"])
            self._sessions[principal] = bridged
            logger.info("opened a bridged backend session for 2026-07-28 clients")
            return bridged

    async def initialize_result(
        self, message: Message, principal: str | None, options: LinkOptions
    ) -> dict[str, Any]:
        """What the bridged backend session answered to its initialize (for sessionless 2025 clients)."""
        return (await self._bridged(principal, message, options)).initialize_result

    async def open(self, message: Message, principal: str | None, options: LinkOptions) -> BridgedRequest:
        """Start serving one stateless request; iterate the result for the messages to send back."""
        bridged = await self._bridged(principal, message, options)
        rid = message.get("id")
        if method_of(message) == "server/discover":
            return BridgedRequest.answered(_discover(rid, bridged.initialize_result))
        internal_id = f"mcplane-b{next(self._ids)}"
        params = dict(params_of(message))
        meta = {k: v for k, v in _meta(message).items() if k not in MODERN_META_KEYS}
        token = meta.get("progressToken")
        internal_token = None
        if token is not None:
            internal_token = f"mcplane-bp{next(self._ids)}"
            meta["progressToken"] = internal_token
        if meta:
            params["_meta"] = meta
        else:
            params.pop("_meta", None)
        relayed = {**message, "id": internal_id, "params": params}
        stream = await bridged.session.request(relayed)
        return BridgedRequest(
            bridged=bridged,
            method=method_of(message) or "",
            client_id=rid,
            internal_id=internal_id,
            client_token=token,
            internal_token=internal_token,
            events=stream.follow(),
        )


@dataclass
class BridgedRequest:
    bridged: _Bridged | None
    method: str
    client_id: Any
    internal_id: str | None
    client_token: Any
    internal_token: str | None
    events: AsyncIterator[tuple[str, Message]] | None
    answer: Message | None = None

    @classmethod
    def answered(cls, answer: Message) -> BridgedRequest:
        return cls(None, "server/discover", answer.get("id"), None, None, None, None, answer)

    async def messages(self) -> AsyncIterator[Message]:
        """The client's view: progress and logging for this request, then its final response."""
        if self.answer is not None:
            yield self.answer
            return
        assert self.events is not None
        assert self.bridged is not None
        session = self.bridged.session
        async for _, event in self.events:
            if is_response(event) and event.get("id") == self.internal_id:
                yield self._final(event)
                return
            if "id" in event and "method" in event:
                # A server-to-client request cannot reach a stateless client; refuse it so the tool ends.
                await session.notify(
                    error_response(event["id"], METHOD_NOT_FOUND, "client cannot serve this")
                )
                continue
            if method_of(event) == "notifications/progress" and self.internal_token is not None:
                yield {**event, "params": {**params_of(event), "progressToken": self.client_token}}
            else:
                yield event

    async def cancel(self) -> None:
        """The client closed its stream: in this era that cancels the request."""
        if self.bridged is None or self.internal_id is None or self.bridged.session.closed:
            return
        cancel = {
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": {"requestId": self.internal_id, "reason": "client closed the stream"},
        }
        try:
            await self.bridged.session.notify(cancel)
        except BackendUnavailable:
            logger.debug("bridged session gone before the cancellation")

    def _final(self, response: Message) -> Message:
        final = {**response, "id": self.client_id}
        result = response.get("result")
        if isinstance(result, dict):
            final["result"] = _modernize(
                self.method, result, self.bridged.initialize_result if self.bridged else {}
            )
        return final


def _meta(message: Message) -> dict[str, Any]:
    meta = params_of(message).get("_meta")
    return meta if isinstance(meta, dict) else {}


def _stamp(result: dict[str, Any], initialize_result: dict[str, Any]) -> dict[str, Any]:
    server_info = initialize_result.get("serverInfo")
    existing = result.get("_meta")
    meta: dict[str, Any] = existing if isinstance(existing, dict) else {}
    if server_info is not None and SERVER_INFO_META_KEY not in meta:
        result["_meta"] = {**meta, SERVER_INFO_META_KEY: server_info}
    return result


def _modernize(method: str, result: dict[str, Any], initialize_result: dict[str, Any]) -> dict[str, Any]:
    shaped = {"resultType": "complete", **result}
    if method in LIST_METHODS:
        # Required on list results of the new era; 0 = "re-fetch whenever needed", the safe reading.
        shaped = {"ttlMs": 0, "cacheScope": "private", **shaped}
    return _stamp(shaped, initialize_result)


def _discover(rid: RequestId | None, initialize_result: dict[str, Any]) -> Message:
    result: dict[str, Any] = {
        "resultType": "complete",
        "supportedVersions": list(MODERN_PROTOCOL_VERSIONS),
        "capabilities": initialize_result.get("capabilities", {}),
        "ttlMs": 0,
        "cacheScope": "private",
    }
    if initialize_result.get("instructions"):
        result["instructions"] = initialize_result["instructions"]
    return {"jsonrpc": "2.0", "id": rid, "result": _stamp(result, initialize_result)}


async def _final(stream: Any, rid: RequestId) -> Message | None:
    async for _, event in stream.follow():
        if is_response(event) and event.get("id") == rid:
            return dict(event)
    return None
