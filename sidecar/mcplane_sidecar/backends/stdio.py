"""Local stdio backend: one MCP server process per client session, newline-delimited JSON-RPC on its pipes.

A stdio server hosts exactly one MCP session, so every link has its own process (taken from the started
spares when one is ready, backends/stdio_spares.py, else started on demand, a few at a time through
backends/stdio_starts.py). The link relays raw messages (one JSON object per line, nothing re-modelled)
and keeps the process alive: if it dies, each request it had not answered is settled with an error
carrying that request's id, the process is started again after an exponential backoff, and the client's
own `initialize` (and `notifications/initialized`) is replayed under an internal id, so later requests
work without the client noticing.
"""

from __future__ import annotations

import copy
import enum
import json
import logging
import os
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager, nullcontext, suppress
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

import anyio
import anyio.to_thread
from anyio.abc import ByteReceiveStream, Process
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from mcplane_sidecar.backends.base import BackendMessage, LinkOptions
from mcplane_sidecar.backends.stdio_spares import WarmSpares
from mcplane_sidecar.backends.stdio_starts import StartGate, default_start_slots
from mcplane_sidecar.config import ENV_PREFIX, StdioBackendConfig
from mcplane_sidecar.errors import BACKEND_UNAVAILABLE, BackendClosed
from mcplane_sidecar.jsonrpc import (
    MalformedMessage,
    Message,
    RequestId,
    dumps,
    error_response,
    is_request,
    is_response,
    method_of,
    parse_message,
    request_id,
)
from mcplane_sidecar.metrics import Metrics

if TYPE_CHECKING:
    from mcplane_sidecar.backends.base import Backend, BackendLink

logger = logging.getLogger(__name__)

# A process that stayed up this long was healthy: its next crash restarts after the initial delay again.
STABLE_UPTIME: Final = 10.0
# How long past the scheduled restart a request waits for it before being refused.
RESTART_WAIT_MARGIN: Final = 1.0
# Shutdown follows the spec's stdio sequence (close stdin, wait, SIGTERM, SIGKILL), every wait bounded.
STOP_GRACE: Final = 2.0
TERM_GRACE: Final = 2.0
KILL_REAP_TIMEOUT: Final = 2.0
# After a process is seen dying, time to read what it wrote last (a response, a traceback) and its exit code.
EXIT_DRAIN_TIMEOUT: Final = 1.0
GROUP_POLL_INTERVAL: Final = 0.01
# Ids of the link's own replayed initialize; the response is swallowed before it reaches `incoming`.
REINIT_ID_PREFIX: Final = "mcplane-reinit-"
# One message per line, and MCP results can carry large binary content; beyond this a line is dropped
# rather than letting a server that never writes a newline grow our memory without bound.
MAX_LINE_BYTES: Final = 64 * 1024 * 1024
# Server output is kept to one line of log; a server that prints megabytes to stderr must not flood logs.
MAX_STDERR_LINE: Final = 4096
LOG_PREVIEW: Final = 200
# Bounded: a slow consumer stops us reading the server's stdout (backpressure) instead of growing memory.
INCOMING_BUFFER: Final = 64
READ_CHUNK: Final = 65536


class _State(enum.Enum):
    STARTING = "starting"  # spawning or re-initializing: sends wait
    UP = "up"
    DOWN = "down"  # between a death (or a failed start) and the next attempt: requests fail at once
    CLOSED = "closed"


class _LineBuffer:
    """Splits a byte stream into lines; a line longer than the limit is dropped whole."""

    def __init__(self, limit: int) -> None:
        self._buf = bytearray()
        self._limit = limit
        self._skipping = False
        self.dropped = 0

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._buf
        scan = len(buf)  # only the new chunk can hold a newline not seen yet
        buf += chunk
        lines: list[bytes] = []
        start = 0
        while (newline := buf.find(b"\n", max(scan, start))) >= 0:
            if self._skipping:
                self._skipping = False
            else:
                lines.append(bytes(buf[start:newline]))
            start = newline + 1
        del buf[:start]
        if len(buf) > self._limit:
            buf.clear()
            self._skipping = True
            self.dropped += 1
        return lines

    def rest(self) -> bytes:
        """What is left at end of stream: a last line written without its newline."""
        rest = b"" if self._skipping else bytes(self._buf)
        self._buf.clear()
        return rest


