"""A stdio MCP server (proxy_target's tools) that crashes a fixed time after it starts, until told not to.

    python -m bench.reliability._crashy_stdio --spawn-log FILE --crash-after 1.5 --healthy-flag FILE

Every start appends "<unix time> <pid>" to the spawn log, so the scenario counts starts independently of
the sidecar. When `--healthy-flag` names an existing file at crash time, the process lives on.
"""

from __future__ import annotations

import argparse
import os
import threading
import time
from pathlib import Path

CRASH_EXIT_CODE = 3


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--spawn-log", type=Path, required=True)
    parser.add_argument("--crash-after", type=float, required=True)
    parser.add_argument("--healthy-flag", type=Path, required=True)
    args = parser.parse_args()
    with args.spawn_log.open("a") as log:
        log.write(f"{time.time():.3f} {os.getpid()}\n")

    def maybe_crash() -> None:
        if not args.healthy_flag.exists():
            os._exit(CRASH_EXIT_CODE)  # no answer, no goodbye: what a segfault looks like from outside

    timer = threading.Timer(args.crash_after, maybe_crash)
    timer.daemon = True
    timer.start()

    from tests.fixtures.proxy_target import build_server  # noqa: PLC0415 (after the timer: imports are slow)

    build_server().run("stdio")


if __name__ == "__main__":
    main()
