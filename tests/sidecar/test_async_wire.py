"""The asynchronous backends' wire format, checked piece by piece against ASYNCMCP-WIRE's description of
asyncmcp 0.2.1: attributes, the SNS envelope, size limits, and demultiplexing by session id."""

from __future__ import annotations

import json

import anyio
import pytest

from mcplane_sidecar.backends.async_link import AsyncLink, ReplyRouter, new_session_id
from mcplane_sidecar.backends.base import LinkOptions
from mcplane_sidecar.backends.queues import MAX_MESSAGE_BYTES, decode_reply, encoded_size, message_attributes
from mcplane_sidecar.jsonrpc import Message, dumps
from mcplane_sidecar.metrics import Metrics

REQUEST = {"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "echo"}}
NOTIFICATION = {"jsonrpc": "2.0", "method": "notifications/initialized"}


def test_request_attributes_match_asyncmcp_client() -> None:
    attributes = message_attributes(REQUEST, "s1", "client-a", {"Team": "blue"})
    assert attributes["MessageType"] == {"DataType": "String", "StringValue": "jsonrpc"}
    assert attributes["Timestamp"]["DataType"] == "Number"
    assert attributes["Timestamp"]["StringValue"].isdigit()
    assert attributes["RequestId"] == {"DataType": "String", "StringValue": "7"}
    assert attributes["Method"] == {"DataType": "String", "StringValue": "tools/call"}
    assert attributes["SessionId"] == {"DataType": "String", "StringValue": "s1"}
    assert attributes["ClientId"] == {"DataType": "String", "StringValue": "client-a"}
    assert attributes["Team"] == {"DataType": "String", "StringValue": "blue"}
    assert "ProtocolVersion" not in attributes  # asyncmcp's client never sends it


def test_notifications_carry_a_method_and_no_request_id() -> None:
    attributes = message_attributes(NOTIFICATION, "s1", "c", {})
    assert attributes["Method"]["StringValue"] == "notifications/initialized"
    assert "RequestId" not in attributes


def test_size_counts_body_and_attributes() -> None:
    body = dumps(REQUEST)
    attributes = message_attributes(REQUEST, "s1", "c", {})
    assert encoded_size(body, attributes) > len(body)
    big = "é" * (MAX_MESSAGE_BYTES // 2)  # two bytes each in UTF-8
    assert encoded_size(big, {}) == MAX_MESSAGE_BYTES


def test_raw_and_enveloped_replies_decode_alike() -> None:
    reply = {"jsonrpc": "2.0", "id": 7, "result": {"content": [{"type": "text", "text": "ünïcode"}]}}
    raw = {
        "Body": dumps(reply),
        "MessageAttributes": {"SessionId": {"DataType": "String", "StringValue": "s1"}},
    }
    envelope = {
        "Type": "Notification",
        "Message": dumps(reply),
        "MessageAttributes": {"SessionId": {"Type": "String", "Value": "s2"}},
    }
    assert decode_reply(raw) == ("s1", reply)
    assert decode_reply({"Body": json.dumps(envelope)}) == ("s2", reply)
    # SQS's own attribute wins over the envelope's.
    both = {"Body": json.dumps(envelope), "MessageAttributes": raw["MessageAttributes"]}
    assert decode_reply(both) == ("s1", reply)


async def test_router_delivers_by_session_and_drops_strangers() -> None:
    metrics = Metrics()
    router = ReplyRouter(metrics, "sqs")
    sent: list[Message] = []

    async def transmit(link: AsyncLink, message: Message) -> None:
        sent.append(message)

    first = AsyncLink(new_session_id(), LinkOptions(), transmit, metrics, "sqs")
    second = AsyncLink(new_session_id(), LinkOptions(), transmit, metrics, "sqs")
    assert first.session_id != second.session_id
    async with router.registered(first.session_id, first), router.registered(second.session_id, second):
        assert router.route(second.session_id, {"jsonrpc": "2.0", "id": 1, "result": {"to": "second"}})
        assert not router.route("someone-else", {"jsonrpc": "2.0", "id": 1, "result": {}})
        assert not router.route(None, {"jsonrpc": "2.0", "id": 1, "result": {}})
        with anyio.fail_after(5):
            received = await second.incoming.receive()
        assert received.message["result"] == {"to": "second"}
        with pytest.raises(anyio.WouldBlock):
            first.incoming.receive_nowait()
    assert len(router) == 0
    unknown = metrics.registry.get_sample_value(
        "mcplane_async_unknown_session_replies_total", {"backend": "sqs"}
    )
    assert unknown == 2
