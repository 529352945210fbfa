"""The official Python client talks to `@modelcontextprotocol/server-everything` through the sidecar.

server-everything (TypeScript SDK, handshake era only) is the reference server that exercises every MCP
feature. Each test runs twice: with the sidecar starting it as a stdio backend (one process per session), and
with the sidecar in front of its Streamable HTTP endpoint. The sidecar runs in-process on a real loopback
socket; server-everything runs under the machine's own `node` (its HTTP listener pinned to loopback by a
`--require` preload). Every test asserts on the content the client receives, under a deadline.

Names come from the installed package (2026.8.31): tools `echo`, `get-sum`, `get-tiny-image`,
`trigger-long-running-operation`, `toggle-simulated-logging`, and, registered only after `initialize` when
the client declares the capability, `trigger-sampling-request`, `trigger-elicitation-request`,
`get-roots-list`; resources `demo://resource/static/document/<file in dist/docs>` and the templates
`demo://resource/dynamic/{text,blob}/{resourceId}`; prompts `simple-prompt`, `args-prompt`,
`completable-prompt`, `resource-prompt`.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as types
import pytest
from mcp import Client
from mcp.client.session import ClientRequestContext
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import FileUrl
from starlette.types import ASGIApp, Receive, Scope, Send

from mcplane_sidecar import build_config, create_app
from mcplane_sidecar.app import Sidecar
from tests.e2e.proxy_harness import MODERN_VERSION
from tests.support.asgi import serve_asgi
from tests.support.processes import FIXTURES, NODE_MODULES, async_running_process, free_port

pytestmark = pytest.mark.e2e

DEADLINE = 20  # seconds per test body; each step takes milliseconds, the margin is for a loaded CI machine
EVERYTHING_DIST = NODE_MODULES / "@modelcontextprotocol" / "server-everything" / "dist"
EVERYTHING = EVERYTHING_DIST / "index.js"
LOOPBACK_PRELOAD = FIXTURES / "loopback_preload.cjs"
BACKEND_KINDS = ("stdio", "http")
# Deprecated at 2026-07-28 (SEP-2577) but the way a handshake-era server is driven; the SDK warns on use.
HANDSHAKE_ONLY_API = pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")


def system_node() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.fail("no `node` on PATH: server-everything needs Node.js")
    if not EVERYTHING.exists():
        pytest.fail(f"{EVERYTHING} is missing: install the Node test peers (npm ci in tests/node)")
    return node


def lifespan_owned_by_the_test(app: ASGIApp) -> ASGIApp:
    """`app`, but start-up is acknowledged without running the app's own lifespan.

    `serve_asgi` stops uvicorn with `force_exit`, which skips the lifespan shutdown: the sidecar's backend
    (its stdio processes, its HTTP client) would only be closed when the event loop cancels the leftover
    lifespan task after the test. `serve_sidecar` runs `Sidecar.running()` itself instead, as the app's
    lifespan would, so everything it started is stopped inside the test.
    """

    async def asgi(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await receive()  # lifespan.startup
            await send({"type": "lifespan.startup.complete"})
            return
        await app(scope, receive, send)

    return asgi


@asynccontextmanager
async def serve_sidecar(backend: dict[str, Any]) -> AsyncIterator[str]:
    """Run a sidecar for `backend` in-process on a loopback socket; yield its `/mcp` URL."""
    app = create_app(build_config({"backend": backend, "logging": {"json": True, "level": "info"}}))
    sidecar: Sidecar = app.state.sidecar
    async with sidecar.running(), serve_asgi(lifespan_owned_by_the_test(app)) as base:
        yield f"{base}/mcp"


@asynccontextmanager
async def everything_behind_sidecar(kind: str, log_dir: Path) -> AsyncIterator[str]:
    """Yield the sidecar's `/mcp` URL with server-everything behind it as a `kind` backend."""
    node = system_node()
    if kind == "stdio":
        stdio = {"command": node, "args": [str(EVERYTHING), "stdio"]}
        async with serve_sidecar({"kind": "stdio", "stdio": stdio}) as url:
            yield url
        return
    port = free_port()
    argv = [node, "--require", str(LOOPBACK_PRELOAD), str(EVERYTHING), "streamableHttp"]
    async with (
        async_running_process(
            argv, port=port, env={"PORT": str(port)}, log_dir=log_dir, label="server-everything"
        ),
        serve_sidecar({"kind": "http", "url": f"http://127.0.0.1:{port}/mcp"}) as url,
    ):
        yield url


