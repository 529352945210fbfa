"""SseBackend (legacy HTTP+SSE) against the real SDK server of tests/fixtures/sse_server.py.

Each test that needs a server starts its own subprocess on a free 127.0.0.1 port, so killing and restarting it
is safe. Cases a stock server will not produce on demand (a POST answered 500, a malformed event, an
endpoint on another origin) run against an in-process fake behind `httpx2.MockTransport`.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
from anyio.abc import Process

from mcplane_sidecar.backends.base import BackendLink, BackendMessage, LinkOptions
from mcplane_sidecar.backends.factory import new_http_client
from mcplane_sidecar.backends.sse import SseBackend
from mcplane_sidecar.config import BackendConfig
from mcplane_sidecar.errors import BACKEND_UNAVAILABLE, BackendProtocolError, BackendUnavailable
from mcplane_sidecar.jsonrpc import Message
from mcplane_sidecar.metrics import Metrics
from tests.support.asgi import serve_asgi

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "sse_server.py"
# Generous for a loaded CI machine; a healthy run takes well under a second per wait.
DEADLINE = 10.0
UNICODE_TEXT = 'héllo wörld ✓ 🚀 日本語 \u0000 "quoted" \\ end'
INITIALIZE: Message = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {
        "protocolVersion": "2024-11-05",
        "capabilities": {},
        "clientInfo": {"name": "mcplane-test-client", "version": "1.0"},
    },
}
INITIALIZED: Message = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class SseServer:
    """The fixture server as a subprocess; killed by its own pid, restartable on the same port."""

    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}/sse"
        self._log = log
        self._proc: Process | None = None

    async def start(self) -> None:
        with self._log.open("ab") as log:
            self._proc = await anyio.open_process(
                [sys.executable, str(FIXTURE), str(self.port)], stdout=log, stderr=subprocess.STDOUT
            )
        with anyio.fail_after(DEADLINE):
            while True:
                if self._proc.returncode is not None:
                    raise RuntimeError(f"fixture server exited: {self._log.read_text()[-2000:]}")
                try:
                    stream = await anyio.connect_tcp("127.0.0.1", self.port)
                except OSError:
                    await anyio.sleep(0.02)  # poll interval, bounded by the deadline above
                else:
                    await stream.aclose()
                    return

    async def kill(self) -> None:
        """SIGKILL our own child by its pid: a crash, with no goodbye on the open streams."""
        if self._proc is not None:
            if self._proc.returncode is None:
                self._proc.kill()
            with anyio.fail_after(DEADLINE):
                await self._proc.aclose()
        self._proc = None


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[SseServer]:
    srv = SseServer(free_port(), tmp_path / "sse_server.log")
    await srv.start()
    try:
        yield srv
    finally:
        await srv.kill()


@pytest.fixture
async def http() -> AsyncIterator[httpx2.AsyncClient]:
    async with httpx2.AsyncClient() as client:
        yield client


def make_backend(
    url: str, http: httpx2.AsyncClient, metrics: Metrics, *, connect_timeout: float = 5.0
) -> SseBackend:
    return SseBackend(url, headers={}, http=http, metrics=metrics, connect_timeout=connect_timeout)


async def receive(link: BackendLink) -> Message:
    with anyio.fail_after(DEADLINE):
        incoming: BackendMessage = await link.incoming.receive()
    assert incoming.related_id is None
    return incoming.message


async def initialize(link: BackendLink) -> Message:
    await link.send(INITIALIZE)
    answer = await receive(link)
    await link.send(INITIALIZED)
    return answer


async def call(link: BackendLink, id_: int, tool: str, arguments: dict[str, Any] | None = None) -> Message:
    await link.send(
        {
            "jsonrpc": "2.0",
            "id": id_,
            "method": "tools/call",
            "params": {"name": tool, "arguments": arguments or {}},
        }
    )
    return await receive(link)


def text_of(response: Message) -> str:
    text: str = response["result"]["content"][0]["text"]
    return text


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


# --- against the real SDK server -------------------------------------------------------------------------


async def test_round_trip_with_raw_messages(server: SseServer, http: httpx2.AsyncClient) -> None:
    backend = make_backend(server.url, http, Metrics())
    assert await backend.check_ready() is None
    async with backend.open_link(LinkOptions(session_label="t1")) as link:
        answer = await initialize(link)
        assert answer["id"] == 0
        assert answer["result"]["serverInfo"]["name"] == "sse-echo"

        await link.send({"jsonrpc": "2.0", "id": "list-1", "method": "tools/list", "params": {}})
        tools = await receive(link)
        assert tools["id"] == "list-1"
        assert {"echo", "raw_params", "notify"} <= {tool["name"] for tool in tools["result"]["tools"]}

        echoed = await call(link, 1, "echo", {"text": UNICODE_TEXT})
        assert echoed["id"] == 1
        assert text_of(echoed) == UNICODE_TEXT

        # Larger than httpx2's default 1 MiB event limit, as a tool result with an image can be.
        big = "x" * (2 * 1024 * 1024)
        assert text_of(await call(link, 10, "echo", {"text": big})) == big

        # Unknown `_meta` keys and unknown params fields reach the backend as sent: nothing is re-modelled.
        meta = {"x-mcplane/test": {"nested": [1, "ü", None]}, "other": True}
        await link.send(
            {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "raw_params", "arguments": {}, "_meta": meta, "x-unknown": "kept"},
            }
        )
        seen = json.loads(text_of(await receive(link)))
        assert seen["_meta"] == meta
        assert seen["x-unknown"] == "kept"

        # A notification the backend sends during a call comes on the stream before the answer.
        await link.send(
            {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "notify", "arguments": {}}}
        )
        log = await receive(link)
        assert log["method"] == "notifications/message"
        assert log["params"]["data"] == "hello from the backend"
        assert (await receive(link))["id"] == 3

        async with link.listen():
            pass


async def test_in_flight_request_fails_with_its_id_when_the_server_dies(
    server: SseServer, http: httpx2.AsyncClient
) -> None:
    metrics = Metrics()
    backend = make_backend(server.url, http, metrics, connect_timeout=0.5)
    async with backend.open_link(LinkOptions(session_label="t2")) as link:
        await initialize(link)
        await link.send(
            {
                "jsonrpc": "2.0",
                "id": "slow",
                "method": "tools/call",
                "params": {"name": "sleep", "arguments": {"seconds": 60}},
            }
        )
        # The echo answer proves the slow call was POSTed (POSTs go out in order) before the kill.
        assert text_of(await call(link, 1, "echo", {"text": "before"})) == "before"
        await server.kill()

        lost = await receive(link)
        assert lost["id"] == "slow"
        assert lost["error"]["code"] == BACKEND_UNAVAILABLE
        assert server.url in lost["error"]["message"]
        assert "before the request was answered" in lost["error"]["message"]

        # With the server still down, a new request is answered with a clear error, not left hanging.
        down = await call(link, 2, "echo", {"text": "while down"})
        assert down["id"] == 2
        assert down["error"]["code"] == BACKEND_UNAVAILABLE
        assert "Traceback" not in down["error"]["message"]
    assert sample(metrics, "mcplane_backend_errors_total", kind="sse_stream") >= 1


async def test_reconnects_and_reinitializes_after_a_restart(
    server: SseServer, http: httpx2.AsyncClient
) -> None:
    metrics = Metrics()
    backend = make_backend(server.url, http, metrics, connect_timeout=DEADLINE)
    async with backend.open_link(LinkOptions(session_label="t3")) as link:
        await initialize(link)
        first_pid = text_of(await call(link, 1, "pid"))
        await link.send(
            {
                "jsonrpc": "2.0",
                "id": 2,
                "method": "tools/call",
                "params": {"name": "sleep", "arguments": {"seconds": 60}},
            }
        )
        assert text_of(await call(link, 3, "echo", {"text": "posted"})) == "posted"

        await server.kill()
        assert (await receive(link))["id"] == 2
        await server.start()

        # Sent while the link may still be reconnecting: it waits for the new session, which already knows the
        # client (the replayed initialize), and its answer is the next message (the replay's answer is not).
        assert text_of(await call(link, 4, "client_name")) == "mcplane-test-client"
        assert text_of(await call(link, 5, "pid")) != first_pid
        assert text_of(await call(link, 6, "echo", {"text": UNICODE_TEXT})) == UNICODE_TEXT
    assert sample(metrics, "mcplane_backend_restarts_total", reason="sse_reconnect") == 1


async def test_unreachable_backend_gives_sentences(http: httpx2.AsyncClient) -> None:
    url = f"http://127.0.0.1:{free_port()}/sse"
    backend = make_backend(url, http, Metrics(), connect_timeout=2.0)
    assert await backend.check_ready() == f"backend {url} unreachable: connection refused"
    with anyio.fail_after(DEADLINE), pytest.raises(BackendUnavailable) as raised:
        async with backend.open_link(LinkOptions()):
            pytest.fail("a link to nothing opened")
    assert raised.value.message == f"backend {url} unreachable: connection refused"


async def test_wrong_path_answers_http_404(server: SseServer, http: httpx2.AsyncClient) -> None:
    url = server.url.replace("/sse", "/nope")
    backend = make_backend(url, http, Metrics())
    assert await backend.check_ready() == f"backend {url} answered HTTP 404 Not Found"
    with pytest.raises(BackendProtocolError, match="answered HTTP 404"):
        async with backend.open_link(LinkOptions()):
            pytest.fail("a link to a 404 opened")


# --- against an in-process fake ---------------------------------------------------------------------------


class FakeServer:
    """A legacy SSE server in-process: the test pushes raw SSE text, POSTs are recorded and answered."""

    def __init__(self, endpoint: str = "/messages/?session_id=abc", post_status: int = 202) -> None:
        self.endpoint = endpoint
        self.post_status = post_status
        self.posts: list[Message] = []
        self.post_headers: list[httpx2.Headers] = []
        self.get_headers: list[httpx2.Headers] = []
        self._posted = anyio.Event()
        self._push, self._events = anyio.create_memory_object_stream[str](100)

    async def __aenter__(self) -> FakeServer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._push.aclose()
        await self._events.aclose()

    async def push(self, raw: str) -> None:
        await self._push.send(raw)

    async def handler(self, request: httpx2.Request) -> httpx2.Response:
        if request.method == "GET":
            self.get_headers.append(request.headers)

            async def body() -> AsyncIterator[bytes]:
                yield f"event: endpoint\ndata: {self.endpoint}\n\n".encode()
                async for raw in self._events:
                    yield raw.encode()

            return httpx2.Response(200, headers={"content-type": "text/event-stream"}, content=body())
        self.posts.append(json.loads(request.content))
        self.post_headers.append(request.headers)
        self._posted.set()
        self._posted = anyio.Event()
        return httpx2.Response(self.post_status)

    async def wait_posts(self, count: int) -> None:
        with anyio.fail_after(DEADLINE):
            while len(self.posts) < count:
                await self._posted.wait()


@asynccontextmanager
async def fake_backend(
    fake: FakeServer, metrics: Metrics, headers: dict[str, str] | None = None
) -> AsyncIterator[SseBackend]:
    async with fake, httpx2.AsyncClient(transport=httpx2.MockTransport(fake.handler)) as client:
        yield SseBackend(
            "http://backend.test/sse",
            headers=headers or {},
            http=client,
            metrics=metrics,
            connect_timeout=2.0,
        )


async def test_failed_post_answers_the_request_and_counts_the_notification() -> None:
    fake = FakeServer(post_status=500)
    metrics = Metrics()
    async with fake_backend(fake, metrics) as backend, backend.open_link(LinkOptions()) as link:
        await link.send(INITIALIZED)
        await link.send({"jsonrpc": "2.0", "id": 7, "method": "tools/list"})
        answer = await receive(link)
    assert answer["id"] == 7
    assert answer["error"] == {
        "code": BACKEND_UNAVAILABLE,
        "message": "backend http://backend.test/sse answered HTTP 500 Internal Server Error "
        "to a message POST",
    }
    assert sample(metrics, "mcplane_backend_errors_total", kind="sse_post") == 2
    assert [post.get("id") for post in fake.posts] == [None, 7]


async def test_posts_keep_order_and_headers_and_malformed_events_are_skipped() -> None:
    fake = FakeServer()
    metrics = Metrics()
    headers = {"X-Api-Key": "operator", "Authorization": "Bearer operator"}
    options = LinkOptions(forwarded_headers={"authorization": "Bearer client", "X-Trace": "t-1"})
    async with fake_backend(fake, metrics, headers) as backend, backend.open_link(options) as link:
        messages: list[Message] = [INITIALIZE, INITIALIZED] + [
            {"jsonrpc": "2.0", "id": i, "method": "ping"} for i in range(1, 20)
        ]
        for message in messages:
            await link.send(message)
        await fake.push("event: message\ndata: {not json\n\n")
        await fake.push('event: message\ndata: {"jsonrpc": "1.0", "id": 1}\n\n')
        await fake.push("event: message\ndata: \n\n")  # a keep-alive
        await fake.push('event: message\ndata: {"jsonrpc":"2.0","id":1,"result":{},"x-extra":"ü"}\n\n')
        assert await receive(link) == {"jsonrpc": "2.0", "id": 1, "result": {}, "x-extra": "ü"}
        await fake.wait_posts(len(messages))
    assert fake.posts == messages
    assert sample(metrics, "mcplane_backend_errors_total", kind="sse_malformed") == 2
    for sent in (fake.get_headers[0], fake.post_headers[0]):
        # The operator's header wins over the client's, whatever the case.
        assert sent.get_list("authorization") == ["Bearer operator"]
        assert sent["x-api-key"] == "operator"
        assert sent["x-trace"] == "t-1"
    assert fake.get_headers[0]["accept"] == "text/event-stream"
    assert fake.post_headers[0]["content-type"] == "application/json"


async def test_endpoint_on_another_origin_is_refused() -> None:
    fake = FakeServer(endpoint="http://elsewhere.test/messages/?session_id=abc")
    async with fake_backend(fake, Metrics()) as backend:
        assert "another origin" in (await backend.check_ready() or "")
        with pytest.raises(BackendProtocolError, match="another origin"):
            async with backend.open_link(LinkOptions()):
                pytest.fail("a link to another origin opened")


async def test_an_error_in_the_callers_block_comes_out_unwrapped() -> None:
    async with fake_backend(FakeServer(), Metrics()) as backend:
        with pytest.raises(BackendUnavailable, match="from the caller"):
            async with backend.open_link(LinkOptions()):
                raise BackendUnavailable("from the caller")


async def test_the_shared_client_keeps_no_cookie_between_sessions() -> None:
    # Every legacy SSE session goes through one client; a cookie the server sets while serving one
    # session (an affinity or auth cookie) must not be sent on another session's requests.
    seen_cookies: list[str | None] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        seen_cookies.append(dict(scope["headers"]).get(b"cookie", b"").decode() or None)
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"set-cookie", b"affinity=a; Path=/")],
            }
        )
        await send({"type": "http.response.body", "body": b"ok"})

    async with serve_asgi(app) as base, new_http_client(BackendConfig(kind="sse", url=base)) as client:
        for _ in range(2):
            assert (await client.get(f"{base}/sse")).status_code == 200
    assert seen_cookies == [None, None]
