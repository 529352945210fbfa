"""stdio front: one client on stdin/stdout, one backend session, messages pumped both ways unchanged."""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Callable
from typing import BinaryIO

import anyio
from anyio import AsyncFile

from mcplane_sidecar.backends.base import Backend, BackendLink, LinkOptions
from mcplane_sidecar.jsonrpc import MalformedMessage, dumps, error_response, parse_message

logger = logging.getLogger(__name__)

Emit = Callable[[str], Awaitable[None]]


async def serve_stdio(
    backend: Backend, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None
) -> None:
    """Relay until the client closes stdin."""
    reader = anyio.wrap_file(stdin or sys.stdin.buffer)
    writer = anyio.wrap_file(stdout or sys.stdout.buffer)
    write_lock = anyio.Lock()

    async def emit(text: str) -> None:
        async with write_lock:
            await writer.write((text + "\n").encode())
            await writer.flush()

    async with backend.open_link(LinkOptions(session_label="stdio")) as link, anyio.create_task_group() as tg:
        tg.start_soon(_pump_backend, link, emit)
        await _pump_client(reader, link, emit)
        tg.cancel_scope.cancel()


async def _pump_backend(link: BackendLink, emit: Emit) -> None:
    async for incoming in link.incoming:
        await emit(dumps(incoming.message))


async def _pump_client(reader: AsyncFile[bytes], link: BackendLink, emit: Emit) -> None:
    # readline in a worker thread: a plain read(n) on a pipe would wait for n bytes, not for a line.
    while line := await reader.readline():
        if not line.strip():
            continue
        try:
            message = parse_message(line)
        except MalformedMessage as exc:
            logger.warning("stdio client sent an invalid message: %s", exc)
            await emit(dumps(error_response(None, exc.code, str(exc))))
            continue
        await link.send(message)