@pytest.fixture(params=BACKEND_KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    value: str = request.param
    return value


def texts(result: types.CallToolResult | types.GetPromptResult) -> list[str]:
    if isinstance(result, types.GetPromptResult):
        blocks: list[Any] = [message.content for message in result.messages]
    else:
        blocks = list(result.content)
    return [block.text for block in blocks if isinstance(block, types.TextContent)]


def tiny_image_from_package() -> str:
    """The base64 PNG that `get-tiny-image` returns, read from the installed package's source."""
    source = (EVERYTHING_DIST / "tools" / "get-tiny-image.js").read_text()
    found = re.search(r'MCP_TINY_IMAGE = "([A-Za-z0-9+/=]+)"', source)
    assert found, "get-tiny-image.js no longer defines MCP_TINY_IMAGE"
    return found.group(1)


async def test_tools_list_and_call(kind: str, tmp_path: Path) -> None:
    async with everything_behind_sidecar(kind, tmp_path) as url:
        with anyio.fail_after(DEADLINE):
            async with Client(url, mode="legacy") as client:
                assert client.protocol_version in HANDSHAKE_PROTOCOL_VERSIONS
                assert client.server_info is not None
                assert client.server_info.name == "mcp-servers/everything"
                listed = {tool.name: tool for tool in (await client.list_tools()).tools}
                assert {"echo", "get-sum", "get-tiny-image", "trigger-long-running-operation"} <= set(listed)
                assert listed["echo"].input_schema["required"] == ["message"]
                # Registered only for clients that declared sampling / elicitation / roots: this one did not.
                assert not {"trigger-sampling-request", "trigger-elicitation-request"} & set(listed)

                echoed = await client.call_tool("echo", {"message": "héllo ☃ through the proxy"})
                assert texts(echoed) == ["Echo: héllo ☃ through the proxy"]
                summed = await client.call_tool("get-sum", {"a": 19.5, "b": 22.5})
                assert texts(summed) == ["The sum of 19.5 and 22.5 is 42."]

                image = await client.call_tool("get-tiny-image", {})
                pictures = [block for block in image.content if isinstance(block, types.ImageContent)]
                assert len(pictures) == 1
                assert pictures[0].mime_type == "image/png"
                assert pictures[0].data == tiny_image_from_package()
                assert base64.b64decode(pictures[0].data).startswith(b"\x89PNG\r\n\x1a\n")

                weather = await client.call_tool("get-structured-content", {"location": "Chicago"})
                expected = {"temperature": 36, "conditions": "Light rain / drizzle", "humidity": 82}
                assert weather.structured_content == expected
                assert listed["get-structured-content"].output_schema is not None

                invalid = await client.call_tool("get-sum", {"a": "not a number", "b": 1})
                assert invalid.is_error is True


async def test_resources_text_and_blob(kind: str, tmp_path: Path) -> None:
    docs = EVERYTHING_DIST / "docs"
    async with everything_behind_sidecar(kind, tmp_path) as url:
        with anyio.fail_after(DEADLINE):
            async with Client(url, mode="legacy") as client:
                listed = {
                    str(resource.uri): resource for resource in (await client.list_resources()).resources
                }
                features_uri = "demo://resource/static/document/features.md"
                assert features_uri in listed
                assert listed[features_uri].mime_type == "text/markdown"
                assert len(listed) == len(list(docs.iterdir()))

                static = await client.read_resource(features_uri)
                assert len(static.contents) == 1
                assert isinstance(static.contents[0], types.TextResourceContents)
                assert static.contents[0].text == (docs / "features.md").read_text()

                templates = (await client.list_resource_templates()).resource_templates
                assert {template.uri_template for template in templates} >= {
                    "demo://resource/dynamic/text/{resourceId}",
                    "demo://resource/dynamic/blob/{resourceId}",
                }

                text = (await client.read_resource("demo://resource/dynamic/text/3")).contents
                assert isinstance(text[0], types.TextResourceContents)
                assert text[0].text.startswith("Resource 3: This is a plaintext resource created at ")

                blob = (await client.read_resource("demo://resource/dynamic/blob/7")).contents
                assert isinstance(blob[0], types.BlobResourceContents)
                assert str(blob[0].uri) == "demo://resource/dynamic/blob/7"
                decoded = base64.b64decode(blob[0].blob, validate=True).decode()
                assert decoded.startswith("Resource 7: This is a base64 blob created at ")


async def test_prompts_with_arguments_and_completion(kind: str, tmp_path: Path) -> None:
    async with everything_behind_sidecar(kind, tmp_path) as url:
        with anyio.fail_after(DEADLINE):
            async with Client(url, mode="legacy") as client:
                prompts = {prompt.name: prompt for prompt in (await client.list_prompts()).prompts}
                assert {"simple-prompt", "args-prompt", "completable-prompt", "resource-prompt"} <= set(
                    prompts
                )
                arguments = {
                    argument.name: argument.required for argument in prompts["args-prompt"].arguments or []
                }
                assert arguments == {"city": True, "state": False}

                simple = await client.get_prompt("simple-prompt")
                assert texts(simple) == ["This is a simple prompt without arguments."]
                both = await client.get_prompt("args-prompt", {"city": "Zürich", "state": "ZH"})
                assert texts(both) == ["What's weather in Zürich, ZH?"]
                city_only = await client.get_prompt("args-prompt", {"city": "Kyōto"})
                assert texts(city_only) == ["What's weather in Kyōto?"]

                embedded = await client.get_prompt(
                    "resource-prompt", {"resourceType": "Blob", "resourceId": "5"}
                )
                resource = embedded.messages[1].content
                assert isinstance(resource, types.EmbeddedResource)
                assert isinstance(resource.resource, types.BlobResourceContents)
                assert base64.b64decode(resource.resource.blob).startswith(
                    b"Resource 5: This is a base64 blob"
                )

                completion = await client.complete(
                    types.PromptReference(type="ref/prompt", name="completable-prompt"),
                    {"name": "name", "value": ""},
                    context_arguments={"department": "Sales"},
                )
                assert completion.completion.values == ["David", "Eve", "Frank"]


async def test_sampling_answer_reaches_the_tool_result(kind: str, tmp_path: Path) -> None:
    requests: list[types.CreateMessageRequestParams] = []

    async def sample(
        context: ClientRequestContext, params: types.CreateMessageRequestParams
    ) -> types.CreateMessageResult:
        requests.append(params)
        return types.CreateMessageResult(
            role="assistant",
            content=types.TextContent(type="text", text="Forty-two, relayed by mcplane ✓"),
            model="mcplane-test-model",
            stop_reason="endTurn",
        )

    async with everything_behind_sidecar(kind, tmp_path) as url:
        with anyio.fail_after(DEADLINE):
            async with Client(url, mode="legacy", sampling_callback=sample) as client:
                assert "trigger-sampling-request" in {tool.name for tool in (await client.list_tools()).tools}
                result = await client.call_tool(
                    "trigger-sampling-request", {"prompt": "What is 6 times 7?", "maxTokens": 64}
                )
    assert len(requests) == 1
    asked = requests[0]
    assert asked.max_tokens == 64
    assert asked.system_prompt == "You are a helpful test server."
    assert isinstance(asked.messages[0].content, types.TextContent)
    assert asked.messages[0].content.text == "Resource trigger-sampling-request context: What is 6 times 7?"
    assert result.is_error is not True
    [text] = texts(result)
    prefix = "LLM sampling result: \n"
    assert text.startswith(prefix)
    echoed = json.loads(text[len(prefix) :])
    assert echoed["content"] == {"type": "text", "text": "Forty-two, relayed by mcplane ✓"}
    assert echoed["model"] == "mcplane-test-model"
    assert echoed["stopReason"] == "endTurn"


async def test_elicitation_answers_are_reflected(kind: str, tmp_path: Path) -> None:
    answers = [
        types.ElicitResult(action="accept", content={"name": "Ada Lovelace", "check": True, "integer": 7}),
        types.ElicitResult(action="decline"),
    ]
    asked: list[types.ElicitRequestParams] = []

    async def elicit(context: ClientRequestContext, params: types.ElicitRequestParams) -> types.ElicitResult:
        asked.append(params)
        return answers[len(asked) - 1]

    async with everything_behind_sidecar(kind, tmp_path) as url:
        with anyio.fail_after(DEADLINE):
            async with Client(url, mode="legacy", elicitation_callback=elicit) as client:
                accepted = await client.call_tool("trigger-elicitation-request", {})
                declined = await client.call_tool("trigger-elicitation-request", {})
    assert len(asked) == 2
    form = asked[0]
    assert isinstance(form, types.ElicitRequestFormParams)
    assert form.message == "Please provide inputs for the following fields:"
    assert form.requested_schema["required"] == ["name"]
    accepted_texts = texts(accepted)
    assert accepted_texts[0] == "✅ User provided the requested information!"
    assert accepted_texts[1].splitlines() == [
        "User inputs:",
        "- Name: Ada Lovelace",
        "- Agreed to terms: true",
        "- Favorite Integer: 7",
    ]
    assert texts(declined)[0] == "❌ User declined to provide the requested information."


async def test_progress_arrives_in_order(kind: str, tmp_path: Path) -> None:
    updates: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total))

    async with everything_behind_sidecar(kind, tmp_path) as url:
        with anyio.fail_after(DEADLINE):
            async with Client(url, mode="legacy") as client:
                result = await client.call_tool(
                    "trigger-long-running-operation",
                    {"duration": 0.5, "steps": 5},
                    progress_callback=on_progress,
                )
    assert updates == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]
    assert texts(result) == ["Long running operation completed. Duration: 0.5 seconds, Steps: 5."]


