"""Run the MCP conformance suite's server scenarios against a URL and read back which scenarios passed.

Three legs, each a separate run of the suite under Node 22:

    stable            conformance 0.1.16                    (handshake era only)
    alpha-2025-11-25  0.2.0-alpha.12 --spec-version 2025-11-25
    alpha-2026-07-28  0.2.0-alpha.12 --spec-version 2026-07-28 (stateless era)

Each run passes `--suite all` by default: the suite's default ("active") leaves out the scenarios still marked
pending (json-schema-2020-12, server-sse-polling, the two http-header ones) and, in the alpha, everything
introduced by 2026-07-28 (its draft revision). Scenario counts for a correct server, active / all: stable
30 / 32, alpha-2025-11-25 31 / 33, alpha-2026-07-28 20 / 40.
Extension scenarios (tasks-*, sep-2640-*) are not on the spec timeline, so `--spec-version` leaves them out.

Verdicts come from the `-o` directory: one `server-<scenario>-<timestamp>/checks.json` per scenario, failing
when any check has status FAILURE (WARNING and INFO do not fail, as in the suite's own summary). The stdout
summary (`✓ name: …` / `✗ name: …`) is cross-checked: a scenario that crashed has a `✗` line but no
checks.json and counts as failed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import anyio.to_thread

from tests.support.processes import CONFORMANCE_ALPHA, CONFORMANCE_STABLE, NODE22

Leg = Literal["stable", "alpha-2025-11-25", "alpha-2026-07-28"]
LEGS: tuple[Leg, ...] = ("stable", "alpha-2025-11-25", "alpha-2026-07-28")
Suite = Literal["all", "active", "pending"]

# Measured for the Python SDK's fixture server, bare (docs/MCP-PROTOCOL.md): the floor for any target. These
# are the default-suite figure for stable and the `--suite all` figures for alpha; `--suite all` on stable
# gives 32.
BASELINE_PASSED: Mapping[Leg, int] = {"stable": 30, "alpha-2025-11-25": 33, "alpha-2026-07-28": 40}

_LEG_ARGS: Mapping[Leg, tuple[Path, tuple[str, ...]]] = {
    "stable": (CONFORMANCE_STABLE, ()),
    "alpha-2025-11-25": (CONFORMANCE_ALPHA, ("--spec-version", "2025-11-25")),
    "alpha-2026-07-28": (CONFORMANCE_ALPHA, ("--spec-version", "2026-07-28")),
}
# `server-<scenario>-<new Date().toISOString() with ':' and '.' turned into '-'>`
_RESULT_DIR = re.compile(r"^server-(?P<scenario>.+)-\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}-\d{3}Z$")
_SUMMARY_LINE = re.compile(
    r"^(?P<mark>[✓✗]) (?P<scenario>\S+): (?P<passed>\d+) passed, (?P<failed>\d+) failed$"
)
_RUNNING_LINE = re.compile(r"^Running \S+ suite \((?P<count>\d+) scenarios\)")


class ConformanceRunError(RuntimeError):
    """The suite could not be run to completion (timeout, missing Node or package)."""


@dataclass(frozen=True)
class ConformanceResult:
    """What one run of the suite said about each scenario, plus the raw output for assertion messages."""

    leg: Leg
    argv: tuple[str, ...]
    returncode: int
    duration_s: float
    passed: tuple[str, ...]
    failed: tuple[str, ...]
    # Scenarios that produced no verdict (not applicable at this spec version).
    skipped: tuple[str, ...]
    # The suite's announced scenario count ("Running all suite (N scenarios)"); None if it never got that far.
    announced: int | None
    # scenario -> "check-id: message" for every FAILURE check, and the same for WARNING checks.
    failures: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    warnings: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    output: str = ""

    @property
    def ok(self) -> bool:
        """Nothing failed, every announced scenario has a verdict, and the suite itself exited 0."""
        complete = self.announced is None or len(self.passed) + len(self.failed) == self.announced
        return not self.failed and complete and self.returncode == 0

    def describe(self, output_tail: int = 6000) -> str:
        """A readable account for an assertion message: counts, failed checks, the end of the output."""
        lines = [
            f"conformance leg {self.leg}: {len(self.passed)} passed, {len(self.failed)} failed, "
            f"{len(self.skipped)} skipped, announced {self.announced}, exit {self.returncode}, "
            f"{self.duration_s:.1f}s",
            "command: " + " ".join(self.argv),
        ]
        for scenario in self.failed:
            lines.append(f"FAILED {scenario}")
            lines.extend(f"    {detail}" for detail in self.failures.get(scenario, ("(no checks.json)",)))
        lines.append("--- suite output (tail) ---")
        lines.append(self.output[-output_tail:])
        return "\n".join(lines)


def conformance_argv(
    url: str, leg: Leg, out_dir: Path, *, suite: Suite = "all", scenario: str | None = None
) -> list[str]:
    """The exact command line for one leg."""
    entry, leg_args = _LEG_ARGS[leg]
    argv = [os.fspath(NODE22), os.fspath(entry), "server", "--url", url, *leg_args, "-o", os.fspath(out_dir)]
    argv += ["--scenario", scenario] if scenario is not None else ["--suite", suite]
    return argv


def run_conformance(
    url: str,
    leg: Leg,
    out_dir: Path,
    timeout: float,
    *,
    suite: Suite = "all",
    scenario: str | None = None,
    extra_args: Sequence[str] = (),
) -> ConformanceResult:
    """Run one leg of the suite against `url` and parse the verdicts written to `out_dir`.

    `out_dir` must be empty or absent: the verdicts are read back from it. Raises `ConformanceRunError` if
    Node or the suite is missing or the run exceeds `timeout` seconds (the Node process is killed).
    """
    for path in (NODE22, _LEG_ARGS[leg][0]):
        if not path.exists():
            raise ConformanceRunError(
                f"{path} is missing: install the test peers (make test, or npm ci in tests/node)"
            )
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ValueError(f"{out_dir} is not empty; the suite's results are read back from it")
    out_dir.mkdir(parents=True, exist_ok=True)
    argv = [*conformance_argv(url, leg, out_dir, suite=suite, scenario=scenario), *extra_args]

    started = time.monotonic()
    try:
        completed = subprocess.run(
            argv,
            check=False,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        partial_output = _text(exc.stdout) + _text(exc.stderr)
        command = " ".join(argv)
        raise ConformanceRunError(
            f"conformance leg {leg} did not finish within {timeout}s: {command}\n{partial_output[-6000:]}"
        ) from exc
    duration = time.monotonic() - started
    output = completed.stdout + ("\n--- stderr ---\n" + completed.stderr if completed.stderr else "")
    return _parse(
        leg,
        argv=tuple(argv),
        returncode=completed.returncode,
        duration=duration,
        out_dir=out_dir,
        output=output,
    )


async def arun_conformance(
    url: str,
    leg: Leg,
    out_dir: Path,
    run_timeout: float,
    *,
    suite: Suite = "all",
    scenario: str | None = None,
    extra_args: Sequence[str] = (),
) -> ConformanceResult:
    """`run_conformance` for async code (e.g. when the target runs in this event loop): runs in a thread."""
    run = partial(
        run_conformance, url, leg, out_dir, run_timeout, suite=suite, scenario=scenario, extra_args=extra_args
    )
    return await anyio.to_thread.run_sync(run)


def _text(data: str | bytes | None) -> str:
    if data is None:
        return ""
    return data.decode(errors="replace") if isinstance(data, bytes) else data


def _check_lines(checks: list[dict[str, Any]], status: str) -> tuple[str, ...]:
    return tuple(
        f"{check.get('id')}: {check.get('errorMessage') or check.get('description') or ''}"
        for check in checks
        if check.get("status") == status
    )


def _parse(
    leg: Leg, *, argv: tuple[str, ...], returncode: int, duration: float, out_dir: Path, output: str
) -> ConformanceResult:
    verdicts: dict[str, bool | None] = {}  # True passed, False failed, None no checks.json
    failures: dict[str, tuple[str, ...]] = {}
    warnings: dict[str, tuple[str, ...]] = {}
    for entry in sorted(out_dir.iterdir()):
        match = _RESULT_DIR.match(entry.name)
        if not entry.is_dir() or match is None:
            continue
        scenario = match["scenario"]
        checks_file = entry / "checks.json"
        if not checks_file.exists():
            verdicts.setdefault(scenario, None)
            continue
        checks: list[dict[str, Any]] = json.loads(checks_file.read_text())
        failing, warning = _check_lines(checks, "FAILURE"), _check_lines(checks, "WARNING")
        # A scenario run twice (never by this helper) fails if either run failed.
        verdicts[scenario] = not failing and verdicts.get(scenario) is not False
        if failing:
            failures[scenario] = failures.get(scenario, ()) + failing
        if warning:
            warnings[scenario] = warning

    announced = None
    for line in output.splitlines():
        if (running := _RUNNING_LINE.match(line)) is not None:
            announced = int(running["count"])
        elif (summary := _SUMMARY_LINE.match(line.strip())) is not None:
            scenario = summary["scenario"]
            if summary["mark"] == "✗":
                # The suite's own verdict wins; a scenario that crashed has no checks.json, only this line.
                verdicts[scenario] = False
                failures.setdefault(scenario, (f"suite summary: {line.strip()}",))
            else:
                # "✓ name: 0 passed" with no checks.json: not applicable at this spec version.
                verdicts.setdefault(scenario, None)

    return ConformanceResult(
        leg=leg,
        argv=argv,
        returncode=returncode,
        duration_s=duration,
        passed=tuple(name for name, verdict in verdicts.items() if verdict is True),
        failed=tuple(name for name, verdict in verdicts.items() if verdict is False),
        skipped=tuple(name for name, verdict in verdicts.items() if verdict is None),
        announced=announced,
        failures=failures,
        warnings=warnings,
        output=output,
    )
