"""Reading a `text/event-stream` body as server-sent events (the WHATWG "event stream interpretation").

The backend's answers arrive over aiohttp (backends/upstream.py), which has no event-stream client of its
own, and the maintained SSE parsers are tied to other HTTP clients; so the few rules live here. Lines end
in CRLF, LF or CR, even split across reads; a blank line ends an event; the last event id persists.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Final

import aiohttp

BOM: Final = b"\xef\xbb\xbf"


class EventStreamError(Exception):
    """The stream broke the rules in a way the reader cannot go on from (an event over the size limit)."""


@dataclass(frozen=True, slots=True)
class ServerSentEvent:
    data: str
    event: str = "message"
    id: str | None = None  # the last event id seen so far on this stream, as the spec keeps it
    retry: int | None = None  # milliseconds, when this event set it


class EventStreamDecoder:
    """Bytes in, whole events out; holds at most `max_event_size` bytes of an unfinished event."""

    def __init__(self, max_event_size: int) -> None:
        self._max_event_size = max_event_size
        self._partial_line = bytearray()
        self._skip_lf = False  # the previous read ended in CR: an LF first in this one belongs to it
        self._first_line = True
        self._data: list[str] = []
        self._event_size = 0
        self._event_type = ""
        self._last_event_id: str | None = None
        self._retry: int | None = None
        self._has_fields = False

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        if self._skip_lf and chunk.startswith(b"\n"):
            chunk = chunk[1:]
        if not chunk:
            return []
        self._skip_lf = chunk.endswith(b"\r")
        if b"\n" not in chunk and b"\r" not in chunk:
            # Mid-line (a large event arrives in many reads): only collect, so the work stays linear.
            self._partial_line += chunk
            self._check_size()
            return []
        text = bytes(self._partial_line) + chunk
        *lines, rest = text.replace(b"\r\n", b"\n").replace(b"\r", b"\n").split(b"\n")
        self._partial_line = bytearray(rest)
        events = [event for line in lines if (event := self._take_line(line)) is not None]
        self._check_size()
        return events

    def _take_line(self, line: bytes) -> ServerSentEvent | None:
        if self._first_line:
            self._first_line = False
            line = line.removeprefix(BOM)
        if not line:
            return self._dispatch()
        if line.startswith(b":"):
            return None  # a comment (keep-alives are sent this way)
        name, _, value = line.partition(b":")
        value = value.removeprefix(b" ")
        if name == b"data":
            self._data.append(value.decode("utf-8", "replace"))
            self._event_size += len(value) + 1
        elif name == b"event":
            self._event_type = value.decode("utf-8", "replace")
        elif name == b"id":
            if b"\0" not in value:
                self._last_event_id = value.decode("utf-8", "replace")
        elif name == b"retry":
            if value.isdigit():
                self._retry = int(value)
        else:
            return None  # unknown fields are ignored
        self._has_fields = True
        return None

    def _dispatch(self) -> ServerSentEvent | None:
        if not self._has_fields:
            return None
        event = ServerSentEvent(
            data="\n".join(self._data),
            event=self._event_type or "message",
            id=self._last_event_id,
            retry=self._retry,
        )
        self._data = []
        self._event_size = 0
        self._event_type = ""
        self._retry = None
        self._has_fields = False
        return event

    def _check_size(self) -> None:
        if self._event_size + len(self._partial_line) > self._max_event_size:
            raise EventStreamError(f"an event is larger than {self._max_event_size} bytes")


async def read_events(
    response: aiohttp.ClientResponse, *, max_event_size: int
) -> AsyncGenerator[ServerSentEvent]:
    """The response's events as they arrive; close the generator to stop reading early."""
    decoder = EventStreamDecoder(max_event_size)
    async for chunk in response.content.iter_any():
        for event in decoder.feed(chunk):
            yield event