@HANDSHAKE_ONLY_API
async def test_logging_level_is_respected_and_messages_arrive(kind: str, tmp_path: Path) -> None:
    """`resources/subscribe` makes the server log an `info` line; `logging/setLevel` filters it server-side.

    The log message is not tied to a request: over HTTP it travels on the standalone GET stream, over stdio
    the sidecar has to route an unsolicited notification to the client itself.
    """
    received: list[types.LoggingMessageNotificationParams] = []
    arrived = anyio.Event()

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        received.append(params)
        if "demo://resource/dynamic/text/2" in str(params.data):
            arrived.set()

    async with everything_behind_sidecar(kind, tmp_path) as url:
        with anyio.fail_after(DEADLINE):
            async with Client(url, mode="legacy", logging_callback=on_log) as client:
                await client.set_logging_level("error")
                await client.subscribe_resource("demo://resource/dynamic/text/1")  # info < error: dropped
                await client.set_logging_level("debug")
                await client.subscribe_resource("demo://resource/dynamic/text/2")
                await arrived.wait()
    # Both lines would travel the same ordered stream, so the filtered one would have arrived first.
    assert [params.level for params in received] == ["info"]
    assert str(received[0].data).startswith(
        "Received Subscribe Resource request for URI: demo://resource/dynamic/text/2"
    )


