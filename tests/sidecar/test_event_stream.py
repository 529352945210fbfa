"""The event-stream decoder against the WHATWG parsing rules, fed the way a socket delivers bytes."""

from __future__ import annotations

import pytest

from mcplane_sidecar.backends.event_stream import EventStreamDecoder, EventStreamError, ServerSentEvent

LIMIT = 1024 * 1024


def decode(*chunks: bytes, limit: int = LIMIT) -> list[ServerSentEvent]:
    decoder = EventStreamDecoder(limit)
    return [event for chunk in chunks for event in decoder.feed(chunk)]


def byte_by_byte(stream: bytes) -> list[bytes]:
    return [stream[i : i + 1] for i in range(len(stream))]


def test_fields_of_an_mcp_answer() -> None:
    events = decode(b'id: 7\nevent: message\ndata: {"jsonrpc":"2.0","id":1,"result":{}}\n\n')
    assert events == [ServerSentEvent(data='{"jsonrpc":"2.0","id":1,"result":{}}', id="7")]


@pytest.mark.parametrize("newline", [b"\n", b"\r\n", b"\r"])
def test_every_line_ending_in_any_split(newline: bytes) -> None:
    stream = newline.join([b"id: 1", b"data: first", b"data: second", b"", b"data: third", b"", b""])
    expected = [
        ServerSentEvent(data="first\nsecond", id="1"),
        ServerSentEvent(data="third", id="1"),  # the last event id carries over
    ]
    assert decode(stream) == expected
    assert decode(*byte_by_byte(stream)) == expected
    for cut in range(1, len(stream)):
        assert decode(stream[:cut], stream[cut:]) == expected, cut


def test_a_crlf_split_across_reads_is_one_line_end() -> None:
    assert decode(b"data: a\r", b"\n\r", b"\ndata: b\r\n\r\n") == [
        ServerSentEvent(data="a"),
        ServerSentEvent(data="b"),
    ]


def test_comments_unknown_fields_and_bom() -> None:
    events = decode(b"\xef\xbb\xbf: keep-alive\nfoo: bar\ndata\n\n:\n\ndata:no space\n\n")
    assert events == [ServerSentEvent(data=""), ServerSentEvent(data="no space")]


def test_priming_event_retry_and_id_rules() -> None:
    events = decode(b"id: p-1\nretry: 2500\ndata:\n\nretry: soon\nid: bad\0id\ndata: x\n\nid\ndata: y\n\n")
    assert events == [
        ServerSentEvent(data="", id="p-1", retry=2500),  # the priming event: an id and no data
        ServerSentEvent(data="x", id="p-1"),  # a non-numeric retry and an id with NUL are ignored
        ServerSentEvent(data="y", id=""),  # a bare `id` resets the last event id
    ]


def test_an_unfinished_event_is_not_dispatched() -> None:
    decoder = EventStreamDecoder(LIMIT)
    assert decoder.feed(b"data: half") == []
    assert decoder.feed(b" and the rest\n") == []
    assert decoder.feed(b"\n") == [ServerSentEvent(data="half and the rest")]


def test_utf8_split_across_reads() -> None:
    stream = "data: héllo ☃ 日本語\n\n".encode()
    assert decode(*byte_by_byte(stream)) == [ServerSentEvent(data="héllo ☃ 日本語")]


def test_an_event_over_the_limit_is_refused_even_without_line_ends() -> None:
    decoder = EventStreamDecoder(100)
    decoder.feed(b"data: " + b"x" * 60)
    with pytest.raises(EventStreamError):
        decoder.feed(b"x" * 60)
    with pytest.raises(EventStreamError):
        decode(b"data: " + b"y" * 60 + b"\n", b"data: " + b"y" * 60 + b"\n", limit=100)
    assert decode(b"data: " + b"z" * 90 + b"\n\n", b"data: " + b"z" * 90 + b"\n\n", limit=100) == [
        ServerSentEvent(data="z" * 90),
        ServerSentEvent(data="z" * 90),
    ]
