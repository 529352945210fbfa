"""SQS and SNS+SQS backends, on the wire exactly as asyncmcp 0.2.1's own client.

Requests go to the server's request queue (SQS) or request topic (SNS); replies for every session come
back on this sidecar's one reply queue, long-polled back to back (no pause after an empty poll),
demultiplexed by the `SessionId` attribute and deleted only after they were handed over. Body: one
JSON-RPC message. Attributes: MessageType, Timestamp (Number), RequestId and Method for requests, Method
for notifications, SessionId, ClientId, plus the configured extras. The reply address travels in
`initialize` params (`response_queue_url` or `client_topic_arn`), as asyncmcp servers expect.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final

import aioboto3
import anyio
from botocore.config import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError

from mcplane_sidecar.backends.async_link import AsyncLink, ReplyRouter, new_session_id
from mcplane_sidecar.backends.base import LinkOptions
from mcplane_sidecar.config import AwsConfig, QueueTuning, SnsBackendConfig, SqsBackendConfig
from mcplane_sidecar.errors import REQUEST_TOO_LARGE, BackendUnavailable, ProxyError
from mcplane_sidecar.jsonrpc import MalformedMessage, Message, dumps, is_request, method_of, parse_message
from mcplane_sidecar.metrics import Metrics

logger = logging.getLogger(__name__)

# SQS and SNS both cap a message (body plus attributes) at 256 KiB.
MAX_MESSAGE_BYTES: Final = 262_144
RECEIVE_BACKOFF_INITIAL: Final = 0.2
RECEIVE_BACKOFF_MAX: Final = 2.0
# Seconds an AWS call may take before the endpoint is reported unreachable (long polls add their wait).
CALL_TIMEOUT: Final = 10
SHUTDOWN_CLEANUP_TIMEOUT: Final = 5.0


class MessageTooLarge(ProxyError):
    code = REQUEST_TOO_LARGE
    http_status = 413


def message_attributes(
    message: Message, session_id: str, client_id: str, extra: dict[str, str]
) -> dict[str, dict[str, str]]:
    attributes = {
        "MessageType": {"DataType": "String", "StringValue": "jsonrpc"},
        "Timestamp": {"DataType": "Number", "StringValue": str(int(time.time()))},
    }
    method = method_of(message)
    if is_request(message):
        attributes["RequestId"] = {"DataType": "String", "StringValue": str(message["id"])}
    if method is not None:
        attributes["Method"] = {"DataType": "String", "StringValue": method}
    # Sent on initialize too: asyncmcp adopts a client-chosen id for the new session.
    attributes["SessionId"] = {"DataType": "String", "StringValue": session_id}
    attributes["ClientId"] = {"DataType": "String", "StringValue": client_id}
    for name, value in extra.items():
        attributes[name] = {"DataType": "String", "StringValue": value}
    return attributes


def encoded_size(body: str, attributes: dict[str, dict[str, str]]) -> int:
    size = len(body.encode())
    for name, value in attributes.items():
        size += len(name.encode()) + len(value["DataType"].encode()) + len(value["StringValue"].encode())
    return size


def decode_reply(raw: dict[str, Any]) -> tuple[str | None, Message]:
    """(session id, JSON-RPC message) of a received SQS message; SNS envelopes and raw delivery alike."""
    body = raw.get("Body", "")
    attributes = raw.get("MessageAttributes") or {}
    session_id = attributes.get("SessionId", {}).get("StringValue")
    try:
        outer = json.loads(body)
    except json.JSONDecodeError as exc:
        raise MalformedMessage(-32700, f"reply is not JSON: {exc}") from None
    if isinstance(outer, dict) and "Message" in outer and "Type" in outer:
        # An SNS envelope: the JSON-RPC text is inside; its attributes too (SQS's own win).
        envelope_attributes = outer.get("MessageAttributes") or {}
        session_id = session_id or envelope_attributes.get("SessionId", {}).get("Value")
        return session_id, parse_message(str(outer["Message"]).encode())
    return session_id, parse_message(body.encode())


@dataclass(frozen=True)
class QueueSettings:
    aws: AwsConfig
    sqs: SqsBackendConfig
    client_id: str
    extra_attributes: dict[str, str]
    # Names this sidecar replica: the default reply queue is mcplane-replies-<instance>.
    instance: str


class QueueBackend:
    """Shared by SQS and SNS+SQS: sessions, the reply reader, readiness. Subclasses say how to send."""

    kind = "sqs"

    def __init__(self, settings: QueueSettings, metrics: Metrics) -> None:
        self._aws = settings.aws
        self._sqs_config = settings.sqs
        self._tuning: QueueTuning = settings.sqs
        self._client_id = settings.client_id
        self._extra = dict(settings.extra_attributes)
        self._metrics = metrics
        self._instance = settings.instance
        self._router = ReplyRouter(metrics, self.kind)
        self._session: Any = aioboto3.Session()  # untyped at our boundary: one client per service
        self._sqs: Any = None
        self._reply_queue_url: str | None = settings.sqs.reply_queue_url
        self._created_queue = False
        self._reader_reason: str | None = "reply queue not reached yet (starting)"

    # --- lifecycle ---------------------------------------------------------------------------------

    def running(self) -> AbstractAsyncContextManager[None]:
        return self._running()

    @asynccontextmanager
    async def _running(self) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            self._sqs = await stack.enter_async_context(self._client("sqs"))
            await self._enter_extra_clients(stack)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._read_replies)
                try:
                    yield
                finally:
                    tg.cancel_scope.cancel()
            # Shielded but bounded: shutdown must not hang on an endpoint that is gone.
            with anyio.CancelScope(shield=True), anyio.move_on_after(SHUTDOWN_CLEANUP_TIMEOUT):
                await self._delete_created_queue()

    def _client(self, service: str) -> AbstractAsyncContextManager[Any]:
        config = BotoConfig(
            connect_timeout=CALL_TIMEOUT,
            read_timeout=CALL_TIMEOUT + self._tuning.wait_time_seconds,
            retries={"max_attempts": 2, "mode": "standard"},
        )
        client: AbstractAsyncContextManager[Any] = self._session.client(
            service, region_name=self._aws.region, endpoint_url=self._aws.endpoint_url, config=config
        )
        return client

    async def _enter_extra_clients(self, stack: AsyncExitStack) -> None:
        return None

    async def aclose(self) -> None:
        return None

    # --- sessions ----------------------------------------------------------------------------------

    def open_link(self, options: LinkOptions) -> AbstractAsyncContextManager[AsyncLink]:
        return self._open(options)

    @asynccontextmanager
    async def _open(self, options: LinkOptions) -> AsyncIterator[AsyncLink]:
        if self._reply_queue_url is None:
            raise BackendUnavailable(f"no reply queue yet: {self._reader_reason}")
        link = AsyncLink(new_session_id(), options, self._transmit, self._metrics, self.kind)
        async with self._router.registered(link.session_id, link):
            yield link
        # asyncmcp has no way to end a session over a queue; the server keeps it until it restarts.

    async def _transmit(self, link: AsyncLink, message: Message) -> None:
        if method_of(message) == "initialize":
            message = self._with_reply_address(message)
        body = dumps(message)
        attributes = message_attributes(message, link.session_id, self._client_id, self._extra)
        size = encoded_size(body, attributes)
        if size > MAX_MESSAGE_BYTES:
            raise MessageTooLarge(
                f"message of {size} bytes exceeds the {MAX_MESSAGE_BYTES}-byte limit of SQS/SNS; not sent"
            )
        try:
            await self._publish(body, attributes)
        except (BotoCoreError, ClientError) as exc:
            self._metrics.backend_errors.labels(kind=f"{self.kind}_send").inc()
            raise BackendUnavailable(f"{self.kind} send failed: {_describe(exc)}") from None
        link.note_sent(message)

    def _with_reply_address(self, message: Message) -> Message:
        params = dict(message.get("params") or {})
        params["response_queue_url"] = self._reply_queue_url
        return {**message, "params": params}

    async def _publish(self, body: str, attributes: dict[str, dict[str, str]]) -> None:
        url = self._sqs_config.request_queue_url
        await self._sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=attributes)
        self._metrics.async_sent.labels(backend=self.kind, destination=_short(url)).inc()

    # --- replies -----------------------------------------------------------------------------------

    async def _ensure_reply_queue(self) -> str:
        if self._reply_queue_url is None:
            name = self._sqs_config.reply_queue_name or f"mcplane-replies-{self._instance}"
            created = await self._sqs.create_queue(QueueName=name)
            self._reply_queue_url = str(created["QueueUrl"])
            self._created_queue = True
            logger.info("created reply queue %s", self._reply_queue_url)
        await self._prepare_reply_channel(self._reply_queue_url)
        return self._reply_queue_url

    async def _prepare_reply_channel(self, queue_url: str) -> None:
        return None

    def _reply_channel_lost(self) -> None:
        return None

    async def _delete_created_queue(self) -> None:
        if self._created_queue and self._reply_queue_url is not None:
            try:
                await self._sqs.delete_queue(QueueUrl=self._reply_queue_url)
                logger.info("deleted reply queue %s", self._reply_queue_url)
            except (BotoCoreError, ClientError) as exc:
                logger.warning("could not delete reply queue: %s", _describe(exc))

    async def _read_replies(self) -> None:
        """Long-poll back to back; dispatch, then delete; bounded backoff while the endpoint is down."""
        backoff = RECEIVE_BACKOFF_INITIAL
        queue_url: str | None = None
        while True:
            try:
                if queue_url is None:
                    queue_url = await self._ensure_reply_queue()
                    self._mark_reachable()
                received = await self._sqs.receive_message(
                    QueueUrl=queue_url,
                    MaxNumberOfMessages=self._tuning.max_messages,
                    WaitTimeSeconds=self._tuning.wait_time_seconds,
                    VisibilityTimeout=self._tuning.visibility_timeout,
                    MessageAttributeNames=["All"],
                )
            except (BotoCoreError, ClientError) as exc:
                if _queue_missing(exc) and self._created_queue:
                    # Our own queue vanished (the endpoint was reset): make it again, same name, same URL.
                    # The endpoint just answered, so soon: the server may already be sending replies.
                    logger.warning("reply queue %s is gone; creating it again", self._reply_queue_url)
                    queue_url = self._reply_queue_url = None
                    self._reply_channel_lost()
                    backoff = RECEIVE_BACKOFF_INITIAL
                reason = f"{self.kind} reply queue unreachable: {_describe(exc)}"
                if reason != self._reader_reason:
                    logger.warning(reason)
                self._reader_reason = reason
                self._metrics.async_receive_errors.labels(backend=self.kind).inc()
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, RECEIVE_BACKOFF_MAX)
                continue
            self._mark_reachable()
            backoff = RECEIVE_BACKOFF_INITIAL
            messages = received.get("Messages") or []
            if messages:
                await self._dispatch(queue_url, messages)

    def _mark_reachable(self) -> None:
        if self._reader_reason is not None:
            logger.info("%s reply queue reachable", self.kind)
        self._reader_reason = None

    async def _dispatch(self, queue_url: str, messages: list[dict[str, Any]]) -> None:
        source = _short(queue_url)
        handled = []
        for raw in messages:
            self._metrics.async_received.labels(backend=self.kind, source=source).inc()
            try:
                session_id, message = decode_reply(raw)
            except MalformedMessage as exc:
                logger.warning("dropped a malformed reply: %s", exc)
                self._metrics.dropped_messages.labels(reason="malformed").inc()
            else:
                self._router.route(session_id, message)
            handled.append({"Id": raw["MessageId"], "ReceiptHandle": raw["ReceiptHandle"]})
        try:
            # Deleted only now, after the hand-over: a crash before this point means redelivery, and
            # a duplicate reply finds its request already settled and is dropped.
            result = await self._sqs.delete_message_batch(QueueUrl=queue_url, Entries=handled)
            deleted = len(result.get("Successful") or [])
            self._metrics.async_deleted.labels(backend=self.kind, source=source).inc(deleted)
        except (BotoCoreError, ClientError) as exc:
            logger.warning(
                "could not delete %d replies (they will come again): %s", len(handled), _describe(exc)
            )

    # --- readiness ---------------------------------------------------------------------------------

    async def check_ready(self) -> str | None:
        if self._reader_reason is not None:
            return self._reader_reason
        try:
            await self._check_request_channel()
        except (BotoCoreError, ClientError) as exc:
            return f"{self.kind} request channel unavailable: {_describe(exc)}"
        return None

    async def _check_request_channel(self) -> None:
        await self._sqs.get_queue_attributes(
            QueueUrl=self._sqs_config.request_queue_url, AttributeNames=["QueueArn"]
        )


class SnsSqsBackend(QueueBackend):
    """Requests published to the server's topic; replies published by the server to ours, which the
    reply queue is subscribed to (envelope or raw delivery)."""

    kind = "sns-sqs"

    def __init__(self, settings: QueueSettings, metrics: Metrics, sns: SnsBackendConfig) -> None:
        super().__init__(settings, metrics)
        self._sns_config = sns
        self._sns: Any = None
        self._subscribed = False

    async def _enter_extra_clients(self, stack: AsyncExitStack) -> None:
        self._sns = await stack.enter_async_context(self._client("sns"))

    def _with_reply_address(self, message: Message) -> Message:
        params = dict(message.get("params") or {})
        params["client_topic_arn"] = self._sns_config.reply_topic_arn
        return {**message, "params": params}

    async def _publish(self, body: str, attributes: dict[str, dict[str, str]]) -> None:
        topic = self._sns_config.request_topic_arn
        await self._sns.publish(TopicArn=topic, Message=body, MessageAttributes=attributes)
        self._metrics.async_sent.labels(backend=self.kind, destination=_short(topic)).inc()

    async def _prepare_reply_channel(self, queue_url: str) -> None:
        if self._subscribed or not self._sns_config.subscribe_reply_queue:
            return
        topic = self._sns_config.reply_topic_arn
        found = await self._sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])
        queue_arn = found["Attributes"]["QueueArn"]
        policy = {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Service": "sns.amazonaws.com"},
                    "Action": "sqs:SendMessage",
                    "Resource": queue_arn,
                    "Condition": {"ArnEquals": {"aws:SourceArn": topic}},
                }
            ],
        }
        await self._sqs.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(policy)})
        raw = "true" if self._sns_config.raw_delivery else "false"
        await self._sns.subscribe(
            TopicArn=topic, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": raw}
        )
        self._subscribed = True
        logger.info("reply queue subscribed to %s (raw delivery: %s)", topic, raw)

    async def _check_request_channel(self) -> None:
        await self._sns.get_topic_attributes(TopicArn=self._sns_config.request_topic_arn)

    def _reply_channel_lost(self) -> None:
        self._subscribed = False  # a recreated queue needs its subscription again


MISSING_QUEUE_CODES: Final = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})


def _queue_missing(exc: BaseException) -> bool:
    return isinstance(exc, ClientError) and exc.response.get("Error", {}).get("Code") in MISSING_QUEUE_CODES


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return f"{error.get('Code', 'error')}: {error.get('Message', '')}".strip()
    return type(exc).__name__


def _short(address: str | None) -> str:
    """A queue URL or topic ARN shortened to its name: a bounded label value, no account ids."""
    if not address:
        return ""
    return address.rstrip("/").rsplit("/", 1)[-1].rsplit(":", 1)[-1]