async def test_simulated_logging_reaches_the_client(kind: str, tmp_path: Path) -> None:
    received: list[types.LoggingMessageNotificationParams] = []
    arrived = anyio.Event()

    async def on_log(params: types.LoggingMessageNotificationParams) -> None:
        received.append(params)
        arrived.set()

    async with everything_behind_sidecar(kind, tmp_path) as url:
        with anyio.fail_after(DEADLINE):
            async with Client(url, mode="legacy", logging_callback=on_log) as client:
                started = await client.call_tool("toggle-simulated-logging", {})
                assert texts(started)[0].startswith("Started simulated, random-leveled logging")
                await arrived.wait()
                stopped = await client.call_tool("toggle-simulated-logging", {})
                assert texts(stopped)[0].startswith("Stopped simulated logging")
    # One of the server's eight canned lines, its text matching its level ("Alert level-message" sic).
    first = received[0]
    expected = (
        "Alert level-message" if first.level == "alert" else f"{first.level.capitalize()}-level message"
    )
    assert str(first.data).startswith(expected)


async def test_server_requests_roots_on_its_own(kind: str, tmp_path: Path) -> None:
    """After `initialized`, server-everything asks for roots unprompted (not tied to any client request)."""
    asked = anyio.Event()
    roots = [
        types.Root(uri=FileUrl("file:///srv/project"), name="Project ☃"),
        types.Root(uri=FileUrl("file:///tmp/scratch")),
    ]

    async def list_roots(context: ClientRequestContext) -> types.ListRootsResult:
        asked.set()
        return types.ListRootsResult(roots=roots)

    async with everything_behind_sidecar(kind, tmp_path) as url:
        with anyio.fail_after(DEADLINE):
            async with Client(url, mode="legacy", list_roots_callback=list_roots) as client:
                await asked.wait()
                result = await client.call_tool("get-roots-list", {})
    [text] = texts(result)
    assert text.startswith("Current MCP Roots (2 total):")
    assert "1. Project ☃\n   URI: file:///srv/project" in text
    assert "2. Unnamed Root\n   URI: file:///tmp/scratch" in text


