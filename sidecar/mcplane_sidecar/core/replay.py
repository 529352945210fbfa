"""One SSE stream's events, kept so a client can resume it with Last-Event-ID.

The core appends to a stream whether or not a client is reading (in the 2025 era a disconnect is not a
cancellation), and whoever holds the HTTP response follows it. Event ids name their stream, so a resumed
GET replays that stream only, never another's.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator

import anyio

from mcplane_sidecar.jsonrpc import Message

EVENT_ID_SEPARATOR = "."


class ReplayStream:
    __slots__ = ("_changed", "_events", "_next_seq", "closed", "stream_id")

    def __init__(self, stream_id: str, capacity: int) -> None:
        self.stream_id = stream_id
        # The newest `capacity` events stay; a resume from further back gets what is left.
        self._events: deque[tuple[int, Message]] = deque(maxlen=max(capacity, 1))
        self._next_seq = 1
        self._changed: anyio.Event | None = None
        self.closed = False

    def append(self, message: Message) -> None:
        if self.closed:
            return
        self._events.append((self._next_seq, message))
        self._next_seq += 1
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def event_id(self, seq: int) -> str:
        return f"{self.stream_id}{EVENT_ID_SEPARATOR}{seq}"

    def _wake(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def follow(self, after: int = 0) -> AsyncIterator[tuple[str, Message]]:
        """Events with a sequence number above `after`, then each new one, until the stream closes."""
        cursor = after
        while True:
            for seq, message in list(self._events):
                if seq > cursor:
                    cursor = seq
                    yield self.event_id(seq), message
            if self.closed and (not self._events or self._events[-1][0] <= cursor):
                return
            if self._changed is None:
                self._changed = anyio.Event()
            await self._changed.wait()


def parse_event_id(value: str) -> tuple[str, int] | None:
    stream_id, sep, seq = value.rpartition(EVENT_ID_SEPARATOR)
    if not sep or not seq.isdigit():
        return None
    return stream_id, int(seq)
