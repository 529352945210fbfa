"""docs/benchmarks.md and its plots, from the JSON the benchmarks wrote.

    .venv/bin/python bench/report.py [--results bench/results] [--doc docs/benchmarks.md]

Reads `sidecar_latency.json`, `idle_sessions.json` and `async_latency.json` (a missing one is reported as
not run), writes the Markdown report with every figure also as a ratio to direct (or to asyncmcp's
no-proxy client), judges the issue's four targets, draws PNG plots of latency and throughput against
concurrency (matplotlib, from bench/requirements-bench.txt) into docs/benchmarks/, and copies a summary
JSON next to them.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

BENCH: Final = Path(__file__).resolve().parent
REPO_ROOT: Final = BENCH.parent
DOC: Final = REPO_ROOT / "docs" / "benchmarks.md"
IMAGES: Final = "benchmarks"  # folder next to the doc

# The targets.
TP_RATIO_TARGET: Final = 0.8  # sidecar throughput / direct at 20 sessions
TP_TARGET_SESSIONS: Final = 20
ADDED_MEDIAN_TARGET_MS: Final = 1.0
IDLE_TARGET_SESSIONS: Final = 10_000
IDLE_TARGET_MIB: Final = 512
ASYNC_TARGET_RATIO: Final = 1.10
MIB: Final = 1024

# bench/bare_relay.py: uvicorn + aiohttp doing nothing else, the floor any proxy on mcplane's stack pays.
BARE_RELAY: Final = "bare-relay-http"
SIDECAR_ORDER: Final = (
    "direct",
    "mcplane-http",
    BARE_RELAY,
    "fastmcp-http",
    "mcplane-stdio",
    "mcp-proxy-stdio",
    "fastmcp-stdio",
)
STYLES: Final = {
    "direct": ("black", "o", "-"),
    "mcplane-http": ("tab:blue", "s", "-"),
    BARE_RELAY: ("tab:gray", "x", ":"),
    "fastmcp-http": ("tab:orange", "^", "-"),
    "mcplane-stdio": ("tab:blue", "s", "--"),
    "mcp-proxy-stdio": ("tab:green", "D", "--"),
    "fastmcp-stdio": ("tab:orange", "^", "--"),
}


def settling_note(settling: dict[str, Any] | None) -> str:
    """What the run waited for the CPUs to settle between targets (runs that recorded it)."""
    if not settling:
        return ""
    return (
        f" Before each target's turn the run waited for the CPUs to go quiet (a peer's work outlives its "
        f"turn): {settling['waits']} waits, {settling['waited_s']} s in all, {settling['gave_up']} still "
        f"busy after {settling['limit_s']:g} s."
    )


def load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    if not path.exists():
        return None
    data: object = json.loads(path.read_text())
    return cast(dict[str, Any], data) if isinstance(data, dict) else None


def num(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def with_ratio(value: float | None, ratio: float | None, digits: int = 2) -> str:
    if value is None:
        return "-"
    return f"{num(value, digits)} (x{ratio:.2f})" if ratio is not None else num(value, digits)


def esc(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def ok_legs(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [leg for leg in data["legs"] if leg["status"] == "ok"]


def levels_of(leg: dict[str, Any]) -> dict[int, dict[str, Any]]:
    return {tp["sessions"]: tp for tp in leg.get("throughput") or []}


def sorted_legs(data: dict[str, Any]) -> list[dict[str, Any]]:
    rank = {key: n for n, key in enumerate(SIDECAR_ORDER)}
    return sorted(data["legs"], key=lambda leg: (leg["era"], rank.get(leg["target"], 99)))


@dataclass
class Verdict:
    target: str
    measured: str
    met: bool | None  # None: not measured

    def cell(self) -> str:
        return {True: "**met**", False: "**not met**", None: "not measured"}[self.met]


# --- the four targets ---------------------------------------------------------------------------------------


def find_leg(data: dict[str, Any] | None, target: str, era: str) -> dict[str, Any] | None:
    if data is None:
        return None
    legs: list[dict[str, Any]] = data["legs"]
    for leg in legs:
        if leg["target"] == target and leg["era"] == era and leg["status"] == "ok":
            return leg
    return None


def throughput_verdict(sidecar: dict[str, Any] | None) -> Verdict:
    what = f"throughput through the sidecar ≥ {TP_RATIO_TARGET} of direct at {TP_TARGET_SESSIONS} sessions"
    parts: list[str] = []
    met: bool | None = None
    for era in ("2025", "2026"):
        leg = find_leg(sidecar, "mcplane-http", era)
        tp = levels_of(leg).get(TP_TARGET_SESSIONS) if leg else None
        if tp is None or tp.get("ratio_calls_per_s") is None:
            continue
        ratio = tp["ratio_calls_per_s"]
        bare = levels_of(find_leg(sidecar, BARE_RELAY, era) or {}).get(TP_TARGET_SESSIONS) or {}
        floor = f"; bare relay x{bare['ratio_calls_per_s']:.2f}" if bare.get("ratio_calls_per_s") else ""
        parts.append(f"{era} era: x{ratio:.2f} ({tp['calls_per_s']:.0f} calls/s{floor})")
        met = (met is not False) and ratio >= TP_RATIO_TARGET
    return Verdict(what, "; ".join(parts) or "-", met)


def latency_verdict(sidecar: dict[str, Any] | None) -> Verdict:
    what = f"added median latency ≤ {ADDED_MEDIAN_TARGET_MS:g} ms (sequential `tools/call`, HTTP backend)"
    parts: list[str] = []
    met: bool | None = None
    for era in ("2025", "2026"):
        leg, base = find_leg(sidecar, "mcplane-http", era), find_leg(sidecar, "direct", era)
        if not leg or not base or not leg.get("sequential") or not base.get("sequential"):
            continue
        added = leg["sequential"]["median_ms"] - base["sequential"]["median_ms"]
        bare = (find_leg(sidecar, BARE_RELAY, era) or {}).get("sequential")
        floor = f" (bare relay +{bare['median_ms'] - base['sequential']['median_ms']:.2f} ms)" if bare else ""
        parts.append(f"{era} era: +{added:.2f} ms{floor}")
        met = (met is not False) and added <= ADDED_MEDIAN_TARGET_MS
    return Verdict(what, "; ".join(parts) or "-", met)


def idle_step(idle: dict[str, Any] | None, sessions: int) -> dict[str, Any] | None:
    """The step that aimed at `sessions` idle sessions (a few opens may have failed on the way)."""
    if idle is None:
        return None
    steps: list[dict[str, Any]] = idle["steps"]
    for size, step in zip(idle["parameters"]["sizes"], steps, strict=False):
        if size == sessions:
            return step
    return None


def idle_verdict(idle: dict[str, Any] | None) -> Verdict:
    what = f"{IDLE_TARGET_SESSIONS:,} idle sessions in ≤ {IDLE_TARGET_MIB} MiB RSS (the sidecar)"
    step = idle_step(idle, IDLE_TARGET_SESSIONS)
    if step is None:
        return Verdict(what, "-", None)
    rss = step["sidecar"]["rss_kib"] / MIB
    measured = (
        f"{rss:.0f} MiB with {step['sessions']:,} sessions open "
        f"({step['sidecar_kib_per_session']} KiB per session over the baseline)"
    )
    return Verdict(what, measured, rss <= IDLE_TARGET_MIB)


def async_verdict(async_data: dict[str, Any] | None) -> Verdict:
    what = "async path within 10% of asyncmcp's no-proxy client (sequential median)"
    if async_data is None:
        return Verdict(what, "-", None)
    parts: list[str] = []
    met: bool | None = None
    for leg in async_data["legs"]:
        if leg["target"] not in ("mcplane-legacy", "mcplane-auto") or leg["status"] != "ok":
            continue
        ratio = (leg.get("ratios_to_no_proxy") or {}).get("sequential_median")
        if ratio is None:
            continue
        parts.append(f"{leg['transport']} {leg['target'].removeprefix('mcplane-')}: x{ratio:.2f}")
        met = (met is not False) and ratio <= ASYNC_TARGET_RATIO
    return Verdict(what, "; ".join(parts) or "-", met)


# --- plots --------------------------------------------------------------------------------------------------


def plot_sidecar(sidecar: dict[str, Any], image_dir: Path) -> list[str]:
    """Latency (p50) and throughput against concurrency, one panel per era; returns the file names."""
    labels: dict[str, str] = sidecar["targets"]
    eras = sorted({leg["era"] for leg in ok_legs(sidecar)})
    names: list[str] = []
    for metric, title, ylabel, filename in (
        ("calls_per_s", "Throughput", "calls/s (all sessions)", "throughput_vs_concurrency.png"),
        ("median_ms", "Median latency under load", "ms per tools/call", "latency_vs_concurrency.png"),
    ):
        fig, axes = plt.subplots(1, len(eras), figsize=(6 * len(eras), 4.2), squeeze=False)
        for ax, era in zip(axes[0], eras, strict=True):
            for leg in sorted_legs(sidecar):
                if leg["era"] != era or leg["status"] != "ok":
                    continue
                points = sorted(levels_of(leg).items())
                xs = [n for n, tp in points if tp.get("latency")]
                ys = [
                    tp["calls_per_s"] if metric == "calls_per_s" else tp["latency"]["median_ms"]
                    for _, tp in points
                    if tp.get("latency")
                ]
                color, marker, line = STYLES.get(leg["target"], ("gray", "x", ":"))
                ax.plot(xs, ys, color=color, marker=marker, linestyle=line, label=labels[leg["target"]])
            ax.set_xscale("log")
            if metric == "median_ms":
                ax.set_yscale("log")
            ax.set_xticks(sidecar["parameters"]["sessions"])
            ax.set_xticklabels([str(n) for n in sidecar["parameters"]["sessions"]])
            ax.set_title(f"{title}, {era} era")
            ax.set_xlabel("concurrent sessions")
            ax.set_ylabel(ylabel)
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=7)
        fig.suptitle(f"{sidecar['environment']['cpus']} cores, shared machine: compare within a panel only")
        fig.tight_layout()
        fig.savefig(image_dir / filename, dpi=110)
        plt.close(fig)
        names.append(filename)
    return names


def plot_async(async_data: dict[str, Any], image_dir: Path) -> str:
    """Calls/s at 1 session (1000 / mean sequential latency) and at the throughput level, per transport."""
    legs = [leg for leg in async_data["legs"] if leg["status"] == "ok"]
    transports = list(dict.fromkeys(leg["transport"] for leg in legs))
    sessions = async_data["parameters"]["sessions"]
    fig, axes = plt.subplots(1, len(transports), figsize=(5 * len(transports), 4), squeeze=False)
    for ax, transport in zip(axes[0], transports, strict=True):
        for leg in legs:
            if leg["transport"] != transport:
                continue
            seq, tp = leg.get("sequential"), leg.get("throughput")
            xs, ys = [], []
            if seq:
                xs.append(1)
                ys.append(1000 / seq["mean_ms"])
            if tp and tp.get("calls_ok"):
                xs.append(tp["sessions"])
                ys.append(tp["calls_per_s"])
            ax.plot(xs, ys, marker="o", label=async_data["targets"][leg["target"]])
        ax.set_xscale("log")
        ax.set_xticks([1, sessions])
        ax.set_xticklabels(["1", str(sessions)])
        ax.set_title(f"{transport} (moto)" if transport != "webhook" else "webhook")
        ax.set_xlabel("concurrent sessions")
        ax.set_ylabel("correct replies/s")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    name = "async_throughput.png"
    fig.savefig(image_dir / name, dpi=110)
    plt.close(fig)
    return name


def plot_idle(idle: dict[str, Any], image_dir: Path) -> str:
    base = idle["baseline"]
    xs = [base["sessions"]] + [s["sessions"] for s in idle["steps"]]
    fig, ax = plt.subplots(figsize=(6, 4))
    for who, color in (("sidecar", "tab:blue"), ("backend", "tab:gray")):
        ys = [base[who]["rss_kib"] / MIB] + [s[who]["rss_kib"] / MIB for s in idle["steps"]]
        ax.plot(xs, ys, marker="o", color=color, label=f"{who} RSS")
    ax.axhline(
        IDLE_TARGET_MIB, color="tab:red", linestyle=":", label=f"target {IDLE_TARGET_MIB} MiB (sidecar)"
    )
    ax.set_xlabel("idle 2025-era sessions open")
    ax.set_ylabel("MiB")
    ax.set_title("Memory held by idle sessions")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    name = "idle_sessions_rss.png"
    fig.savefig(image_dir / name, dpi=110)
    plt.close(fig)
    return name


# --- sections -----------------------------------------------------------------------------------------------


def contention_table(sidecar: dict[str, Any], labels: dict[str, str], levels: list[int]) -> list[str]:
    """CPU per call of the client, the backend and the proxy at the throughput target's concurrency."""
    contention_level = TP_TARGET_SESSIONS if TP_TARGET_SESSIONS in levels else max(levels)
    lines = [
        "",
        f"CPU per call of every process at {contention_level} sessions, each over the same target's slices "
        "(ms). The client is `bench/sidecar_latency.py` itself; the backend is the shared proxy_target "
        "process (HTTP targets only). Client and backend share the machine's cores with the proxy, so a "
        "proxy also costs them CPU: compare their figures with direct's.",
        "",
        "| era | target | client | backend | proxy | all three |",
        "|---|---|---|---|---|---|",
    ]
    for leg in sorted_legs(sidecar):
        at_level = levels_of(leg).get(contention_level) if leg["status"] == "ok" else None
        if not at_level or at_level.get("client_cpu_ms_per_call") is None:
            continue
        client, backend = at_level["client_cpu_ms_per_call"], at_level.get("backend_cpu_ms_per_call")
        proxy = None if leg["target"] == "direct" else at_level.get("proxy_cpu_ms_per_call")
        complete = backend is not None and (proxy is not None or leg["target"] == "direct")
        total = client + (backend or 0.0) + (proxy or 0.0) if complete else None
        cells = " | ".join(num(value, 3) for value in (client, backend, proxy, total))
        lines.append(f"| {leg['era']} | {labels[leg['target']]} | {cells} |")
    return lines