async def test_auto_mode_client_works_against_the_handshake_only_backend(kind: str, tmp_path: Path) -> None:
    """A 2026-07-28-capable client in auto mode (`server/discover` first) still gets served.

    server-everything only knows `initialize`. The sidecar may refuse `server/discover` (the client then
    falls back to the handshake) or bridge the stateless requests onto a backend session it opens itself
    (core/bridge.py); either way the requests below must work, progress included (the bridge rewrites ids
    and progress tokens, which is where it could go wrong).
    """
    updates: list[tuple[float, float | None]] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        updates.append((progress, total))

    async with everything_behind_sidecar(kind, tmp_path) as url:
        with anyio.fail_after(DEADLINE):
            async with Client(url) as client:
                negotiated = client.protocol_version
                assert client.server_info is not None
                assert client.server_info.name == "mcp-servers/everything"
                tools = {tool.name for tool in (await client.list_tools()).tools}
                echoed = await client.call_tool("echo", {"message": "auto ☃"})
                summed = await client.call_tool("get-sum", {"a": 40, "b": 2})
                progressed = await client.call_tool(
                    "trigger-long-running-operation",
                    {"duration": 0.3, "steps": 3},
                    progress_callback=on_progress,
                )
                prompt = await client.get_prompt("args-prompt", {"city": "Oslo"})
                blob = (await client.read_resource("demo://resource/dynamic/blob/4")).contents
    assert negotiated in (MODERN_VERSION, *HANDSHAKE_PROTOCOL_VERSIONS)
    assert {"echo", "get-sum", "trigger-long-running-operation"} <= tools
    assert texts(echoed) == ["Echo: auto ☃"]
    assert texts(summed) == ["The sum of 40 and 2 is 42."]
    assert updates == [(1, 3), (2, 3), (3, 3)]
    assert texts(progressed) == ["Long running operation completed. Duration: 0.3 seconds, Steps: 3."]
    assert texts(prompt) == ["What's weather in Oslo?"]
    assert isinstance(blob[0], types.BlobResourceContents)
    assert base64.b64decode(blob[0].blob).startswith(b"Resource 4: This is a base64 blob created at ")