@dataclass(eq=False)
class _Run:
    """One started process of a link."""

    process: Process
    generation: int
    # Gives back the start slot this process was spawned under (None: a spare, whose slot the spares hold).
    release_start_slot: Callable[[], None] | None = None
    # Set at the first bytes on stdout: the process has started.
    spoke: anyio.Event = field(default_factory=anyio.Event)
    # Set when the process can no longer serve: it exited, closed stdout, or stopped reading stdin.
    gone: anyio.Event = field(default_factory=anyio.Event)
    stdout_closed: anyio.Event = field(default_factory=anyio.Event)
    stderr_closed: anyio.Event = field(default_factory=anyio.Event)
    gone_reason: str | None = None
    reinit_id: str | None = None
    reinit_response: Message | None = None
    reinit_answered: anyio.Event = field(default_factory=anyio.Event)

    def mark_gone(self, reason: str | None = None) -> None:
        if not self.gone.is_set():
            self.gone_reason = reason
            self.gone.set()


def _encode_line(message: Message) -> bytes:
    try:
        return (dumps(message) + "\n").encode()
    except UnicodeEncodeError:
        # A lone surrogate (a JSON "\ud800" escape) has no UTF-8 form; the escaped spelling is the same JSON.
        return (json.dumps(message, separators=(",", ":")) + "\n").encode()


def _describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        return f"backend process was killed by {name}"
    return f"backend process exited with code {returncode}"


def _preview(line: bytes) -> str:
    return line[:LOG_PREVIEW].decode(errors="replace")


async def _first_of(*events: anyio.Event) -> None:
    async with anyio.create_task_group() as tg:

        async def wait(event: anyio.Event) -> None:
            await event.wait()
            tg.cancel_scope.cancel()

        for event in events:
            tg.start_soon(wait, event)


async def _wait_exit(process: Process, grace: float) -> bool:
    with anyio.move_on_after(grace):
        await process.wait()
        return True
    return False


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # EPERM does not prove the group is gone
    return True


def _signal_group(pgid: int, signum: signal.Signals) -> None:
    with suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


async def _wait_group_gone(process: Process, grace: float) -> bool:
    """Wait for the leader, then for the rest of its group: nothing signals their deaths, so this polls."""
    with anyio.move_on_after(grace):
        await process.wait()
        while True:
            if not _group_alive(process.pid):
                return True
            await anyio.sleep(GROUP_POLL_INTERVAL)
    return False


