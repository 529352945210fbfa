"""Running the sidecar: uvicorn for HTTP with a SIGTERM drain, or the stdio pump."""

from __future__ import annotations

import gc
import logging
import signal
import socket
import time
from types import FrameType
from typing import Final

import anyio
import uvicorn

from mcplane_sidecar.app import Sidecar, create_app
from mcplane_sidecar.config import SidecarConfig
from mcplane_sidecar.front.stdio_front import serve_stdio

logger = logging.getLogger(__name__)

# Long-lived GET streams never finish on their own; after the drain they get this long to close.
STREAM_CLOSE_GRACE = 1
# What a request allocates and drops is freed by reference counting; CPython's young-generation collections
# are triggered by how many container objects are alive at once. With 20 requests in flight the default
# threshold (700) ran one every ~15 requests at ~300 us each, ~20 us per request; at this threshold a steady
# load runs without any, and real garbage (reference cycles) is still collected (docs/performance.md).
YOUNG_GENERATION_THRESHOLD: Final = 20_000


class DrainingServer(uvicorn.Server):
    """First SIGTERM: stop admitting sessions, let in-flight requests finish (up to the drain timeout),
    then shut down and exit 0. A second signal exits at once."""

    def __init__(self, config: uvicorn.Config, sidecar: Sidecar, drain_timeout: float) -> None:
        super().__init__(config)
        self.sidecar = sidecar
        self.drain_timeout = drain_timeout
        self._drain_started: float | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        freeze_startup_objects()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._drain_started is not None or sig == signal.SIGINT:
            super().handle_exit(sig, frame)
            return
        self._drain_started = time.monotonic()
        self.sidecar.registry.draining = True
        logger.info(
            "draining: no new sessions; waiting for %d in-flight requests (up to %g s)",
            self.sidecar.registry.inflight,
            self.drain_timeout,
        )

    async def on_tick(self, counter: int) -> bool:
        if self._drain_started is not None and not self.should_exit:
            elapsed = time.monotonic() - self._drain_started
            if self.sidecar.registry.inflight == 0 or elapsed >= self.drain_timeout:
                logger.info(
                    "drain finished after %.1f s with %d requests still in flight",
                    elapsed,
                    self.sidecar.registry.inflight,
                )
                self.should_exit = True
        return await super().on_tick(counter)


def freeze_startup_objects() -> None:
    """Keep what start-up built (modules, config, pools: over 100,000 objects) out of the garbage collector.

    CPython's full collections walk every tracked object: under load they ran every ~6 s and paused every
    request in flight for 65-94 ms; frozen, they take 0.5-5 ms (docs/performance.md). Objects that live for
    the whole process gain nothing from being walked. Collect first so no garbage is frozen with them.
    Then raise the young generation's threshold, so requests in flight stop triggering collections."""
    gc.collect()
    gc.freeze()
    _, middle, old = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, middle, old)


def run_http(config: SidecarConfig) -> None:
    app = create_app(config)
    sidecar: Sidecar = app.state.sidecar
    uv_config = uvicorn.Config(
        app,
        host=config.server.host,
        port=config.server.port,
        log_config=None,
        access_log=False,
        # Nothing here reads the peer's address or scheme; rewriting them from X-Forwarded-* on every request
        # would be work for nothing.
        proxy_headers=False,
        timeout_graceful_shutdown=STREAM_CLOSE_GRACE,
        lifespan="on",
    )
    DrainingServer(uv_config, sidecar, config.drain_timeout).run()


def run_stdio(config: SidecarConfig) -> None:
    sidecar = Sidecar(config)

    async def main() -> None:
        async with sidecar.running():
            freeze_startup_objects()
            await serve_stdio(sidecar.backend)

    anyio.run(main)
