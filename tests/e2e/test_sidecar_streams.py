"""Stream affinity through the proxy: unsolicited backend messages reach the client's GET stream (and no
other), and server-to-client requests made during a call reach that call's stream and are answered."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest

from tests.e2e.proxy_harness import (
    call,
    final_response,
    messages_of,
    open_session,
    session_headers,
    sidecar_in_front_of,
)
from tests.support.processes import ProcessHandle

pytestmark = pytest.mark.e2e
DEADLINE = 30
SAMPLING_CAPABLE = {"sampling": {}}


async def test_unsolicited_messages_go_to_the_get_stream_only(fixture_server: ProcessHandle) -> None:
    async with (
        sidecar_in_front_of(f"{fixture_server.base_url}/mcp") as proxied,
        httpx.AsyncClient(timeout=DEADLINE) as http,
    ):
        session_id = await open_session(http, proxied.url)
        headers = session_headers(session_id)
        on_get_stream: list[dict[str, Any]] = []
        listening = anyio.Event()
        arrived = anyio.Event()

        async def listen() -> None:
            get_headers = {**headers, "accept": "text/event-stream"}
            async with http.stream("GET", proxied.url, headers=get_headers) as stream:
                assert stream.status_code == 200
                listening.set()
                async for line in stream.aiter_lines():
                    if line.startswith("data:") and line[5:].strip():
                        on_get_stream.append(json.loads(line[5:]))
                        arrived.set()

        with anyio.fail_after(DEADLINE):
            async with anyio.create_task_group() as tg:
                tg.start_soon(listen)
                await listening.wait()
                # The proxy opens the backend's GET stream behind ours, so an early trigger can find no
                # listener and be dropped by the backend; trigger until one arrives (bounded by DEADLINE).
                replies = []
                while not arrived.is_set():
                    trigger = call(len(replies) + 3, "test_trigger_resource_update", {})
                    replies.append(await http.post(proxied.url, json=trigger, headers=headers))
                    with anyio.move_on_after(0.5):
                        await arrived.wait()
                tg.cancel_scope.cancel()
        for number, reply in enumerate(replies, start=3):
            assert final_response(reply, number)["result"]["isError"] is False
            assert not [m for m in messages_of(reply) if m.get("method") == "notifications/resources/updated"]
        assert {m["method"] for m in on_get_stream} == {"notifications/resources/updated"}


async def test_sampling_request_during_a_call_is_relayed_and_answered(fixture_server: ProcessHandle) -> None:
    async with (
        sidecar_in_front_of(f"{fixture_server.base_url}/mcp") as proxied,
        httpx.AsyncClient(timeout=DEADLINE) as http,
    ):
        init = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": SAMPLING_CAPABLE,
                "clientInfo": {"name": "t", "version": "1"},
            },
        }
        response = await http.post(
            proxied.url, json=init, headers={"accept": "application/json, text/event-stream"}
        )
        session_id = response.headers["mcp-session-id"]
        headers = session_headers(session_id)
        await http.post(
            proxied.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=headers
        )
        result: dict[str, Any] = {}
        with anyio.fail_after(DEADLINE):
            async with http.stream(
                "POST", proxied.url, json=call(2, "test_sampling", {"prompt": "2+2?"}), headers=headers
            ) as stream:
                async for line in stream.aiter_lines():
                    if not (line.startswith("data:") and line[5:].strip()):
                        continue
                    message = json.loads(line[5:])
                    if message.get("method") == "sampling/createMessage":
                        answer = {
                            "jsonrpc": "2.0",
                            "id": message["id"],
                            "result": {
                                "role": "assistant",
                                "content": {"type": "text", "text": "four"},
                                "model": "test-model",
                                "stopReason": "endTurn",
                            },
                        }
                        accepted = await http.post(proxied.url, json=answer, headers=headers)
                        assert accepted.status_code == 202
                    elif message.get("id") == 2:
                        result = message
                        break
        assert result["result"]["content"][0]["text"] == "LLM response: four"
