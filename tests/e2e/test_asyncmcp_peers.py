"""The asyncmcp peers work on their own: asyncmcp 0.2.1's OWN client against a REAL asyncmcp 0.2.1 server.

No sidecar here. This proves the infrastructure the sidecar's SQS, SNS+SQS and Webhook backend tests stand on
(moto in server mode, `tests/fixtures/asyncmcp_server.py`, `tests/fixtures/asyncmcp_client.py`, the helpers
in `tests/support/aws.py`), and prints the no-proxy latency of one `tools/call` per transport: the baseline a
proxied call is compared with. Both asyncmcp scripts run in `.venv-asyncmcp` (mcp 1.x) as subprocesses.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.aws import (
    MotoServer,
    Transport,
    asyncmcp_client_argv,
    asyncmcp_server,
    create_queue,
    finish_asyncmcp_client,
    moto_server,
    run_asyncmcp_client,
    sns_sqs_layout,
    sqs_layout,
    start_asyncmcp_client,
)

pytestmark = pytest.mark.e2e

BASELINE_CALLS = 20  # timed echo calls per session: the latency baseline (median printed, not asserted)
TOOLS = ["echo", "fail", "size", "slow", "whoami"]


@pytest.fixture(scope="module")
def moto(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """One moto server for the module: every test makes its own uniquely named queues and topics."""
    with moto_server(log_dir=tmp_path_factory.mktemp("moto")) as server:
        yield server


def assert_full_session(result: dict[str, Any], transport: Transport, client_name: str) -> None:
    """Everything the client script exercised came back from the fixture server, unchanged."""
    assert result["transport"] == transport
    assert result["server_name"] == "asyncmcp-fixture"
    assert result["instructions"] == f"transport={transport}"
    assert result["tools"] == TOOLS
    assert result["resources"] == ["demo://readme"]
    assert result["prompts"] == ["greet"]
    assert result["echo"] == "hello from asyncmcp"
    assert result["size"] == "1000"
    assert result["whoami"]["client"] == client_name
    assert result["whoami"]["calls"] == 1
    assert result["fail_is_error"] is True
    assert "always fails" in result["fail_text"]
    assert result["slow"] == "slept 0.2s"
    # Server -> client notifications flow. Not all 4: asyncmcp's client reader hands one receive batch to the
    # session concurrently, so the last progress and the result can swap, and a late progress is dropped.
    assert result["progress"][:1] == [1]
    assert result["readme"].startswith("asyncmcp fixture server")
    assert result["greeting"] == f"Hello, {client_name}!"
    assert len(result["latencies_ms"]) == BASELINE_CALLS


def report_baseline(capsys: pytest.CaptureFixture[str], label: str, result: dict[str, Any]) -> None:
    with capsys.disabled():
        print(
            f"\n[baseline] asyncmcp {label}, no proxy: tools/call median {result['median_ms']} ms over "
            f"{len(result['latencies_ms'])} calls (min {min(result['latencies_ms'])}, max "
            f"{max(result['latencies_ms'])}); initialize {result['initialize_ms']} ms"
        )


def test_sqs(moto: MotoServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    layout = sqs_layout(moto.url)
    with asyncmcp_server(
        "sqs", endpoint_url=moto.url, request_queue_url=layout.requests.url, log_dir=tmp_path
    ) as server:
        argv = asyncmcp_client_argv(
            "sqs", endpoint_url=moto.url, sqs=layout, calls=BASELINE_CALLS, client_name="sqs-client"
        )
        result = run_asyncmcp_client(argv)
    assert server.process.returncode == 0, server.log_text()
    assert_full_session(result, "sqs", "sqs-client")
    report_baseline(capsys, "sqs", result)


@pytest.mark.parametrize("raw", [False, True], ids=["envelope", "raw"])
def test_sns_sqs(moto: MotoServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], raw: bool) -> None:
    layout = sns_sqs_layout(moto.url, raw=raw)
    with asyncmcp_server(
        "sns-sqs",
        endpoint_url=moto.url,
        request_queue_url=layout.server_queue.url,
        request_topic_arn=layout.request_topic,
        log_dir=tmp_path,
    ) as server:
        argv = asyncmcp_client_argv(
            "sns-sqs", endpoint_url=moto.url, sns_sqs=layout, calls=BASELINE_CALLS, client_name="sns-client"
        )
        result = run_asyncmcp_client(argv)
    assert server.process.returncode == 0, server.log_text()
    assert_full_session(result, "sns-sqs", "sns-client")
    report_baseline(capsys, f"sns-sqs ({'raw' if raw else 'envelope'} delivery)", result)


def test_webhook(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with asyncmcp_server("webhook", log_dir=tmp_path) as server:
        assert server.webhook_url.startswith("http://127.0.0.1:")
        argv = asyncmcp_client_argv(
            "webhook", server_url=server.webhook_url, calls=BASELINE_CALLS, client_name="webhook-client"
        )
        result = run_asyncmcp_client(argv)
    assert server.process.returncode == 0, server.log_text()
    assert_full_session(result, "webhook", "webhook-client")
    report_baseline(capsys, "webhook", result)


def test_whoami_tells_concurrent_sessions_apart(moto: MotoServer, tmp_path: Path) -> None:
    """Two asyncmcp clients at once on one SQS server, each with its own reply queue: two distinct sessions.

    This is what cross-talk tests through the proxy rely on: `whoami` names the session that answered.
    """
    layout = sqs_layout(moto.url)
    second_replies = create_queue(moto.url)
    with asyncmcp_server(
        "sqs", endpoint_url=moto.url, request_queue_url=layout.requests.url, log_dir=tmp_path
    ):
        clients = [
            start_asyncmcp_client(
                asyncmcp_client_argv(
                    "sqs",
                    endpoint_url=moto.url,
                    sqs=layout,
                    response_queue=replies,
                    calls=5,
                    client_name=name,
                )
            )
            for name, replies in (("first", layout.responses), ("second", second_replies))
        ]
        try:
            first, second = (finish_asyncmcp_client(client) for client in clients)
        finally:
            for client in clients:  # only after a failure is one still running
                if client.poll() is None:
                    client.kill()
                    client.wait()
    assert first["whoami"]["client"] == "first"
    assert second["whoami"]["client"] == "second"
    assert first["whoami"]["session"] != second["whoami"]["session"]
