"""AWS (moto) and asyncmcp peers for end-to-end tests of the sidecar's SQS, SNS+SQS and Webhook backends.

- `moto_server()`: moto in server mode (`.venv/bin/moto_server -H 127.0.0.1 -p PORT`) as a subprocess, ready
  once the port accepts, stopped by PID. `moto_reset(url)` wipes its state (`POST /moto-api/reset`).
- boto3 (sync) helpers against it: `create_queue`, `create_topic`, `subscribe_queue` (raw or envelope
  delivery, plus the queue policy asyncmcp's examples/setup.py sets), and the complete layouts one asyncmcp
  peer needs: `sqs_layout`, `sns_sqs_layout`. Names are unique per call, so tests need no reset.
- `asyncmcp_server(...)`: runs `tests/fixtures/asyncmcp_server.py` (a REAL asyncmcp 0.2.1 server) in the
  asyncmcp venv until the block ends, ready on its `READY {json}` line, stopped by PID.
- `run_asyncmcp_client(...)`: runs `tests/fixtures/asyncmcp_client.py` (asyncmcp's OWN client) to completion
  and returns the JSON it prints.

Everything binds 127.0.0.1 and uses dummy credentials (`DUMMY_AWS_ENV`); build the sidecar's own aioboto3
clients with `endpoint_url=moto.url`, `region_name=REGION` and the same keys.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import boto3
import httpx

from tests.support.processes import (
    FIXTURES,
    LOG_TAIL_CHARS,
    LOOPBACK,
    PYTHON,
    READY_TIMEOUT_S,
    REPO_ROOT,
    STOP_TIMEOUT_S,
    ProcessHandle,
    ProcessStartError,
    free_port,
    running_process,
    stop_process,
)

REGION = "us-east-1"
DUMMY_AWS_ENV: Mapping[str, str] = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_EC2_METADATA_DISABLED": "true",
}
MOTO_SERVER = PYTHON.parent / "moto_server"
ASYNCMCP_VENV = REPO_ROOT / ".venv-asyncmcp"
ASYNCMCP_PYTHON = ASYNCMCP_VENV / "bin" / "python"
ASYNCMCP_SERVER = FIXTURES / "asyncmcp_server.py"
ASYNCMCP_CLIENT = FIXTURES / "asyncmcp_client.py"
READY_PREFIX = "READY "
READY_POLL_S = 0.02  # between reads of the log while waiting for the READY line
CLIENT_TIMEOUT_S = 60.0  # the client's own deadline is 30 s by default; this only catches a hung process

Transport = Literal["sqs", "sns-sqs", "webhook", "streamable-http-webhook"]


# ---------------------------------------------------------------------------------------------------------
# moto


@dataclass(frozen=True)
class MotoServer:
    """A running moto server: its endpoint URL and the process behind it."""

    url: str
    handle: ProcessHandle


@contextmanager
def moto_server(
    *, log_dir: Path | None = None, ready_timeout: float = READY_TIMEOUT_S, port: int | None = None
) -> Iterator[MotoServer]:
    """moto in server mode on 127.0.0.1 (on `port`, else a free one) until the block ends; then
    SIGTERM/SIGKILL by PID. A restarted moto on the same port starts empty."""
    if not MOTO_SERVER.exists():
        raise ProcessStartError(f"{MOTO_SERVER} is missing: install the test extras (make test)")
    port = port or free_port()
    argv = [MOTO_SERVER, "-H", LOOPBACK, "-p", str(port)]
    with running_process(
        argv, port=port, env=DUMMY_AWS_ENV, log_dir=log_dir, label="moto", ready_timeout=ready_timeout
    ) as handle:
        yield MotoServer(url=handle.base_url, handle=handle)


def moto_reset(url: str) -> None:
    """Forget every queue, topic and message the moto server at `url` holds."""
    httpx.post(f"{url}/moto-api/reset", timeout=10.0).raise_for_status()


def aws_client(service: Literal["sqs", "sns"], endpoint_url: str) -> Any:
    """A boto3 client for `service` on the moto endpoint, with the dummy credentials."""
    return boto3.client(
        service,
        endpoint_url=endpoint_url,
        region_name=REGION,
        aws_access_key_id=DUMMY_AWS_ENV["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=DUMMY_AWS_ENV["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=DUMMY_AWS_ENV["AWS_SESSION_TOKEN"],
    )


def unique_name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


@dataclass(frozen=True)
class Queue:
    url: str
    arn: str
    name: str


def create_queue(
    endpoint_url: str, name: str | None = None, attributes: Mapping[str, str] | None = None
) -> Queue:
    """A standard SQS queue (unique name unless given); returns its URL and ARN."""
    sqs = aws_client("sqs", endpoint_url)
    queue_name = name or unique_name("mcp-queue")
    url: str = sqs.create_queue(QueueName=queue_name, Attributes=dict(attributes or {}))["QueueUrl"]
    arn: str = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return Queue(url=url, arn=arn, name=queue_name)


def create_topic(endpoint_url: str, name: str | None = None) -> str:
    """A standard SNS topic (unique name unless given); returns its ARN."""
    arn: str = aws_client("sns", endpoint_url).create_topic(Name=name or unique_name("mcp-topic"))["TopicArn"]
    return arn


def subscribe_queue(endpoint_url: str, topic_arn: str, queue: Queue, *, raw: bool) -> str:
    """Subscribe `queue` to `topic_arn`; returns the subscription ARN.

    `raw=False` delivers the SNS JSON envelope (asyncmcp's examples/setup.py, the SNS default); `raw=True`
    sets `RawMessageDelivery`, so the body is the message itself and its attributes become SQS attributes.
    The queue gets the policy asyncmcp's setup.py sets (SendMessage allowed from this topic); moto does not
    enforce it, real AWS does.
    """
    sns = aws_client("sns", endpoint_url)
    attributes = {"RawMessageDelivery": "true" if raw else "false"}
    sub_arn: str = sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=queue.arn,
        Attributes=attributes,
        ReturnSubscriptionArn=True,
    )["SubscriptionArn"]
    policy = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "sqs:SendMessage",
                "Resource": queue.arn,
                "Condition": {"ArnEquals": {"aws:SourceArn": topic_arn}},
            }
        ],
    }
    aws_client("sqs", endpoint_url).set_queue_attributes(
        QueueUrl=queue.url, Attributes={"Policy": json.dumps(policy)}
    )
    return sub_arn


@dataclass(frozen=True)
class SqsLayout:
    """SQS transport: the server reads `requests`; a client gets replies on its own queue (`responses`)."""

    requests: Queue
    responses: Queue


def sqs_layout(endpoint_url: str) -> SqsLayout:
    return SqsLayout(requests=create_queue(endpoint_url), responses=create_queue(endpoint_url))


@dataclass(frozen=True)
class SnsSqsLayout:
    """SNS+SQS transport, as asyncmcp's setup.py builds it.

    Clients publish to `request_topic`, which feeds `server_queue` (the server reads it); the server
    publishes a session's replies to the client's topic (`response_topic`, sent as `client_topic_arn` on
    initialize), which feeds `client_queue` (the client reads it). `raw` is the delivery mode of both
    subscriptions.
    """

    request_topic: str
    server_queue: Queue
    response_topic: str
    client_queue: Queue
    raw: bool


def sns_sqs_layout(endpoint_url: str, *, raw: bool) -> SnsSqsLayout:
    request_topic = create_topic(endpoint_url, unique_name("mcp-requests"))
    server_queue = create_queue(endpoint_url, unique_name("mcp-processor"))
    response_topic = create_topic(endpoint_url, unique_name("mcp-response"))
    client_queue = create_queue(endpoint_url, unique_name("mcp-consumer"))
    subscribe_queue(endpoint_url, request_topic, server_queue, raw=raw)
    subscribe_queue(endpoint_url, response_topic, client_queue, raw=raw)
    return SnsSqsLayout(request_topic, server_queue, response_topic, client_queue, raw)


# ---------------------------------------------------------------------------------------------------------
# asyncmcp peers (run in .venv-asyncmcp)


def require_asyncmcp_venv() -> Path:
    """The asyncmcp venv's python, or a clear error naming the make target that builds it."""
    if not ASYNCMCP_PYTHON.exists():
        raise ProcessStartError(f"{ASYNCMCP_PYTHON} is missing: run `make .venv-asyncmcp/.installed`")
    return ASYNCMCP_PYTHON


@dataclass(frozen=True)
class AsyncmcpServer:
    """A running asyncmcp fixture server: what its READY line said, and the process."""

    transport: Transport
    ready: dict[str, str]
    pid: int
    log_path: Path
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def webhook_url(self) -> str:
        """webhook only: the URL clients POST to (http://127.0.0.1:P/mcp/request)."""
        return self.ready["webhook_url"]

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")


def asyncmcp_server_argv(
    transport: Transport,
    *,
    endpoint_url: str | None = None,
    request_queue_url: str | None = None,
    request_topic_arn: str | None = None,
    webhook_port: int = 0,
    extra_args: Sequence[str] = (),
) -> list[str]:
    argv = [str(require_asyncmcp_venv()), str(ASYNCMCP_SERVER), "--transport", transport, "--region", REGION]
    if endpoint_url:
        argv += ["--endpoint-url", endpoint_url]
    if request_queue_url:
        argv += ["--request-queue-url", request_queue_url]
    if request_topic_arn:
        argv += ["--request-topic-arn", request_topic_arn]
    if transport in ("webhook", "streamable-http-webhook"):
        argv += ["--webhook-port", str(webhook_port)]
    return [*argv, *extra_args]


def _wait_for_ready(process: subprocess.Popen[bytes], log_path: Path, timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        for line in log_path.read_text(errors="replace").splitlines():
            if line.startswith(READY_PREFIX):
                ready: dict[str, str] = json.loads(line[len(READY_PREFIX) :])
                return ready
        if process.poll() is not None:
            raise ProcessStartError(
                f"asyncmcp server {process.pid} exited with {process.returncode} before READY; "
                f"log {log_path}:\n" + log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
            )
        if time.monotonic() >= deadline:
            raise ProcessStartError(
                f"asyncmcp server {process.pid} printed no READY line within {timeout}s; log {log_path}:\n"
                + log_path.read_text(errors="replace")[-LOG_TAIL_CHARS:]
            )
        time.sleep(READY_POLL_S)


@contextmanager
def asyncmcp_server(
    transport: Transport,
    *,
    endpoint_url: str | None = None,
    request_queue_url: str | None = None,
    request_topic_arn: str | None = None,
    webhook_port: int = 0,
    extra_args: Sequence[str] = (),
    log_dir: Path | None = None,
    ready_timeout: float = READY_TIMEOUT_S,
    stop_timeout: float = STOP_TIMEOUT_S,
) -> Iterator[AsyncmcpServer]:
    """Run the asyncmcp fixture server until the block ends; yields once it printed READY.

    sqs: `request_queue_url` is the queue it reads. sns-sqs: `request_queue_url` is its queue subscribed to
    the clients' topic (`request_topic_arn`, checked if given). webhook: it listens on
    127.0.0.1:`webhook_port` (0: any free port; `.webhook_url` names it). Stopped with SIGTERM (it exits 0
    within about a second: its in-flight long poll is 1 s), then SIGKILL after `stop_timeout`. The log
    (stdout and stderr) is kept.
    """
    argv = asyncmcp_server_argv(
        transport,
        endpoint_url=endpoint_url,
        request_queue_url=request_queue_url,
        request_topic_arn=request_topic_arn,
        webhook_port=webhook_port,
        extra_args=extra_args,
    )
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f"asyncmcp-{transport}-", suffix=".log", dir=log_dir)
    os.close(fd)
    log_path = Path(name)
    with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **DUMMY_AWS_ENV},
            cwd=REPO_ROOT,
            start_new_session=True,
        )
    try:
        ready = _wait_for_ready(process, log_path, ready_timeout)
        yield AsyncmcpServer(transport, ready, process.pid, log_path, process)
    finally:
        stop_process(process, stop_timeout)


