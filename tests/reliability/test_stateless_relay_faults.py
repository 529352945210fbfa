"""Regression: a 2026-07-28 request relayed to an HTTP backend that is gone (refused, or the connection
dropped without an answer) gets a 503 JSON-RPC error carrying its id, and gives back its in-flight slot.

Found by the backend-restart scenario: the relay's transport error surfaced inside the disconnect
watcher's task group as an ExceptionGroup, escaped the `except httpx2.HTTPError`, and became the generic
500 "Internal error in the proxy" with a null id; the in-flight counter never came down again.
"""

from __future__ import annotations

from pathlib import Path

import anyio
import anyio.abc
import anyio.to_thread
import pytest

from bench.reliability._common import (
    McpClient,
    Tally,
    new_http_client,
    proxy_target_http,
    sidecar_config,
    sidecar_process,
)
from tests.support.processes import free_port
from tests.support.waiting import eventually

pytestmark = pytest.mark.e2e
DEADLINE = 60


async def test_a_stateless_request_to_a_dead_backend_is_a_clean_503(tmp_path: Path) -> None:
    port = free_port()
    config = sidecar_config({"kind": "http", "url": f"http://127.0.0.1:{port}/mcp"}, request_timeout=5)
    tally = Tally()
    with anyio.fail_after(DEADLINE):
        async with (
            proxy_target_http(tmp_path, port) as backend,
            sidecar_process(config, tmp_path) as sidecar,
            new_http_client() as http,
        ):
            client = McpClient(http, sidecar.mcp_url, "modern", "2026", tally)
            assert (await client.echo()).kind == "ok"  # the sidecar now knows the backend speaks 2026
            backend.process.kill()
            await anyio.to_thread.run_sync(backend.process.wait)
            for _ in range(3):
                down = await client.echo()
                assert down.kind == "error", down
                assert down.status == 503, down
                assert down.code == -32003, down

            async def nothing_in_flight() -> bool:
                return bool((await sidecar.status())["inflightRequests"] == 0)

            await eventually(nothing_in_flight, within=10, what="the in-flight count back to 0")
            assert sidecar.logged_errors() == []


async def test_a_stateless_request_the_backend_sits_on_is_a_504_with_its_id(tmp_path: Path) -> None:
    port = free_port()
    config = sidecar_config({"kind": "http", "url": f"http://127.0.0.1:{port}/mcp"}, request_timeout=1)
    tally = Tally()
    with anyio.fail_after(DEADLINE):
        async with (
            proxy_target_http(tmp_path, port),
            sidecar_process(config, tmp_path) as sidecar,
            new_http_client() as http,
        ):
            client = McpClient(http, sidecar.mcp_url, "modern", "2026", tally)
            assert (await client.echo()).kind == "ok"
            stalled = await client.call("slow", {"seconds": 5}, None)
            assert (stalled.kind, stalled.status, stalled.code) == ("error", 504, -32004), stalled
            assert (await client.echo()).kind == "ok"  # and the next request is served as usual


# A backend that speaks 2026-07-28 (it answers the discovery probe) but drops every tools/call connection
# after the response headers, before any answer: what a backend killed mid-request looks like on the wire.
DISCOVER_BODY = b'{"jsonrpc":"2.0","id":"probe","result":{"supportedVersions":["2026-07-28"]}}'


async def _serve_dropping_backend(content_type: bytes, task_status: anyio.abc.TaskStatus[int]) -> None:
    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            data = b""
            with anyio.move_on_after(5):
                while b"\r\n\r\n" not in data:
                    data += await stream.receive()
                head, _, body = data.partition(b"\r\n\r\n")
                length = next(
                    (
                        int(line.split(b":")[1])
                        for line in head.split(b"\r\n")
                        if line.lower().startswith(b"content-length:")
                    ),
                    0,
                )
                while len(body) < length:
                    body += await stream.receive()
            if b"server/discover" in body:
                await stream.send(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                    + f"content-length: {len(DISCOVER_BODY)}\r\n\r\n".encode()
                    + DISCOVER_BODY
                )
                return
            await stream.send(
                b"HTTP/1.1 200 OK\r\ncontent-type: "
                + content_type
                + b"\r\ntransfer-encoding: chunked\r\n\r\n"
            )

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    task_status.started(listener.extra(anyio.abc.SocketAttribute.local_port))
    await listener.serve(handle)


@pytest.mark.parametrize("content_type", [b"text/event-stream", b"application/json"])
async def test_a_relayed_answer_cut_off_mid_stream_ends_with_an_error_for_the_request(
    content_type: bytes, tmp_path: Path
) -> None:
    tally = Tally()
    with anyio.fail_after(DEADLINE):
        async with anyio.create_task_group() as tg:
            port = await tg.start(_serve_dropping_backend, content_type)
            config = sidecar_config({"kind": "http", "url": f"http://127.0.0.1:{port}/mcp"})
            async with sidecar_process(config, tmp_path) as sidecar, new_http_client() as http:
                client = McpClient(http, sidecar.mcp_url, "modern", "2026", tally)
                cut = await client.echo()
                assert cut.kind == "error", cut
                assert cut.code == -32003, cut
                assert (await sidecar.status())["inflightRequests"] == 0
            tg.cancel_scope.cancel()