async def _drain(stream: ByteReceiveStream | None) -> None:
    """Read and discard, so a server blocked writing to a full pipe can see its stdin close and exit."""
    if stream is None:
        return
    with suppress(anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
        while True:
            await stream.receive(READ_CHUNK)


async def _stop_process(process: Process, label: str) -> None:
    """Close stdin, wait; SIGTERM the process group, wait; SIGKILL it; reap. Every wait is bounded.

    The server runs in its own session (`start_new_session`), so its pid is its process group id and the
    signals reach helpers it started too (`npx` → `node`), even after the leader itself has exited.
    """
    pgid = process.pid
    with anyio.CancelScope(shield=True):
        async with anyio.create_task_group() as tg:
            tg.start_soon(_drain, process.stdout)
            tg.start_soon(_drain, process.stderr)
            if process.stdin is not None:
                with suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    await process.stdin.aclose()
            if not await _wait_exit(process, STOP_GRACE) or _group_alive(pgid):
                _signal_group(pgid, signal.SIGTERM)
                if not await _wait_group_gone(process, TERM_GRACE):
                    logger.warning(
                        "backend process %d ignored SIGTERM; killing it", pgid, extra={"session_id": label}
                    )
                    _signal_group(pgid, signal.SIGKILL)
                    if not await _wait_exit(process, KILL_REAP_TIMEOUT):
                        logger.error(
                            "backend process %d survived SIGKILL; abandoning it",
                            pgid,
                            extra={"session_id": label},
                        )
            tg.cancel_scope.cancel()
        with anyio.move_on_after(KILL_REAP_TIMEOUT):
            await process.aclose()


async def spawn_server(config: StdioBackendConfig) -> Process:
    """Start the configured server with pipes for stdin and stdout, in its own process group."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(ENV_PREFIX)}
    env.update(config.env)
    stderr: int | IO[Any] | None = {
        "log": subprocess.PIPE,
        "inherit": None,
        "discard": subprocess.DEVNULL,
    }[config.stderr]
    return await anyio.open_process(
        [config.command, *config.args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=stderr,
        cwd=config.cwd,
        env=env,
        # Own process group: the shutdown signals reach the server's children too.
        start_new_session=True,
    )


class StdioLink:
    """One client session's server process, restarted and re-initialized when it dies."""

    def __init__(
        self,
        config: StdioBackendConfig,
        metrics: Metrics,
        options: LinkOptions,
        *,
        reinit_timeout: float,
        starts: StartGate,
        spares: WarmSpares | None = None,
    ) -> None:
        self._config = config
        self._starts = starts
        self._spares = spares
        self._metrics = metrics
        self._label = options.session_label or "stdio"
        self._reinit_timeout = reinit_timeout
        send, receive = anyio.create_memory_object_stream[BackendMessage](INCOMING_BUFFER)
        self._incoming_send: MemoryObjectSendStream[BackendMessage] = send
        self._incoming: MemoryObjectReceiveStream[BackendMessage] = receive
        self._state = _State.STARTING
        self._state_changed = anyio.Event()
        self._next_delay = config.restart_initial_delay
        self._down_reason = "backend process is not running"
        self._run: _Run | None = None
        self._write_lock = anyio.Lock()
        # Client requests written to the current process and not answered yet.
        self._pending: set[RequestId] = set()
        # Server-to-client requests by process generation: a client's late answer must not reach a successor.
        self._server_requests: dict[RequestId, int] = {}
        # The client's handshake, kept to replay into a restarted process.
        self._initialize_sent: tuple[RequestId, Message] | None = None
        self._initialize: Message | None = None
        self._initialized: Message | None = None

    # --- BackendLink -------------------------------------------------------------------------------

    @property
    def incoming(self) -> MemoryObjectReceiveStream[BackendMessage]:
        return self._incoming

    @property
    def pid(self) -> int | None:
        """The current server process id, when one is running."""
        return self._run.process.pid if self._run is not None else None

    def listen(self) -> AbstractAsyncContextManager[None]:
        """Nothing to open: a stdio server's unsolicited messages come on stdout like everything else."""
        return nullcontext()

    async def send(self, message: Message) -> None:
        data = _encode_line(message)
        if self._state is _State.DOWN:
            # A restart is scheduled: wait for that one attempt rather than fail a call that could succeed
            # a moment later. A server that keeps dying still fails fast, at the backoff's pace.
            with anyio.move_on_after(self._next_delay + RESTART_WAIT_MARGIN):
                await self._state_changed.wait()
        while self._state is _State.STARTING:
            await self._state_changed.wait()
        if self._state is _State.CLOSED:
            raise BackendClosed("the stdio backend link is closed")
        run = self._run
        if self._state is _State.DOWN or run is None:
            await self._refuse(message)
            return
        rid = request_id(message)
        if is_request(message):
            if rid is not None:
                # Registered before the write: a fast answer must find it, and a death settles it.
                self._pending.add(rid)
                if method_of(message) == "initialize":
                    self._initialize_sent = (rid, copy.deepcopy(message))
        elif is_response(message):
            generation = self._server_requests.pop(rid, None) if rid is not None else None
            if generation is not None and generation != run.generation:
                logger.info(
                    "dropped an answer to a request of a backend process that has since died",
                    extra={"session_id": self._label},
                )
                return
        elif method_of(message) == "notifications/initialized":
            self._initialized = copy.deepcopy(message)
        await self._write(run, data)

    # --- process supervision -----------------------------------------------------------------------

    async def supervise(self) -> None:
        """Start the process, and start it again whenever it dies, until cancelled."""
        delay = self._config.restart_initial_delay
        generation = 0
        restart_reason: str | None = None
        while True:
            if restart_reason is not None:
                await anyio.sleep(delay)
                delay = min(delay * 2, self._config.restart_max_delay)
                self._metrics.backend_restarts.labels(reason=restart_reason).inc()
                self._set_state(_State.STARTING)
            generation += 1
            started_at = anyio.current_time()
            spare = self._spares.take() if self._spares is not None and generation == 1 else None
            release_start_slot = None if spare is not None else await self._starts.admit()
            try:
                process = spare or await spawn_server(self._config)
            except BaseException as exc:
                if release_start_slot is not None:
                    release_start_slot()
                if not isinstance(exc, (OSError, ValueError)):
                    raise  # cancelled mid-spawn: the link is closing
                reason = f"cannot start backend: {exc}"
                logger.warning("%s; retrying in %g s", reason, delay, extra={"session_id": self._label})
                self._metrics.backend_errors.labels(kind="spawn").inc()
                self._set_state(_State.DOWN, reason)
                self._next_delay = delay
                restart_reason = "start_failed"
                continue
            run = _Run(process, generation, release_start_slot)
            self._run = run
            try:
                restart_reason = await self._serve(run)
            finally:
                self._run = None
                if release_start_slot is not None:
                    release_start_slot()  # a no-op once the process was seen to start
                with anyio.CancelScope(shield=True):
                    await _stop_process(process, self._label)
            if anyio.current_time() - started_at >= STABLE_UPTIME:
                delay = self._config.restart_initial_delay
            self._next_delay = delay
            logger.warning(
                "%s; restarting in %g s", self._down_reason, delay, extra={"session_id": self._label}
            )

    async def _serve(self, run: _Run) -> str:
        """Relay for one process until it is gone; returns the restart reason for the metrics."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._read_stdout, run)
            tg.start_soon(self._watch_exit, run)
            if run.release_start_slot is not None:
                tg.start_soon(self._starts.hold_until_started, run.release_start_slot, run.process, run.spoke)
            if run.process.stderr is not None:
                tg.start_soon(self._log_stderr, run)
            else:
                run.stderr_closed.set()
            failure = await self._reinitialize(run) if self._initialize is not None else None
            if failure is None:
                self._set_state(_State.UP)
                await run.gone.wait()
            if run.gone.is_set():
                # Deliver what it wrote before dying (a last response must not turn into an error).
                with anyio.move_on_after(EXIT_DRAIN_TIMEOUT):
                    await run.stdout_closed.wait()
                    await run.process.wait()
                    await run.stderr_closed.wait()
            returncode = run.process.returncode
            if returncode is not None:
                reason, restart_reason = _describe_exit(returncode), "crash"
                self._metrics.backend_errors.labels(kind="crash").inc()
            elif failure is not None:
                reason, restart_reason = failure, "reinit_failed"
                self._metrics.backend_errors.labels(kind="reinit").inc()
            else:
                reason, restart_reason = run.gone_reason or "backend process closed its stdout", "crash"
                self._metrics.backend_errors.labels(kind="crash").inc()
            self._set_state(_State.DOWN, reason)
            tg.cancel_scope.cancel()
        unanswered, self._pending = self._pending, set()
        for rid in unanswered:
            await self._emit(error_response(rid, BACKEND_UNAVAILABLE, reason))
        return restart_reason

    async def _reinitialize(self, run: _Run) -> str | None:
        """Replay the client's handshake into a fresh process; None on success, else why it failed."""
        assert self._initialize is not None
        run.reinit_id = f"{REINIT_ID_PREFIX}{run.generation}"
        replay = {**self._initialize, "id": run.reinit_id}
        if not await self._write(run, _encode_line(replay)):
            return "backend process stopped reading during re-initialization"
        with anyio.move_on_after(self._reinit_timeout):
            await _first_of(run.reinit_answered, run.gone)
        response = run.reinit_response
        if response is None:
            if run.gone.is_set():
                return "backend process died during re-initialization"
            return f"backend did not answer the replayed initialize within {self._reinit_timeout:g} s"
        if "error" in response:
            error = response["error"]
            detail = error.get("message") if isinstance(error, dict) else error
            return f"backend refused the replayed initialize: {detail}"
        if self._initialized is not None and not await self._write(run, _encode_line(self._initialized)):
            return "backend process stopped reading during re-initialization"
        logger.info("backend process restarted and re-initialized", extra={"session_id": self._label})
        return None

    async def _watch_exit(self, run: _Run) -> None:
        await run.process.wait()
        run.mark_gone()

    async def _read_stdout(self, run: _Run) -> None:
        stdout = run.process.stdout
        assert stdout is not None
        lines = _LineBuffer(MAX_LINE_BYTES)
        try:
            while True:
                try:
                    chunk = await stdout.receive(READ_CHUNK)
                except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                    break
                run.spoke.set()
                dropped = lines.dropped
                for line in lines.feed(chunk):
                    await self._on_line(run, line)
                if lines.dropped != dropped:
                    self._metrics.backend_errors.labels(kind="bad_output").inc()
                    logger.error(
                        "backend wrote a line longer than %d bytes; dropped it",
                        MAX_LINE_BYTES,
                        extra={"session_id": self._label},
                    )
            await self._on_line(run, lines.rest())
        finally:
            run.stdout_closed.set()
            run.mark_gone("backend process closed its stdout")

    async def _on_line(self, run: _Run, line: bytes) -> None:
        if not line.strip():
            return
        try:
            message = parse_message(line)
        except MalformedMessage as exc:
            self._metrics.backend_errors.labels(kind="bad_output").inc()
            logger.warning(
                "backend wrote a stdout line that is not a JSON-RPC message (%s); skipped: %s",
                exc,
                _preview(line),
                extra={"session_id": self._label},
            )
            return
        rid = request_id(message)
        if is_response(message):
            if rid is not None and rid == run.reinit_id:
                run.reinit_response = message
                run.reinit_answered.set()
                return
            sent = self._initialize_sent
            if rid is not None and sent is not None and sent[0] == rid and "result" in message:
                self._initialize, self._initialize_sent = sent[1], None
        elif is_request(message) and rid is not None:
            self._server_requests[rid] = run.generation
        await self._emit(message)
        if rid is not None and is_response(message):
            # Only once delivered: if the process dies while this waits, the request is settled with an error.
            self._pending.discard(rid)

    async def _log_stderr(self, run: _Run) -> None:
        stderr = run.process.stderr
        assert stderr is not None
        lines = _LineBuffer(MAX_LINE_BYTES)
        try:
            while True:
                try:
                    chunk = await stderr.receive(READ_CHUNK)
                except (anyio.EndOfStream, anyio.ClosedResourceError, anyio.BrokenResourceError, OSError):
                    break
                for line in lines.feed(chunk):
                    self._log_stderr_line(line)
            self._log_stderr_line(lines.rest())
        finally:
            run.stderr_closed.set()

    def _log_stderr_line(self, line: bytes) -> None:
        text = line[:MAX_STDERR_LINE].decode(errors="replace").rstrip()
        if text:
            logger.info("backend stderr: %s", text, extra={"session_id": self._label})

    # --- helpers -----------------------------------------------------------------------------------

    async def _write(self, run: _Run, data: bytes) -> bool:
        stdin = run.process.stdin
        assert stdin is not None
        async with self._write_lock:
            # The process may have died (and been replaced) while we waited for the lock.
            if self._run is not run or run.gone.is_set():
                return False
            try:
                await stdin.send(data)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                run.mark_gone("backend process stopped reading its stdin")
                return False
        return True

    async def _refuse(self, message: Message) -> None:
        if is_request(message):
            await self._emit(error_response(request_id(message), BACKEND_UNAVAILABLE, self._down_reason))
        else:
            logger.warning(
                "%s; dropped %s",
                self._down_reason,
                method_of(message) or "a response",
                extra={"session_id": self._label},
            )

    async def _emit(self, message: Message) -> None:
        with suppress(anyio.ClosedResourceError, anyio.BrokenResourceError):
            await self._incoming_send.send(BackendMessage(message))

    def _set_state(self, state: _State, reason: str | None = None) -> None:
        self._state = state
        if reason is not None:
            self._down_reason = reason
        self._state_changed.set()
        self._state_changed = anyio.Event()

    def close(self) -> None:
        """Stop taking messages: waiting senders get BackendClosed, `incoming` ends."""
        self._set_state(_State.CLOSED)
        self._pending.clear()
        self._incoming_send.close()
        self._incoming.close()


class StdioBackend:
    """Runs the configured command once per link; nothing is shared between links."""

    kind: str = "stdio"

    def __init__(self, config: StdioBackendConfig, metrics: Metrics, *, request_timeout: float) -> None:
        self.config = config
        self.metrics = metrics
        # Also the deadline of a replayed initialize: a server that cannot answer it is not usable.
        self.request_timeout = request_timeout
        start_slots = config.max_concurrent_starts or default_start_slots()
        logger.info("stdio servers start at most %d at a time", start_slots)
        self.starts = StartGate(start_slots)
        metrics.stdio_starts_waiting.set_function(lambda: self.starts.waiting)  # read at scrape time
        self.spares = WarmSpares(
            partial(spawn_server, config),
            partial(_stop_process, label="spare"),
            gate=self.starts,
            count=config.warm_spares,
            initial_delay=config.restart_initial_delay,
            max_delay=config.restart_max_delay,
        )

    @asynccontextmanager
    async def open_link(self, options: LinkOptions) -> AsyncIterator[StdioLink]:
        link = StdioLink(
            self.config,
            self.metrics,
            options,
            reinit_timeout=self.request_timeout,
            starts=self.starts,
            spares=self.spares,
        )
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(link.supervise)
                try:
                    yield link
                finally:
                    # The supervisor stops its process in its own shielded finally as the cancel lands.
                    tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # The supervisor does not raise, so a lone exception is the caller's own: hand it back unwrapped.
            if len(group.exceptions) == 1:
                raise group.exceptions[0] from None
            raise
        finally:
            link.close()

    def running(self) -> AbstractAsyncContextManager[None]:
        return self.spares.running()

    async def check_ready(self) -> str | None:
        return await anyio.to_thread.run_sync(self._resolve_command)

    def _resolve_command(self) -> str | None:
        command = self.config.command
        if os.sep in command:
            path = Path(command)
            if not path.is_absolute() and self.config.cwd is not None:
                path = self.config.cwd / path  # Popen resolves a relative program against cwd
            if not path.is_file():
                return f"backend command {command} does not exist"
            if not os.access(path, os.X_OK):
                return f"backend command {command} is not executable"
            return None
        search_path = self.config.env.get("PATH", os.environ.get("PATH", os.defpath))
        if shutil.which(command, path=search_path) is None:
            return f"backend command {command} was not found on PATH"
        return None

    async def aclose(self) -> None:
        """Nothing shared to close: each process belongs to its link."""


if TYPE_CHECKING:

    def _conforms(backend: StdioBackend, link: StdioLink) -> tuple[Backend, BackendLink]:
        return backend, link