def sidecar_section(sidecar: dict[str, Any], images: list[str]) -> list[str]:
    labels: dict[str, str] = sidecar["targets"]
    params, env = sidecar["parameters"], sidecar["environment"]
    levels: list[int] = params["sessions"]
    peers = ", ".join(f"{k} {v}" for k, v in env["peers"].items()) or "none installed"
    lines = [
        "## Direct, mcplane and its peers (Streamable HTTP front, `tools/call echo`)",
        "",
        f"Run {sidecar['started_at']}, {sidecar['runtime_s']:.0f} s; load average {env['loadavg_start']} at "
        f"the start, {env['loadavg_end']} at the end. Client: the official Python SDK (mcp {env['mcp']}). "
        f"Peers: {peers}. All targets share one proxy_target backend process (HTTP) or start proxy_target "
        "over stdio; every proxy runs as shipped, with its default logging."
        + settling_note(env.get("settling")),
        "",
        "- **HTTP backend**: direct (client → proxy_target), mcplane (`mcplane-sidecar URL`), "
        "fastmcp's proxy (`create_proxy(URL)`), and a yardstick, not a peer: the bare relay "
        "(`bench/bare_relay.py`), uvicorn and one aiohttp pool on mcplane's own stack with none of its work "
        "(no checks, sessions, limits, metrics or logs). What the bare relay costs, any proxy written with "
        "these libraries costs; the gap between it and mcplane is mcplane's own work.",
        "- **stdio backend**: mcplane (`mcplane-sidecar -- python proxy_target`: one server process per "
        "2025 session, a pool of 4 for 2026-07-28), mcp-proxy 0.13 (`mcp-proxy -- ...`: one server process "
        "shared by all clients), fastmcp's proxy (one kept-alive server process, a new session per request).",
        "",
        "Ratios (xN) are to **direct over HTTP in the same era and run** (for throughput: at the same "
        "concurrency). For the stdio rows direct is still the reference, so the stdio rows compare with each "
        "other, and with direct only loosely.",
        "",
        f"### Sequential latency ({params['calls']} calls on one session, after {params['warmup']} warm-up)",
        "",
        "| era | target | protocol | p50 ms | p95 ms | p99 ms | session set-up p50 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for leg in sorted_legs(sidecar):
        name = labels[leg["target"]]
        if leg["status"] != "ok":
            lines.append(
                f"| {leg['era']} | {name} | {leg['status']}: {esc(leg.get('detail') or '')} | | | | |"
            )
            continue
        r, seq, setup = leg.get("ratios_to_direct") or {}, leg.get("sequential"), leg.get("setup")
        lines.append(
            f"| {leg['era']} | {name} | {leg['protocol_version']} | "
            f"{with_ratio(seq and seq['median_ms'], r.get('sequential_median'))} | "
            f"{with_ratio(seq and seq['p95_ms'], r.get('sequential_p95'))} | "
            f"{with_ratio(seq and seq['p99_ms'], r.get('sequential_p99'))} | "
            f"{with_ratio(setup and setup['median_ms'], r.get('setup_median'), 1)} |"
        )
    lines += [
        "",
        f"### Throughput and latency at {', '.join(map(str, levels))} concurrent sessions",
        "",
        "Each target's sessions are opened first; then the load goes to one target at a time in 1 s "
        f"slices rotating over the targets, {params['duration']:g} s per target and level. Calls/s over all "
        "sessions, and the median latency of a call under that load.",
        "",
        "| era | target | " + " | ".join(f"{n} sess calls/s | {n} sess p50 ms" for n in levels) + " |",
        "|---|---|" + "---|---|" * len(levels),
    ]
    for leg in sorted_legs(sidecar):
        if leg["status"] != "ok":
            continue
        by_level = levels_of(leg)
        cells: list[str] = []
        for n in levels:
            tp = by_level.get(n)
            lat = tp.get("latency") if tp else None
            cells += [
                with_ratio(tp["calls_per_s"], tp.get("ratio_calls_per_s"), 0) if tp else "-",
                with_ratio(lat["median_ms"] if lat else None, tp.get("ratio_median") if tp else None),
            ]
        lines.append(f"| {leg['era']} | {labels[leg['target']]} | " + " | ".join(cells) + " |")
    anomalies: list[str] = []
    for leg in sorted_legs(sidecar):
        where = f"{leg['era']} era, {labels[leg['target']]}"
        for phase, text in (leg.get("phase_errors") or {}).items():
            anomalies.append(f"- {where}, {phase}: {esc(text)}")
        for tp in leg.get("throughput") or []:
            if tp["errors"]:
                anomalies.append(
                    f"- {where}, {tp['sessions']} sessions: {tp['errors']} calls or session set-ups failed "
                    f"(first: {esc(tp.get('first_error') or '?')})"
                )
    if anomalies:
        lines += ["", "Errors in this run:", "", *anomalies]
    lines += ["", *[f"![{name}]({IMAGES}/{name})" for name in images], ""]
    lines += [
        "### CPU and memory of the proxy process",
        "",
        "CPU per call: the proxy process's user + system time over its loaded slices, divided by the calls "
        "made (ms). Whole run: both eras, every phase. Peak RSS: VmHWM at the end of the run. The stdio "
        "servers a proxy starts are separate processes and are not counted.",
        "",
        "| era | target | " + " | ".join(f"CPU ms/call @{n}" for n in levels) + " |",
        "|---|---|" + "---|" * len(levels),
    ]
    for leg in sorted_legs(sidecar):
        if leg["status"] != "ok" or leg["target"] == "direct":
            continue
        by_level = levels_of(leg)
        cells = [num((by_level.get(n) or {}).get("proxy_cpu_ms_per_call"), 3) for n in levels]
        lines.append(f"| {leg['era']} | {labels[leg['target']]} | " + " | ".join(cells) + " |")
    lines += contention_table(sidecar, labels, levels)
    lines += ["", "| process | CPU s, whole run | peak RSS MiB |", "|---|---|---|"]
    for key, usage in (sidecar.get("process_usage") or {}).items():
        if usage:
            lines.append(f"| {labels.get(key, key)} | {usage['cpu_s']:.1f} | {usage['hwm_kib'] / MIB:.1f} |")
    lines += [
        "",
        "### Backend sessions per client session",
        "",
        "Counted at the backend (new `Mcp-Session-Id`s handed out by proxy_target, per proxy) around the "
        f"{max(levels)}-session throughput phase:",
        "",
        "| era | target | client sessions | calls | backend sessions | note |",
        "|---|---|---|---|---|---|",
    ]
    for leg in sorted_legs(sidecar):
        checks = [c for c in leg.get("session_checks") or [] if c["client_sessions"] == max(levels)]
        for check in checks:
            lines.append(
                f"| {leg['era']} | {labels[leg['target']]} | {check['client_sessions']} | {check['calls']} | "
                f"{num(check['backend_sessions_delta'], 0)} | {esc(check['verdict'])} |"
            )
    lines.append("")
    return lines


def idle_section(idle: dict[str, Any], image: str) -> list[str]:
    env, base = idle["environment"], idle["baseline"]
    lines = [
        "## Memory per idle session",
        "",
        f"Run {idle['started_at']}, {idle['runtime_s']:.0f} s; load average {env['loadavg_start']} → "
        f"{env['loadavg_end']}. One sidecar with an HTTP backend (proxy_target); 2025-11-25 sessions opened "
        f"with raw HTTP (`initialize`, then `notifications/initialized`; {idle['parameters']['concurrency']} "
        f"at a time) and left idle; `sessions.max_sessions` {idle['parameters']['max_sessions']:,}, idle "
        f"timeout {idle['parameters']['idle_timeout_s']:,} s. Baseline after {base['sessions']} warm-up "
        f"sessions: sidecar {base['sidecar']['rss_kib'] / MIB:.1f} MiB, backend "
        f"{base['backend']['rss_kib'] / MIB:.1f} MiB. Per session = RSS growth over the baseline / sessions "
        f"added.",
        "",
        "| sessions open | sidecar RSS MiB | sidecar KiB/session | sidecar open fds | backend RSS MiB "
        "| backend KiB/session | set-up p50 ms (under load) | sidecar CPU ms/session opened |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for step in idle["steps"]:
        setup = step.get("setup")
        lines.append(
            f"| {step['sessions']:,} | {step['sidecar']['rss_kib'] / MIB:.1f} | "
            f"{step['sidecar_kib_per_session']} | {step['sidecar']['fds']} | "
            f"{step['backend']['rss_kib'] / MIB:.1f} | {step['backend_kib_per_session']} | "
            f"{num(setup['median_ms'] if setup else None, 1)} | {num(step.get('sidecar_cpu_ms_per_open'))} |"
        )
    lines += [
        "",
        f"At the end {idle['live_ok']} of the {idle['live_checked']} oldest sessions still answered `echo` "
        f"(they were held, not evicted); {idle['errors']} sessions failed to open"
        + (f" (first: {esc(idle['first_error'])})" if idle.get("first_error") else "")
        + f". The sidecar talks to the backend over one pooled HTTP client, so its open file descriptors do "
        f"not grow with the sessions (open-file limit here: {env['nofile_limit'][0]:,}).",
        "",
        f"![{image}]({IMAGES}/{image})",
        "",
    ]
    return lines


def async_section(async_data: dict[str, Any], image: str) -> list[str]:
    env, params = async_data["environment"], async_data["parameters"]
    labels: dict[str, str] = async_data["targets"]
    sessions = params["sessions"]
    lines = [
        "## Async path: mcplane against asyncmcp's own client and proxy (moto)",
        "",
        f"Run {async_data['started_at']}, {async_data['runtime_s']:.0f} s; load average "
        f"{env['loadavg_start']} → {env['loadavg_end']}; asyncmcp {env.get('asyncmcp')} (mcp "
        f"{env.get('asyncmcp_mcp')}), moto {env.get('moto')}. Details and caveats: `bench/README.md`. "
        f"Ratios (xN) are to asyncmcp's own client with no proxy, same transport. At 1 session: "
        f"{params['calls']} sequential calls (calls/s = 1000 / mean ms); at {sessions} sessions: "
        f"{params['tp_calls']} calls each, all sessions at once.",
        "",
        f"| transport | target | seq p50 ms | seq p95 ms | seq p99 ms | calls/s @1 | calls/s @{sessions} "
        f"| p50 ms @{sessions} | wrong / failed @{sessions} |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for leg in async_data["legs"]:
        name = labels.get(leg["target"], leg["target"])
        if leg["status"] != "ok":
            lines.append(
                f"| {leg['transport']} | {name} | {leg['status']}: {esc(leg.get('detail') or '')} "
                "| | | | | | |"
            )
            continue
        r = leg.get("ratios_to_no_proxy") or {}
        seq, tp = leg.get("sequential"), leg.get("throughput")
        lat = tp.get("latency") if tp else None
        failed = (
            (tp["failed_calls"] + tp["not_done"] + tp["failed_sessions"] * tp["calls_per_session"])
            if tp
            else 0
        )
        lines.append(
            f"| {leg['transport']} | {name} | "
            f"{with_ratio(seq and seq['median_ms'], r.get('sequential_median'))} | "
            f"{with_ratio(seq and seq['p95_ms'], r.get('sequential_p95'))} | "
            f"{with_ratio(seq and seq['p99_ms'], r.get('sequential_p99'))} | "
            f"{num(1000 / seq['mean_ms'] if seq else None, 1)} | "
            f"{with_ratio(tp['calls_per_s'] if tp else None, r.get('throughput_calls_per_s'), 1)} | "
            f"{with_ratio(lat['median_ms'] if lat else None, r.get('throughput_median_latency'), 0)} | "
            f"{tp['wrong'] if tp else '-'} / {failed if tp else '-'} |"
        )
    lines += ["", f"![{image}]({IMAGES}/{image})", ""]
    return lines


def summary(
    sidecar: dict[str, Any] | None,
    idle: dict[str, Any] | None,
    async_data: dict[str, Any] | None,
    verdicts: Sequence[Verdict],
) -> dict[str, Any]:
    """The figures the report quotes, small enough to keep next to the doc."""
    out: dict[str, Any] = {"targets": [v.__dict__ for v in verdicts]}
    if sidecar:
        out["sidecar"] = {
            "started_at": sidecar["started_at"],
            "environment": {k: v for k, v in sidecar["environment"].items() if k != "logs"},
            "parameters": sidecar["parameters"],
            "legs": [
                {
                    "era": leg["era"],
                    "target": leg["target"],
                    "status": leg["status"],
                    "detail": leg.get("detail"),
                    "sequential": leg.get("sequential"),
                    "setup": leg.get("setup"),
                    "ratios_to_direct": leg.get("ratios_to_direct"),
                    "throughput": [
                        {k: v for k, v in tp.items() if k != "concurrent_setup"}
                        for tp in leg.get("throughput", [])
                    ],
                }
                for leg in sidecar["legs"]
            ],
            "process_usage": sidecar.get("process_usage"),
        }
    if idle:
        out["idle_sessions"] = {k: v for k, v in idle.items() if k not in ("environment",)}
    if async_data:
        out["async"] = {
            "started_at": async_data["started_at"],
            "legs": [
                {
                    k: leg.get(k)
                    for k in ("transport", "target", "status", "detail", "sequential", "ratios_to_no_proxy")
                }
                | {"calls_per_s": (leg.get("throughput") or {}).get("calls_per_s")}
                for leg in async_data["legs"]
            ],
        }
    return out


def build(results: Path, doc: Path) -> None:
    sidecar, idle, async_data = (
        load(results, n) for n in ("sidecar_latency", "idle_sessions", "async_latency")
    )
    image_dir = doc.parent / IMAGES
    image_dir.mkdir(parents=True, exist_ok=True)
    verdicts = [
        throughput_verdict(sidecar),
        latency_verdict(sidecar),
        idle_verdict(idle),
        async_verdict(async_data),
    ]
    env: dict[str, Any] = next((d["environment"] for d in (sidecar, idle, async_data) if d), {})
    lines = [
        "# Benchmarks",
        "",
        "Produced by `make bench` (`bench/run_all.py`: `bench/sidecar_latency.py`, `bench/idle_sessions.py`, "
        "`bench/async_latency.py`, then `bench/report.py`); how each works is in `bench/README.md`. Every "
        "process binds 127.0.0.1; peers run in their own venvs (`make bench-peers`).",
        "",
        f"**Machine**: {env.get('cpus', '?')} cores, {env.get('platform', '?')}, "
        f"Python {env.get('python', '?')}. It is a shared machine with other work running, so **the figures "
        "are relative**: absolute numbers move between runs, and every figure is quoted as a ratio to the "
        "direct run (or to asyncmcp's no-proxy client) measured in the same run, with the targets "
        "interleaved so background load falls on all alike. "
        "The benchmark client runs on the same 2 cores as the proxies and the backend, so under load the "
        "client itself takes a large share of the CPU.",
        "",
        "## Targets",
        "",
        "| target | measured | verdict |",
        "|---|---|---|",
        *[f"| {v.target} | {esc(v.measured)} | {v.cell()} |" for v in verdicts],
        "",
    ]
    if sidecar:
        lines += sidecar_section(sidecar, plot_sidecar(sidecar, image_dir))
    else:
        lines += ["## Direct, mcplane and its peers", "", "Not run (no `sidecar_latency.json`).", ""]
    if idle:
        lines += idle_section(idle, plot_idle(idle, image_dir))
    else:
        lines += ["## Memory per idle session", "", "Not run (no `idle_sessions.json`).", ""]
    if async_data:
        lines += async_section(async_data, plot_async(async_data, image_dir))
    else:
        lines += ["## Async path", "", "Not run (no `async_latency.json`).", ""]
    doc.write_text("\n".join(lines))
    (image_dir / "summary.json").write_text(
        json.dumps(summary(sidecar, idle, async_data, verdicts), indent=1) + "\n"
    )
    print(f"wrote {doc} and {image_dir}/", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--results", type=Path, default=BENCH / "results", help="where the JSON is")
    parser.add_argument("--doc", type=Path, default=DOC, help="the Markdown file to write")
    args = parser.parse_args(argv)
    build(args.results, args.doc)


if __name__ == "__main__":
    main()
