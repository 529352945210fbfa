"""`make bench`: every benchmark in one run, then docs/benchmarks.md and its plots.

    .venv/bin/python bench/run_all.py [--quick] [--only sidecar|idle|async ...] [--report-only]

Runs, one after the other, each as its own process (each starts and stops its own subprocesses by PID):

1. `bench/sidecar_latency.py`: direct, mcplane and the peers (mcp-proxy 0.13, fastmcp's proxy), both eras;
   sequential latency, throughput and latency at 1, 20 and 100 sessions, CPU and peak RSS, set-up time;
2. `bench/idle_sessions.py`: memory per idle session at 1,000 and 10,000 sessions;
3. `bench/async_latency.py`: mcplane against asyncmcp's own client and proxy on moto, 1 and 50 sessions.

Then `bench/report.py` writes the report from their JSON (in `--out`, default bench/results). A benchmark
that fails is reported as missing; the others still run. `--quick` makes every size smaller (a smoke run of
about 4 minutes, not for the published figures). On Ctrl-C or SIGTERM the running benchmark gets SIGTERM
(it then stops what it started) and this script exits.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType
from typing import Final

BENCH: Final = Path(__file__).resolve().parent
REPO_ROOT: Final = BENCH.parent
PYTHON: Final = sys.executable
# How long a benchmark may take to stop its own processes (a sidecar holding 10,000 sessions drains).
CHILD_STOP_TIMEOUT_S: Final = 120.0

FULL: Final[dict[str, list[str]]] = {
    "sidecar": ["--calls", "1000", "--setups", "10", "--duration", "3"],
    "idle": ["--sizes", "1000", "--sizes", "10000"],
    # 300 sequential calls, not the script's 150: a median near 26 ms over SQS moved by several ms between
    # runs of 150 (the asyncmcp server sleeps 0.05 s after each empty long poll). 50 sessions x 5 calls.
    "async": ["--calls", "300"],
}
QUICK: Final[dict[str, list[str]]] = {
    "sidecar": ["--calls", "200", "--setups", "3", "--duration", "1", "--sessions", "1", "--sessions", "20"],
    "idle": ["--sizes", "200", "--sizes", "1000"],
    "async": ["--calls", "40", "--setups", "2", "--sessions", "20", "--transport", "sqs"],
}
SCRIPTS: Final = {"sidecar": "sidecar_latency.py", "idle": "idle_sessions.py", "async": "async_latency.py"}


class Stopped(Exception):
    """SIGTERM or Ctrl-C arrived."""


def on_signal(signum: int, _frame: FrameType | None) -> None:
    raise Stopped(signal.Signals(signum).name)


def run_child(argv: Sequence[str]) -> int:
    """Run one benchmark; on a signal, pass SIGTERM to it (by PID) and wait for it to clean up."""
    print(f"$ {' '.join(argv)}", file=sys.stderr, flush=True)
    child = subprocess.Popen(argv, cwd=REPO_ROOT)
    try:
        return child.wait()
    except (Stopped, KeyboardInterrupt):
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=CHILD_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        raise


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="smaller sizes everywhere (a smoke run)")
    parser.add_argument(
        "--only", choices=sorted(SCRIPTS), action="append", help="run only these (repeatable)"
    )
    parser.add_argument("--report-only", action="store_true", help="only rewrite the report from the JSON")
    parser.add_argument("--out", type=Path, default=BENCH / "results", help="results directory")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, on_signal)
    sizes = QUICK if args.quick else FULL
    failed: list[str] = []
    started = time.perf_counter()
    try:
        if not args.report_only:
            for name in args.only or list(SCRIPTS):
                code = run_child([PYTHON, str(BENCH / SCRIPTS[name]), *sizes[name], "--out", str(args.out)])
                if code != 0:
                    failed.append(f"{SCRIPTS[name]} (exit {code})")
        code = run_child([PYTHON, str(BENCH / "report.py"), "--results", str(args.out)])
        if code != 0:
            failed.append(f"report.py (exit {code})")
    except (Stopped, KeyboardInterrupt):
        print("interrupted; the running benchmark was stopped", file=sys.stderr)
        return 130
    print(f"all benchmarks: {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