def asyncmcp_client_argv(
    transport: Transport,
    *,
    endpoint_url: str | None = None,
    sqs: SqsLayout | None = None,
    sns_sqs: SnsSqsLayout | None = None,
    server_url: str | None = None,
    response_queue: Queue | None = None,
    calls: int = 20,
    client_name: str | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """Arguments for `tests/fixtures/asyncmcp_client.py` (a layout names the queues and topics to use).

    `response_queue` overrides the layout's reply queue (sqs: a second client needs its own queue; sns-sqs:
    a queue subscribed to the layout's response topic).
    """
    argv = [str(require_asyncmcp_venv()), str(ASYNCMCP_CLIENT), "--transport", transport, "--region", REGION]
    argv += ["--calls", str(calls)]
    if client_name:
        argv += ["--client-name", client_name]
    if endpoint_url:
        argv += ["--endpoint-url", endpoint_url]
    if transport == "sqs":
        if sqs is None:
            raise ValueError("sqs needs an SqsLayout")
        reply = response_queue or sqs.responses
        argv += ["--request-queue-url", sqs.requests.url, "--response-queue-url", reply.url]
    elif transport == "sns-sqs":
        if sns_sqs is None:
            raise ValueError("sns-sqs needs an SnsSqsLayout")
        reply = response_queue or sns_sqs.client_queue
        argv += ["--request-topic-arn", sns_sqs.request_topic, "--response-topic-arn", sns_sqs.response_topic]
        argv += ["--response-queue-url", reply.url]
    else:
        if server_url is None:
            raise ValueError("webhook needs the server URL")
        argv += ["--server-url", server_url]
    return [*argv, *extra_args]


def start_asyncmcp_client(argv: Sequence[str]) -> subprocess.Popen[str]:
    """Start the asyncmcp client script (stdout: its JSON line; stderr: its log) without waiting."""
    return subprocess.Popen(
        list(argv),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **DUMMY_AWS_ENV},
        cwd=REPO_ROOT,
        start_new_session=True,
    )


def finish_asyncmcp_client(
    process: subprocess.Popen[str], timeout: float = CLIENT_TIMEOUT_S
) -> dict[str, Any]:
    """Wait for a client started with `start_asyncmcp_client`; its JSON result, or an error quoting stderr."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        stdout, stderr = process.communicate()
        raise AssertionError(
            f"asyncmcp client {process.pid} hung for {timeout}s; stderr:\n{stderr}"
        ) from None
    if process.returncode != 0:
        raise AssertionError(
            f"asyncmcp client exited with {process.returncode}; stderr:\n{stderr[-LOG_TAIL_CHARS:]}"
        )
    result: dict[str, Any] = json.loads(stdout.strip().splitlines()[-1])
    return result


def run_asyncmcp_client(argv: Sequence[str], timeout: float = CLIENT_TIMEOUT_S) -> dict[str, Any]:
    """Run asyncmcp's own client (argv from `asyncmcp_client_argv`) to completion; the JSON it prints."""
    return finish_asyncmcp_client(start_asyncmcp_client(argv), timeout)
