"""proxy_target's MCP server over stdio, for the benchmark's stdio targets: `python stdio_target.py PID_FILE`.

It first appends its PID to PID_FILE (one line per started server, so the run can count them), then
serves. It is kept apart from sidecar_latency.py so that each server a proxy starts imports what a plain
SDK server imports (about 0.8 s of CPU here), not the benchmark's own client libraries as well.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # for tests.fixtures, when run as a script

from tests.fixtures.proxy_target import build_server  # noqa: E402


def main() -> None:
    with Path(sys.argv[1]).open("a") as out:
        out.write(f"{os.getpid()}\n")
    build_server().run("stdio")


if __name__ == "__main__":
    main()
