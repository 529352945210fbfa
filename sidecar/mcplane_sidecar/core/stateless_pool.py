"""2026-07-28 requests passed natively to backends whose wire has no per-request streams (stdio).

Over stdio nothing says which request a notification belongs to, so each pooled backend process serves
one request at a time: everything it says meanwhile is that request's. Processes stay warm between
requests, up to `size` run at once, and ids travel unchanged. A request the client abandons is cancelled
on the backend and its process retired, so nothing it says later can reach another client.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Final

import anyio
from anyio.abc import TaskGroup, TaskStatus
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from mcplane_sidecar.backends.base import Backend, BackendLink, LinkOptions
from mcplane_sidecar.errors import BACKEND_TIMEOUT, BackendUnavailable
from mcplane_sidecar.jsonrpc import Message, RequestId, error_response, is_response, request_id

logger = logging.getLogger(__name__)

DISCOVER_PROBE: Final[Message] = {
    "jsonrpc": "2.0",
    "id": "mcplane-discover",
    "method": "server/discover",
    "params": {
        "_meta": {
            "io.modelcontextprotocol/protocolVersion": "2026-07-28",
            "io.modelcontextprotocol/clientCapabilities": {},
        }
    },
}
PROBE_TIMEOUT: Final = 10.0


@dataclass(eq=False)
class _Job:
    message: Message
    replies: MemoryObjectSendStream[Message]
    abandoned: anyio.Event = field(default_factory=anyio.Event)


@dataclass(eq=False)
class _Member:
    number: int
    jobs: MemoryObjectSendStream[_Job]


class PooledRequest:
    """One stateless request in flight on a pooled process: its messages, and a way to abandon it."""

    def __init__(self, job: _Job, replies: MemoryObjectReceiveStream[Message]) -> None:
        self._job = job
        self._replies = replies

    async def messages(self) -> AsyncIterator[Message]:
        async with self._replies:
            async for message in self._replies:
                yield message

    async def cancel(self) -> None:
        self._job.abandoned.set()


class StatelessPool:
    def __init__(self, backend: Backend, *, size: int, request_timeout: float) -> None:
        self._backend = backend
        self._slots = anyio.Semaphore(size)
        self._idle: list[_Member] = []
        self._numbers = 0
        self._request_timeout = request_timeout
        self._tg: TaskGroup | None = None
        self._modern: bool | None = None
        self._probe_lock = anyio.Lock()

    @asynccontextmanager
    async def run(self) -> AsyncIterator[None]:
        async with anyio.create_task_group() as tg:
            self._tg = tg
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
                self._tg = None

    async def speaks_modern(self) -> bool:
        """Ask once, with `server/discover` on a pooled process, whether the server serves this era."""
        async with self._probe_lock:
            if self._modern is None:
                answer: Message | None = None
                pooled = await self.submit(DISCOVER_PROBE)
                with anyio.move_on_after(PROBE_TIMEOUT):
                    async for message in pooled.messages():
                        answer = message
                self._modern = answer is not None and isinstance(answer.get("result"), dict)
                logger.info(
                    "stdio backend %s 2026-07-28 itself", "speaks" if self._modern else "does not speak"
                )
            return self._modern

    async def submit(self, message: Message) -> PooledRequest:
        if self._tg is None:
            raise BackendUnavailable("the stateless pool is not running")
        with anyio.fail_after(self._request_timeout):
            await self._slots.acquire()
        try:
            member = self._idle.pop() if self._idle else await self._tg.start(self._run_member)
        except BaseException:
            self._slots.release()
            raise
        send, receive = anyio.create_memory_object_stream[Message](math.inf)
        job = _Job(message, send)
        await member.jobs.send(job)
        return PooledRequest(job, receive)

    async def _run_member(self, *, task_status: TaskStatus[_Member]) -> None:
        self._numbers += 1
        number = self._numbers
        jobs_send, jobs = anyio.create_memory_object_stream[_Job](1)
        member = _Member(number, jobs_send)
        reusable = True
        async with self._backend.open_link(LinkOptions(session_label=f"stateless-{number}")) as link, jobs:
            task_status.started(member)
            async for job in jobs:
                try:
                    reusable = await self._serve(link, job)
                finally:
                    self._slots.release()
                if not reusable:
                    logger.info("retiring pooled backend process %d after an abandoned request", number)
                    return
                self._idle.append(member)

    async def _serve(self, link: BackendLink, job: _Job) -> bool:
        """Relay one request; False when the process may still talk about it and must not be reused."""
        rid = request_id(job.message)
        settled = anyio.Event()

        async def relay() -> None:
            async for incoming in link.incoming:
                message = incoming.message
                if is_response(message) and message.get("id") != rid:
                    continue  # a straggler from an earlier request; it belongs to nobody now
                try:
                    await job.replies.send(message)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    job.abandoned.set()
                    return
                if is_response(message):
                    settled.set()
                    return

        with job.replies:
            async with anyio.create_task_group() as tg:
                tg.start_soon(relay)
                await link.send(job.message)
                if rid is None:
                    tg.cancel_scope.cancel()
                    return True
                with anyio.move_on_after(self._request_timeout) as deadline:
                    await _first_of(settled, job.abandoned)
                tg.cancel_scope.cancel()
            if settled.is_set():
                return True
            if deadline.cancelled_caught and rid is not None:
                await _notify_timeout(job, rid, self._request_timeout)
        await link.send(
            {
                "jsonrpc": "2.0",
                "method": "notifications/cancelled",
                "params": {"requestId": rid, "reason": "the client went away"},
            }
        )
        return False


async def _first_of(*events: anyio.Event) -> None:
    async with anyio.create_task_group() as tg:

        async def wait(event: anyio.Event) -> None:
            await event.wait()
            tg.cancel_scope.cancel()

        for event in events:
            tg.start_soon(wait, event)


async def _notify_timeout(job: _Job, rid: RequestId, waited: float) -> None:
    try:
        await job.replies.send(
            error_response(rid, BACKEND_TIMEOUT, f"backend did not answer within {waited:g} s")
        )
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        logger.debug("client gone before its timeout error")
