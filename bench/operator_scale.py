"""Scale check of the operator: N MCPProxy resources applied at once, against the Kubernetes API emulator.

    .venv/bin/python bench/operator_scale.py [--count 500] [--hold 40] [--emulator indexed|tests] \
        [--out bench/results]

Everything runs on 127.0.0.1 and is started here as a subprocess, stopped by PID at the end (also on an
error, Ctrl-C or SIGTERM):

- the API emulator of the tests (`tests/operator/emulator.py`, `ClusterEmulator` with the project's CRD),
  served on a free port by this file's internal `--serve-emulator PORT` mode. By default with two costs that
  grow with the square of the cluster's size taken out (`serve_emulator` says which); `--emulator tests`
  runs the tests' class unchanged;
- the operator as shipped: `mcplane-operator run --all-namespaces --standalone`, with `KUBECONFIG` pointing
  at the emulator, its metrics (`MCPLANE_METRICS_ADDRESS`) and liveness probe (`--liveness`) on free ports.

Phases:

1. set-up (not timed): a namespace and the two Secrets `manifests/examples/http.yaml` refers to;
2. apply: N copies of that example with unique names in one multi-document file, applied at once with the
   real `kubectl apply --validate=false -f FILE`, until every MCPProxy has its Deployment, Service and
   ConfigMap (owned by it) and a status whose `observedGeneration` is its generation; then until the
   operator is idle (no reconcile for 3 s, from its /metrics);
3. hold: `--hold` seconds of steady state, longer than the operator's 30 s resync timer, so that each
   proxy's timer reconciles it (CPU and memory of the steady state);
4. delete: `kubectl delete --wait=false -f FILE`, then until every MCPProxy is gone (the operator removes
   its finalizer) and the emulator's garbage collector has taken every child.

The script follows the proxies and their children with watches (a local copy, looked at every `--poll`
seconds), not with lists: listing 2,500 objects every second would load the emulator's one event loop,
which the operator is measured against. The operator's RSS (VmRSS, and the kernel's peak VmHWM) and CPU
time (utime + stime) are read from /proc/PID every 0.2 s; the emulator's are recorded as well, because it
shares the machine. Reconcile counts and errors come from the operator's /metrics, problems from its log.
A phase that makes no progress for `--stall` seconds, or exceeds its deadline, ends the run with a clear
message; what was measured until then is still written.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from types import FrameType
from typing import Any, Final

REPO_ROOT: Final = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))  # for tests.operator / tests.support, when run as a script

import httpx  # noqa: E402
import yaml  # noqa: E402
from _measure import write_report  # noqa: E402

from mcplane_operator.builders import referenced_secrets  # noqa: E402
from mcplane_operator.model import GROUP, KIND, PLURAL, VERSION, parse_spec  # noqa: E402
from tests.support.processes import (  # noqa: E402
    LOOPBACK,
    PYTHON,
    ProcessHandle,
    ProcessStartError,
    free_port,
    running_process,
    stop_process,
)

THIS_FILE: Final = Path(__file__).resolve()
OPERATOR_BIN: Final = PYTHON.parent / "mcplane-operator"
KUBECTL: Final = "/usr/bin/kubectl" if Path("/usr/bin/kubectl").exists() else shutil.which("kubectl")
CRD_FILE: Final = REPO_ROOT / "manifests" / "crds" / "mcpproxies.mcplane.dev.yaml"
EXAMPLE: Final = REPO_ROOT / "manifests" / "examples" / "http.yaml"
NAMESPACE: Final = "scale"
NAME_PREFIX: Final = "scale"
DUMMY_TOKEN: Final = "mcplane-bench-token"  # the emulator checks no credentials; clients want some

SAMPLE_INTERVAL_S: Final = 0.2  # /proc sampling of the operator and the emulator
PROGRESS_EVERY_S: Final = 5.0  # a progress line on stderr
LIST_TIMEOUT_S: Final = 30.0  # one list call
WATCH_TIMEOUT_S: Final = 300  # the server ends a watch after this long; it is then resumed
SETUP_TIMEOUT_S: Final = 60.0  # kubectl calls of the set-up
IDLE_BASELINE_S: Final = 2.0  # after start-up, before the apply
IDLE_QUIET_S: Final = 3.0  # the operator is idle once no reconcile ended for this long
SETTLE_LIMIT_S: Final = 60.0  # how long to wait for that after convergence
METRICS_POLL_S: Final = 0.25
OPERATOR_READY_S: Final = 60.0  # until the operator's metrics port listens
OPERATOR_STOP_S: Final = 30.0  # SIGTERM grace before SIGKILL
EMULATOR_STOP_S: Final = 5.0
LOG_EXAMPLES: Final = 5  # distinct problem lines quoted from the operator's log
CLK_TCK: Final = os.sysconf("SC_CLK_TCK")

# Children every proxy of the example must have; the example asks for a PodDisruptionBudget too, which is
# counted and reported, and its ServiceMonitor is not made (the emulator has no ServiceMonitor CRD).
REQUIRED_CHILDREN: Final = {
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments",
    "Service": "/api/v1/namespaces/{ns}/services",
    "ConfigMap": "/api/v1/namespaces/{ns}/configmaps",
}
OTHER_CHILDREN: Final = {"PodDisruptionBudget": "/apis/policy/v1/namespaces/{ns}/poddisruptionbudgets"}
PROXIES_PATH: Final = f"/apis/{GROUP}/{VERSION}/namespaces/{{ns}}/{PLURAL}"


class BenchFailure(Exception):
    """The run cannot go on (a stall, a deadline, a failing command); the message says what and where."""


# --- the emulator (run as a subprocess of this script) -----------------------------------------------------

EMULATORS: Final = ("indexed", "tests")
# The indexed emulator keeps this many recent requests in kmock's request log (see `serve_emulator`).
REQUEST_LOG_KEPT: Final = 256


def serve_emulator(port: int, variant: str) -> None:
    """The tests' `ClusterEmulator` with the project's CRD, on 127.0.0.1:`port`, until SIGTERM.

    `tests`: exactly the class the tests use. `indexed` (the default): the same class with two costs that
    grow with the square of the cluster's size taken out, and no behaviour changed (`tests` is there to
    compare):

    - garbage collection runs after every create and delete and deep-copies every live object to look at
      its ownerReferences. Here an index (object -> owner uids, and the set of live uids) finds the objects
      whose owner is gone, and only those are handled, by the same rules;
    - kmock records every request, and answers a request it serves itself (discovery, e.g. the operator's
      `GET /apis/monitoring.coreos.com/v1` in every reconcile) by filtering that whole log. Here only the
      last REQUEST_LOG_KEPT requests are kept (nothing reads them in a benchmark).
    """
    import kmock  # noqa: PLC0415 (only this mode needs it)

    from tests.operator import emulator as emu  # noqa: PLC0415

    class IndexedEmulator(emu.ClusterEmulator):
        def __attrs_post_init__(self) -> None:
            self._live_uids: set[str] = set()
            self._owners: dict[emu.ObjectKey, frozenset[str]] = {}  # only objects with ownerReferences
            super().__attrs_post_init__()

        async def _handle(self, request: kmock.Request) -> Any:
            del self._requests[:-REQUEST_LOG_KEPT]
            return await super()._handle(request)

        def _store(self, key: emu.ObjectKey, obj: emu.JsonObject) -> None:
            super()._store(key, obj)
            meta = obj.get("metadata") or {}
            self._live_uids.add(str(meta.get("uid")))
            owners = frozenset(str(ref.get("uid")) for ref in meta.get("ownerReferences") or ())
            if owners:
                self._owners[key] = owners
            else:
                self._owners.pop(key, None)

        def _remove(self, key: emu.ObjectKey, obj: emu.JsonObject) -> None:
            super()._remove(key, obj)
            self._live_uids.discard(str(obj["metadata"].get("uid")))
            self._owners.pop(key, None)

        def _collect_garbage(self) -> None:
            """As the original: delete what has no live owner left, drop the references to gone owners."""
            changed = True
            while changed:
                changed = False
                for key, owners in list(self._owners.items()):
                    if owners <= self._live_uids:
                        continue
                    obj = self.live(key)
                    if obj is None:
                        continue
                    meta = obj["metadata"]
                    kept = [ref for ref in meta["ownerReferences"] if str(ref.get("uid")) in self._live_uids]
                    if not kept and not meta.get("deletionTimestamp"):
                        self._delete(key)
                        changed = True
                    elif kept:
                        patched = emu.merge_patch(obj, {"metadata": {"ownerReferences": kept}})
                        self._write_internal(key, patched)
                        changed = True

    emulator_class = IndexedEmulator if variant == "indexed" else emu.ClusterEmulator

    async def serve() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        async with emulator_class() as emulator, kmock.Server(emulator, host=LOOPBACK, port=port):
            emulator.load_crd_file(CRD_FILE)
            await stop.wait()

    asyncio.run(serve())


def kubeconfig_for(server: str, namespace: str) -> str:
    """As tests/operator/conftest.py writes it: one cluster, a dummy token, one context."""
    return f"""apiVersion: v1
kind: Config
clusters:
- name: emulator
  cluster:
    server: {server}
users:
- name: bench
  user:
    token: {DUMMY_TOKEN}
contexts:
- name: emulator
  context:
    cluster: emulator
    user: bench
    namespace: {namespace}
current-context: emulator
"""


# --- /proc sampling ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcSample:
    t: float  # seconds since the run started
    rss_kib: int
    hwm_kib: int
    cpu_s: float


def read_proc(pid: int, t: float) -> ProcSample | None:
    """VmRSS, VmHWM and utime + stime of a running process; None once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    rest = stat.rpartition(")")[2].split()  # rest[0] is field 3 (state); utime, stime are fields 14, 15
    if rest[0] == "Z":
        return None

    def kib(name: str) -> int:
        return int(fields.get(name, "0 kB").split()[0])

    return ProcSample(t, kib("VmRSS"), kib("VmHWM"), (int(rest[11]) + int(rest[12])) / CLK_TCK)


class Sampler:
    """Samples processes' /proc entries from a daemon thread; keeps the peak and a timeline."""

    def __init__(self, pids: Mapping[str, int], started: float) -> None:
        self.pids = dict(pids)
        self.started = started
        self.samples: dict[str, list[ProcSample]] = {label: [] for label in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="proc-sampler", daemon=True)
        self._lock = threading.Lock()

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(SAMPLE_INTERVAL_S)

    def sample(self) -> dict[str, ProcSample | None]:
        now = time.perf_counter() - self.started
        taken = {label: read_proc(pid, now) for label, pid in self.pids.items()}
        with self._lock:
            for label, sample in taken.items():
                if sample is not None:
                    self.samples[label].append(sample)
        return taken

    def peak_rss_kib(self, label: str) -> int:
        with self._lock:
            return max((s.rss_kib for s in self.samples[label]), default=0)

    def timeline(self, label: str, every_s: float = 1.0) -> list[dict[str, float]]:
        """One sample per `every_s`, for plotting: t (s), rss (MiB), cpu (s)."""
        kept: list[dict[str, float]] = []
        next_t = 0.0
        with self._lock:
            for s in self.samples[label]:
                if s.t >= next_t:
                    kept.append({"t": round(s.t, 1), "rss_mib": mib(s.rss_kib), "cpu_s": round(s.cpu_s, 2)})
                    next_t = s.t + every_s
        return kept


def mib(kib: int) -> float:
    return round(kib / 1024, 1)


# --- reading the cluster -----------------------------------------------------------------------------------


@dataclass
class Snapshot:
    """The proxies and their children at one moment, by name."""

    proxies: dict[str, Mapping[str, Any]]
    children: dict[str, dict[str, frozenset[str]]]  # kind -> child name -> owner uids

    def uid(self, name: str) -> str:
        return str(self.proxies[name]["metadata"]["uid"])

    def has_children(self, name: str, kinds: Sequence[str] = tuple(REQUIRED_CHILDREN)) -> bool:
        return all(self.uid(name) in self.children[kind].get(name, ()) for kind in kinds)

    def status_written(self, name: str) -> bool:
        proxy = self.proxies[name]
        generation = proxy["metadata"].get("generation") or 1
        return bool((proxy.get("status") or {}).get("observedGeneration") == generation)

    def children_total(self) -> int:
        return sum(len(by_name) for by_name in self.children.values())


class Mirror:
    """A local copy of the namespace's proxies and children, kept current by watch streams.

    One thread per resource lists it once, then watches from that resourceVersion (again from the last one
    seen when the server ends a stream). Looking at the copy costs the emulator nothing; listing 500 proxies
    and their 2000 children every second would load the one event loop the operator is measured against.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.paths = {KIND: PROXIES_PATH, **REQUIRED_CHILDREN, **OTHER_CHILDREN}
        self.objects: dict[str, dict[str, Mapping[str, Any]]] = {kind: {} for kind in self.paths}
        self.events = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._listed = {kind: threading.Event() for kind in self.paths}

    def __enter__(self) -> Mirror:
        for kind, path in self.paths.items():
            thread = threading.Thread(
                target=self._follow, args=(kind, path), name=f"watch-{kind}", daemon=True
            )
            thread.start()
        for kind, listed in self._listed.items():
            if not listed.wait(LIST_TIMEOUT_S):
                raise BenchFailure(f"could not list {kind} in {LIST_TIMEOUT_S:.0f} s: {self.errors[-1:]}")
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()  # the threads are daemons; a blocked stream ends with the emulator

    def _follow(self, kind: str, path: str) -> None:
        url = path.format(ns=NAMESPACE)
        timeout = httpx.Timeout(LIST_TIMEOUT_S, read=WATCH_TIMEOUT_S + LIST_TIMEOUT_S)
        with httpx.Client(base_url=self.url, timeout=timeout, headers={"Accept": "application/json"}) as http:
            version: str | None = None
            while not self._stop.is_set():
                try:
                    if version is None:
                        listing = http.get(url).raise_for_status().json()
                        version = str(listing["metadata"]["resourceVersion"])
                        items = {obj["metadata"]["name"]: obj for obj in listing.get("items") or ()}
                        with self._lock:
                            self.objects[kind] = items
                        self._listed[kind].set()
                    params = {
                        "watch": "true",
                        "resourceVersion": version,
                        "timeoutSeconds": str(WATCH_TIMEOUT_S),
                    }
                    with http.stream("GET", url, params=params) as response:
                        response.raise_for_status()
                        for line in response.iter_lines():
                            if self._stop.is_set():
                                return
                            if line.strip():
                                version = self._apply_event(kind, json.loads(line))
                except (httpx.HTTPError, ValueError, KeyError, TypeError) as exc:
                    if self._stop.is_set():
                        return
                    with self._lock:
                        self.errors.append(f"{kind}: {type(exc).__name__}: {exc}"[:300])
                    version = None  # list again
                    time.sleep(0.5)

    def _apply_event(self, kind: str, event: Mapping[str, Any]) -> str:
        obj = event["object"]
        if event.get("type") == "ERROR":
            raise ValueError(f"watch error: {obj}")
        name = obj["metadata"]["name"]
        with self._lock:
            self.events += 1
            if event["type"] == "DELETED":
                self.objects[kind].pop(name, None)
            else:
                self.objects[kind][name] = obj
        return str(obj["metadata"]["resourceVersion"])

    def snapshot(self) -> Snapshot:
        with self._lock:
            proxies = dict(self.objects[KIND])
            children = {
                kind: {
                    name: frozenset(
                        str(ref.get("uid")) for ref in obj["metadata"].get("ownerReferences") or ()
                    )
                    for name, obj in self.objects[kind].items()
                }
                for kind in self.paths
                if kind != KIND
            }
        return Snapshot(proxies, children)


# --- the operator's metrics and log ------------------------------------------------------------------------


def parse_prometheus(text: str) -> dict[str, float]:
    samples: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, _, value = line.rpartition(" ")
        with contextlib.suppress(ValueError):
            samples[name] = float(value)
    return samples


@dataclass
class OperatorMetrics:
    reconciles: dict[str, int]
    reconcile_errors: int
    reconcile_count: int
    reconcile_seconds: float

    @classmethod
    def read(cls, url: str) -> OperatorMetrics | None:
        try:
            response = httpx.get(url, timeout=10)
            response.raise_for_status()
        except httpx.HTTPError as exc:
            print(f"cannot read the operator's metrics at {url}: {exc}", file=sys.stderr)
            return None
        samples = parse_prometheus(response.text)
        prefix = "mcplane_operator_reconciles_total{"
        reconciles = {
            key[len(prefix) : -1].partition("=")[2].strip('"'): int(value)
            for key, value in samples.items()
            if key.startswith(prefix)
        }
        return cls(
            reconciles=reconciles,
            reconcile_errors=int(samples.get("mcplane_operator_reconcile_errors_total", 0)),
            reconcile_count=int(samples.get("mcplane_operator_reconcile_duration_seconds_count", 0)),
            reconcile_seconds=samples.get("mcplane_operator_reconcile_duration_seconds_sum", 0.0),
        )

    def minus(self, before: OperatorMetrics | None) -> OperatorMetrics:
        if before is None:
            return self
        return OperatorMetrics(
            reconciles={k: v - before.reconciles.get(k, 0) for k, v in self.reconciles.items()},
            reconcile_errors=self.reconcile_errors - before.reconcile_errors,
            reconcile_count=self.reconcile_count - before.reconcile_count,
            reconcile_seconds=round(self.reconcile_seconds - before.reconcile_seconds, 3),
        )

    @property
    def mean_ms(self) -> float | None:
        return (
            round(self.reconcile_seconds / self.reconcile_count * 1000, 1) if self.reconcile_count else None
        )


_LOG_LEVEL = re.compile(r"\[(DEBUG|INFO|WARNING|ERROR|CRITICAL)\s*\]")
_LOG_TIME = re.compile(r"^\[[^]]*\]\s*")


def log_summary(text: str) -> dict[str, Any]:
    """Lines per level, tracebacks, and the first few distinct WARNING/ERROR messages (timestamps cut)."""
    levels: Counter[str] = Counter()
    problems: dict[str, int] = {}
    for line in text.splitlines():
        match = _LOG_LEVEL.search(line)
        if match is None:
            continue
        levels[match[1]] += 1
        if match[1] in ("WARNING", "ERROR", "CRITICAL"):
            # One entry per message shape: names of proxies (scale-0042) and numbers folded.
            shape = re.sub(r"\d+", "N", _LOG_TIME.sub("", line))[:300]
            problems[shape] = problems.get(shape, 0) + 1
    shapes = sorted(problems.items(), key=lambda item: -item[1])[:LOG_EXAMPLES]
    return {
        "lines_by_level": dict(levels),
        "tracebacks": text.count("Traceback (most recent call last)"),
        "problem_shapes": [{"count": n, "line": shape} for shape, n in shapes],
    }


# --- commands ----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def started_command(
    argv: Sequence[str], env: Mapping[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A command (kubectl) whose output goes to `log`; killed by its PID if it still runs on exit."""
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env={**env}
        )
    try:
        yield process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def exit_timer(process: subprocess.Popen[bytes]) -> tuple[threading.Event, list[float]]:
    """An event set when `process` exits, and a list that then holds the `perf_counter` of the exit."""
    exited, ended = threading.Event(), list[float]()

    def wait() -> None:
        process.wait()
        ended.append(time.perf_counter())
        exited.set()

    threading.Thread(target=wait, name=f"wait-{process.pid}", daemon=True).start()
    return exited, ended


def kubectl(args: Sequence[str], env: Mapping[str, str], log: Path, timeout: float) -> float:
    """Run kubectl to the end; its duration in seconds. A failure or a timeout is a `BenchFailure`."""
    assert KUBECTL is not None
    started = time.perf_counter()
    with started_command([KUBECTL, *args], env, log) as process:
        try:
            code = process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise BenchFailure(f"kubectl {' '.join(args)} did not finish within {timeout:.0f} s") from None
    if code != 0:
        raise BenchFailure(f"kubectl {' '.join(args)} exited with {code}: {tail(log)}")
    return time.perf_counter() - started


def tail(path: Path, chars: int = 2000) -> str:
    return path.read_text(errors="replace")[-chars:].strip()


# --- the run -----------------------------------------------------------------------------------------------


@dataclass
class Options:
    count: int
    poll: float
    hold: float
    stall: float
    timeout: float
    delete_timeout: float
    emulator: str
    out: Path


@dataclass
class Phase:
    """Times are seconds since the phase's kubectl command was started."""

    command_s: float | None = None
    command_exit: int | None = None
    milestones: dict[str, float | None] = field(default_factory=dict)
    per_proxy: dict[str, dict[str, float]] = field(default_factory=dict)
    polls: int = 0
    operator_cpu_s: float | None = None
    emulator_cpu_s: float | None = None
    operator_rss_end_mib: float | None = None
    metrics: dict[str, Any] | None = None
    final_counts: dict[str, int] = field(default_factory=dict)


def spread(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    if not ordered:
        return {}

    def at(pct: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(pct / 100 * len(ordered)))], 2)

    return {"median": round(statistics.median(ordered), 2), "p90": at(90), "max": round(ordered[-1], 2)}


def proxy_documents(count: int) -> tuple[list[dict[str, Any]], list[str]]:
    """N copies of the http example with unique names, and the Secrets it needs."""
    example: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())
    docs = []
    for index in range(count):
        doc = copy.deepcopy(example)
        doc["metadata"] = {"name": f"{NAME_PREFIX}-{index:04d}"}
        docs.append(doc)
    return docs, referenced_secrets(parse_spec(example["spec"]))


@dataclass
class Tracker:
    """One polled phase: what counts as progress (a changing tuple), when it is done, where it stands."""

    what: str
    timeout: float
    progress: Callable[[Snapshot, float], tuple[int, ...]]
    done: Callable[[Snapshot], bool]
    describe: Callable[[Snapshot, float], str]


class Run:
    def __init__(self, options: Options, work: Path) -> None:
        self.options = options
        self.work = work
        self.started = time.perf_counter()
        self.env: dict[str, str] = {}
        self.cluster: Mirror | None = None
        self.sampler: Sampler | None = None
        self.metrics_url = ""
        self.names: list[str] = []
        self.metrics_before: OperatorMetrics | None = None

    # -- helpers ------------------------------------------------------------------------------------------

    def now(self) -> float:
        return time.perf_counter() - self.started

    def cpu(self, label: str) -> float | None:
        assert self.sampler is not None
        sample = self.sampler.sample()[label]
        return sample.cpu_s if sample else None

    def rss_mib(self, label: str) -> float | None:
        assert self.sampler is not None
        sample = self.sampler.sample()[label]
        return mib(sample.rss_kib) if sample else None

    def setup(self) -> None:
        docs, secrets = proxy_documents(self.options.count)
        self.names = [doc["metadata"]["name"] for doc in docs]
        setup_objects: list[dict[str, Any]] = [
            {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE}},
            *(
                {
                    "apiVersion": "v1",
                    "kind": "Secret",
                    "metadata": {"name": secret, "namespace": NAMESPACE},
                    "stringData": {"api-key": "dummy", "tokens": "dummy"},
                }
                for secret in secrets
            ),
        ]
        # The namespace first: kubectl checks it exists before applying what goes into it.
        for index, obj in enumerate(setup_objects):
            path = self.work / f"setup-{index}.yaml"
            path.write_text(yaml.safe_dump(obj))
            kubectl(
                ["apply", "--validate=false", "-f", str(path)],
                self.env,
                self.work / "kubectl-setup.log",
                SETUP_TIMEOUT_S,
            )
        (self.work / "proxies.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))

    # -- phases -------------------------------------------------------------------------------------------

    def apply_phase(self, phase: Phase) -> None:
        """kubectl apply of every proxy at once; poll until every one has its children and its status."""
        assert self.cluster is not None
        count, opts = len(self.names), self.options
        args = ["apply", "--validate=false", "-n", NAMESPACE, "-f", str(self.work / "proxies.yaml")]
        log = self.work / "kubectl-apply.log"
        cpu_before = {label: self.cpu(label) for label in ("operator", "emulator")}
        first_seen: dict[str, dict[str, float]] = {"exists": {}, "children": {}, "status": {}}
        assert KUBECTL is not None
        t0 = time.perf_counter()
        with started_command([KUBECTL, *args], self.env, log) as process:
            exited, ended = exit_timer(process)

            def progress(snap: Snapshot, t: float) -> tuple[int, ...]:
                for name in snap.proxies:
                    first_seen["exists"].setdefault(name, t)
                    if name not in first_seen["children"] and snap.has_children(name):
                        first_seen["children"][name] = t
                    if name not in first_seen["status"] and snap.status_written(name):
                        first_seen["status"][name] = t
                if phase.command_s is None and exited.is_set():
                    phase.command_s, phase.command_exit = round(ended[0] - t0, 2), process.returncode
                    if process.returncode != 0:
                        raise BenchFailure(
                            f"kubectl {' '.join(args)} exited {process.returncode}: {tail(log)}"
                        )
                return (*(len(seen) for seen in first_seen.values()), snap.children_total())

            def done(_: Snapshot) -> bool:
                return phase.command_s is not None and all(
                    len(first_seen[key]) == count for key in ("children", "status")
                )

            def describe(snap: Snapshot, t: float) -> str:
                return (
                    f"apply t={t:5.1f}s: kubectl {'running' if phase.command_s is None else 'done'}, "
                    f"{len(snap.proxies)}/{count} proxies, {len(first_seen['children'])} with children, "
                    f"{len(first_seen['status'])} with status, {snap.children_total()} children"
                )

            tracker = Tracker("apply", opts.timeout, progress, done, describe)
            phase.polls = self.poll_until(t0, tracker)
        for key, label in (("exists", "all proxies exist"), ("children", "all children present")):
            phase.milestones[label] = round(max(first_seen[key].values()), 2) if first_seen[key] else None
        phase.milestones["all statuses written"] = (
            round(max(first_seen["status"].values()), 2) if first_seen["status"] else None
        )
        phase.milestones["first proxy with children"] = (
            round(min(first_seen["children"].values()), 2) if first_seen["children"] else None
        )
        phase.per_proxy = {
            "children": spread(list(first_seen["children"].values())),
            "status": spread(list(first_seen["status"].values())),
        }
        phase.milestones["operator idle"] = self.settle(t0)
        self.finish_phase(phase, cpu_before)

    def settle(self, t0: float) -> float | None:
        """When the operator finished its last reconcile, once no other followed for IDLE_QUIET_S.

        Convergence is not the end of the work: the operator also reconciles a proxy on the event of the
        Deployment it created for it, and those can still be queued. None if it never fell quiet before
        SETTLE_LIMIT_S (from the 30 s resync timers on, it never does for long).
        """
        last_count, last_change = -1, time.perf_counter()
        deadline = time.perf_counter() + SETTLE_LIMIT_S
        while time.perf_counter() < deadline:
            metrics = OperatorMetrics.read(self.metrics_url)
            if metrics is None:
                return None
            if metrics.reconcile_count != last_count:
                last_count, last_change = metrics.reconcile_count, time.perf_counter()
            elif time.perf_counter() - last_change >= IDLE_QUIET_S:
                print(f"operator idle at t={last_change - t0:.1f}s", file=sys.stderr)
                return round(last_change - t0, 2)
            time.sleep(METRICS_POLL_S)
        return None

    def hold_phase(self, phase: Phase) -> None:
        """Steady state: every proxy's resync timer fires once; nothing should change."""
        assert self.cluster is not None
        cpu_before = {label: self.cpu(label) for label in ("operator", "emulator")}
        deadline = time.perf_counter() + self.options.hold
        while (left := deadline - time.perf_counter()) > 0:
            time.sleep(min(left, PROGRESS_EVERY_S))
            print(f"hold: {self.options.hold - max(left, 0):.0f}/{self.options.hold:.0f} s", file=sys.stderr)
        snap = self.cluster.snapshot()
        phase.final_counts = {
            "proxies": len(snap.proxies),
            "with children": sum(snap.has_children(n) for n in snap.proxies),
            "with status": sum(snap.status_written(n) for n in snap.proxies),
            "with PodDisruptionBudget": sum(
                snap.has_children(n, ["PodDisruptionBudget"]) for n in snap.proxies
            ),
            "degraded": sum(degraded(p) for p in snap.proxies.values()),
        }
        self.finish_phase(phase, cpu_before)

    def delete_phase(self, phase: Phase) -> None:
        """kubectl delete of every proxy; poll until they and all their children are gone."""
        assert self.cluster is not None
        opts = self.options
        args = ["delete", "--wait=false", "-n", NAMESPACE, "-f", str(self.work / "proxies.yaml")]
        log = self.work / "kubectl-delete.log"
        cpu_before = {label: self.cpu(label) for label in ("operator", "emulator")}
        owned_uids = {p["metadata"]["uid"] for p in self.cluster.snapshot().proxies.values()}
        gone: dict[str, float] = {}
        assert KUBECTL is not None
        t0 = time.perf_counter()

        def remaining_children(snap: Snapshot) -> int:
            return sum(
                1 for by_name in snap.children.values() for uids in by_name.values() if uids & owned_uids
            )

        with started_command([KUBECTL, *args], self.env, log) as process:
            exited, ended = exit_timer(process)

            def progress(snap: Snapshot, t: float) -> tuple[int, ...]:
                if phase.command_s is None and exited.is_set():
                    phase.command_s, phase.command_exit = round(ended[0] - t0, 2), process.returncode
                    if process.returncode != 0:
                        raise BenchFailure(
                            f"kubectl {' '.join(args)} exited {process.returncode}: {tail(log)}"
                        )
                terminating = sum(1 for p in snap.proxies.values() if p["metadata"].get("deletionTimestamp"))
                if terminating == len(snap.proxies):
                    gone.setdefault("all proxies marked for deletion", t)
                if not snap.proxies:
                    gone.setdefault("all proxies gone", t)
                if not remaining_children(snap):
                    gone.setdefault("all children gone", t)
                return len(snap.proxies), terminating, remaining_children(snap)

            def done(snap: Snapshot) -> bool:
                return phase.command_s is not None and not snap.proxies and not remaining_children(snap)

            def describe(snap: Snapshot, t: float) -> str:
                return (
                    f"delete t={t:5.1f}s: kubectl {'running' if phase.command_s is None else 'done'}, "
                    f"{len(snap.proxies)} proxies left, {remaining_children(snap)} children left"
                )

            tracker = Tracker("delete", opts.delete_timeout, progress, done, describe)
            phase.polls = self.poll_until(t0, tracker)
        for label in ("all proxies marked for deletion", "all proxies gone", "all children gone"):
            phase.milestones[label] = round(gone[label], 2) if label in gone else None
        self.finish_phase(phase, cpu_before)

    def poll_until(self, t0: float, tracker: Tracker) -> int:
        """Look at the mirror every `--poll` s until `done`; a stall or the deadline is a `BenchFailure`."""
        assert self.cluster is not None
        polls, last_change, last_print = 0, 0.0, 0.0
        state: tuple[int, ...] | None = None
        while True:
            poll_started = time.perf_counter()
            snap = self.cluster.snapshot()
            t = time.perf_counter() - t0
            polls += 1
            new_state = tracker.progress(snap, t)
            if new_state != state:
                state, last_change = new_state, t
            if tracker.done(snap):
                print(tracker.describe(snap, t), file=sys.stderr)
                return polls
            if t - last_print >= PROGRESS_EVERY_S:
                print(tracker.describe(snap, t), file=sys.stderr)
                last_print = t
            if t - last_change > self.options.stall:
                raise BenchFailure(
                    f"{tracker.what}: no progress for {self.options.stall:.0f} s (last change at "
                    f"t={last_change:.1f} s); {tracker.describe(snap, t)}; logs in {self.work}"
                )
            if t > tracker.timeout:
                raise BenchFailure(
                    f"{tracker.what}: not done within {tracker.timeout:.0f} s; {tracker.describe(snap, t)}"
                )
            time.sleep(max(0.0, self.options.poll - (time.perf_counter() - poll_started)))

    def finish_phase(self, phase: Phase, cpu_before: Mapping[str, float | None]) -> None:
        for label in ("operator", "emulator"):
            before, after = cpu_before[label], self.cpu(label)
            used = round(after - before, 2) if before is not None and after is not None else None
            setattr(phase, f"{label}_cpu_s", used)
        phase.operator_rss_end_mib = self.rss_mib("operator")


def degraded(proxy: Mapping[str, Any]) -> bool:
    for condition in (proxy.get("status") or {}).get("conditions") or ():
        if condition.get("type") == "Degraded":
            return bool(condition.get("status") == "True")
    return False


# --- orchestration -----------------------------------------------------------------------------------------


def loadavg() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def kubectl_version() -> str:
    if KUBECTL is None:
        return "?"
    try:
        out = subprocess.run(
            [KUBECTL, "version", "--client", "-o", "json"], capture_output=True, check=True, timeout=30
        ).stdout
        return str(json.loads(out)["clientVersion"]["gitVersion"])
    except (subprocess.SubprocessError, OSError, ValueError, KeyError):
        return "?"


@dataclass
class Ports:
    emulator: int = field(default_factory=free_port)
    metrics: int = field(default_factory=free_port)
    liveness: int = field(default_factory=free_port)


@dataclass
class Outcome:
    """What a run measured, also when it failed part-way."""

    phases: dict[str, Phase] = field(
        default_factory=lambda: {n: Phase() for n in ("apply", "hold", "delete")}
    )
    operator: dict[str, Any] = field(default_factory=dict)
    emulator: dict[str, Any] = field(default_factory=dict)
    operator_log: dict[str, Any] = field(default_factory=dict)
    watch: dict[str, Any] = field(default_factory=dict)
    error: str | None = None


def start_processes(
    stack: contextlib.ExitStack, bench: Run, ports: Ports
) -> tuple[ProcessHandle, ProcessHandle]:
    """The emulator (then the set-up objects), then the operator; both stopped by PID when `stack` closes."""
    emulator = stack.enter_context(
        running_process(
            [
                PYTHON,
                THIS_FILE,
                "--serve-emulator",
                str(ports.emulator),
                "--emulator",
                bench.options.emulator,
            ],
            port=ports.emulator,
            log_dir=bench.work,
            label="emulator",
            stop_timeout=EMULATOR_STOP_S,
        )
    )
    bench.setup()
    bench.cluster = stack.enter_context(Mirror(f"http://{LOOPBACK}:{ports.emulator}"))
    operator = stack.enter_context(
        running_process(
            [
                OPERATOR_BIN,
                "run",
                "--all-namespaces",
                "--standalone",
                "--liveness",
                f"http://{LOOPBACK}:{ports.liveness}/healthz",
            ],
            port=ports.metrics,  # served from the operator's startup handler: its runtime is ready
            env={
                "KUBECONFIG": bench.env["KUBECONFIG"],
                "MCPLANE_METRICS_ADDRESS": f"{LOOPBACK}:{ports.metrics}",
            },
            log_dir=bench.work,
            label="operator",
            ready_timeout=OPERATOR_READY_S,
            stop_timeout=OPERATOR_STOP_S,
        )
    )
    wait_for_liveness(ports.liveness)
    print(
        f"emulator pid {emulator.pid} on port {ports.emulator}; operator pid {operator.pid}, "
        f"metrics on {ports.metrics}, liveness on {ports.liveness}",
        file=sys.stderr,
    )
    return emulator, operator


def measure(bench: Run, outcome: Outcome, emulator: ProcessHandle, operator: ProcessHandle) -> None:
    """The idle baseline, then apply, hold and delete, each with the operator's metrics over the phase."""
    assert bench.sampler is not None
    phases, options = outcome.phases, bench.options
    time.sleep(IDLE_BASELINE_S)  # the operator has listed (nothing) and settled
    outcome.operator["rss_idle_mib"] = bench.rss_mib("operator")
    outcome.operator["cpu_startup_s"] = bench.cpu("operator")
    outcome.emulator["rss_idle_mib"] = bench.rss_mib("emulator")
    before = bench.metrics_before = OperatorMetrics.read(bench.metrics_url)
    bench.apply_phase(phases["apply"])
    settled = OperatorMetrics.read(bench.metrics_url)
    phases["apply"].metrics = metrics_dict(settled, before)
    if options.hold > 0:
        bench.hold_phase(phases["hold"])
    held = OperatorMetrics.read(bench.metrics_url)
    phases["hold"].metrics = metrics_dict(held, settled) if options.hold > 0 else None
    bench.delete_phase(phases["delete"])
    phases["delete"].metrics = metrics_dict(OperatorMetrics.read(bench.metrics_url), held)


def record_processes(bench: Run, outcome: Outcome) -> None:
    """Final and peak memory and total CPU of both processes, while they still run."""
    sampler = bench.sampler
    if sampler is None:
        return
    last = sampler.sample()
    for label, into in (("operator", outcome.operator), ("emulator", outcome.emulator)):
        sample = last[label]
        into["rss_final_mib"] = mib(sample.rss_kib) if sample else None
        into["rss_peak_vmhwm_mib"] = mib(sample.hwm_kib) if sample else None
        into["rss_peak_sampled_mib"] = mib(sampler.peak_rss_kib(label))
        into["cpu_total_s"] = round(sample.cpu_s, 2) if sample else None
        into["timeline"] = sampler.timeline(label)
    outcome.operator["metrics_total"] = metrics_dict(
        OperatorMetrics.read(bench.metrics_url), bench.metrics_before
    )


def run(options: Options) -> dict[str, Any]:
    if KUBECTL is None:
        raise SystemExit("kubectl is not installed (expected /usr/bin/kubectl)")
    started_at = datetime.now(UTC).isoformat(timespec="seconds")
    load_start = loadavg()
    work = Path(tempfile.mkdtemp(prefix="mcplane-operator-scale-"))
    print(f"logs and files in {work}", file=sys.stderr)
    bench, ports, outcome = Run(options, work), Ports(), Outcome()
    kubeconfig = work / "kubeconfig"
    kubeconfig.write_text(kubeconfig_for(f"http://{LOOPBACK}:{ports.emulator}", NAMESPACE))
    bench.env = {
        **os.environ,
        "KUBECONFIG": str(kubeconfig),
        "KUBECACHEDIR": str(work / "kubectl-cache"),  # kubectl's discovery cache: ours, not ~/.kube
    }
    bench.metrics_url = f"http://{LOOPBACK}:{ports.metrics}/metrics"
    operator: ProcessHandle | None = None
    with contextlib.ExitStack() as stack:
        try:
            emulator, operator = start_processes(stack, bench, ports)
            bench.sampler = stack.enter_context(
                Sampler({"operator": operator.pid, "emulator": emulator.pid}, bench.started)
            )
            measure(bench, outcome, emulator, operator)
        except (BenchFailure, ProcessStartError) as exc:
            outcome.error = str(exc)
            print(f"FAILED: {outcome.error}", file=sys.stderr)
        finally:
            record_processes(bench, outcome)
            if bench.cluster is not None:
                outcome.watch = {"events": bench.cluster.events, "errors": bench.cluster.errors[:20]}
            if operator is not None:  # stopped here to time it (the stack's stop then finds it gone)
                stopping = time.perf_counter()
                stop_process(operator.process, OPERATOR_STOP_S)
                outcome.operator["stop_s"] = round(time.perf_counter() - stopping, 2)
    # The processes are stopped (by PID): the operator's log is complete.
    if operator is not None:
        outcome.operator["exit_code"] = operator.process.returncode
        outcome.operator_log = log_summary(operator.log_text())
    report: dict[str, Any] = {
        "started_at": started_at,
        "result": "ok" if outcome.error is None else "failed",
        "error": outcome.error,
        "parameters": asdict(options) | {"out": str(options.out)},
        "environment": {
            "cpus": os.cpu_count(),
            "loadavg_start": load_start,
            "loadavg_end": loadavg(),
            "python": platform.python_version(),
            "kopf": metadata.version("kopf"),
            "kubectl": kubectl_version(),
            "platform": platform.platform(),
            "work_dir": str(work),
        },
        "phases": {name: asdict(phase) for name, phase in outcome.phases.items()},
        "operator": outcome.operator,
        "operator_log": outcome.operator_log,
        "emulator": outcome.emulator,
        "watch": outcome.watch,
        "runtime_s": round(bench.now(), 1),
    }
    report["markdown"] = markdown(report)
    return report


def wait_for_liveness(port: int) -> None:
    """kopf answers its liveness probe once it runs; apply nothing before."""
    deadline = time.monotonic() + OPERATOR_READY_S
    url = f"http://{LOOPBACK}:{port}/healthz"
    while True:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise BenchFailure(
                f"the operator's liveness probe {url} did not answer within {OPERATOR_READY_S} s"
            )
        time.sleep(0.2)


def metrics_dict(after: OperatorMetrics | None, before: OperatorMetrics | None) -> dict[str, Any] | None:
    if after is None:
        return None
    delta = after.minus(before)
    return asdict(delta) | {"mean_reconcile_ms": delta.mean_ms}


# --- the report -------------------------------------------------------------------------------------------


def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    return f"{value}{unit}"


def markdown(report: dict[str, Any]) -> str:
    params, env = report["parameters"], report["environment"]
    count = params["count"]
    apply_, hold, delete = (report["phases"][name] for name in ("apply", "hold", "delete"))
    op, emu = report["operator"], report["emulator"]
    lines = [
        f"# Operator scale check: {count} MCPProxies applied at once",
        "",
        f"{count} copies of `manifests/examples/http.yaml` in one file, `kubectl apply --validate=false -f`, "
        f"against the API emulator ({params['emulator']}); operator `mcplane-operator run --all-namespaces "
        f"--standalone` (kopf {env['kopf']}); the cluster is watched and looked at every {params['poll']} s. "
        f"{env['cpus']} CPUs, load {env['loadavg_start']} at the start, {env['loadavg_end']} at the end; "
        f"{report['started_at']}.",
        "",
    ]
    if report["error"]:
        lines += [f"**FAILED**: {report['error']}", ""]
    per = apply_["per_proxy"]

    def spread_text(values: Mapping[str, float]) -> str:
        return f"{values['median']} / {values['p90']} / {values['max']}" if values else "-"

    lines += [
        "| apply (seconds from the start of `kubectl apply`) | s |",
        "|---|---:|",
        f"| `kubectl apply` of {count} objects returned | {fmt(apply_['command_s'])} |",
        f"| first proxy with its children | {fmt(apply_['milestones'].get('first proxy with children'))} |",
        f"| **all {count} have Deployment, Service, ConfigMap** | "
        f"**{fmt(apply_['milestones'].get('all children present'))}** |",
        f"| **all {count} statuses written (observedGeneration)** | "
        f"**{fmt(apply_['milestones'].get('all statuses written'))}** |",
        f"| per proxy, children present: median / p90 / max | {spread_text(per.get('children', {}))} |",
        f"| per proxy, status written: median / p90 / max | {spread_text(per.get('status', {}))} |",
        f"| operator idle (its last reconcile; none for {IDLE_QUIET_S:.0f} s after) | "
        f"{fmt(apply_['milestones'].get('operator idle'))} |",
        "",
        "| delete (seconds from the start of `kubectl delete --wait=false`) | s |",
        "|---|---:|",
        f"| `kubectl delete` of {count} objects returned | {fmt(delete['command_s'])} |",
        f"| all proxies gone (finalizers removed) | {fmt(delete['milestones'].get('all proxies gone'))} |",
        f"| **all children garbage-collected** | **{fmt(delete['milestones'].get('all children gone'))}** |",
        "",
    ]
    total = op.get("metrics_total") or {}
    reconciles = ", ".join(f"{k} {v}" for k, v in sorted((total.get("reconciles") or {}).items()) if v)

    def phase_metrics(phase: Mapping[str, Any]) -> str:
        m = phase.get("metrics") or {}
        return f"{fmt(m.get('reconcile_count'))} ({fmt(m.get('mean_reconcile_ms'), ' ms')} mean)"

    levels = report["operator_log"].get("lines_by_level", {})
    lines += [
        "| operator process | apply → idle | hold | delete | whole run |",
        "|---|---:|---:|---:|---:|",
        f"| CPU seconds | {fmt(apply_['operator_cpu_s'])} | {fmt(hold['operator_cpu_s'])} | "
        f"{fmt(delete['operator_cpu_s'])} | {fmt(op.get('cpu_total_s'))} |",
        f"| RSS at the end of the phase (MiB) | {fmt(apply_['operator_rss_end_mib'])} | "
        f"{fmt(hold['operator_rss_end_mib'])} | {fmt(delete['operator_rss_end_mib'])} | "
        f"{fmt(op.get('rss_final_mib'))} |",
        f"| reconciles (mean duration) | {phase_metrics(apply_)} | {phase_metrics(hold)} | "
        f"{phase_metrics(delete)} | {fmt(total.get('reconcile_count'))} |",
        "| reconcile errors (`mcplane_operator_reconcile_errors_total`) | "
        + " | ".join(fmt((p.get("metrics") or {}).get("reconcile_errors")) for p in (apply_, hold, delete))
        + f" | {fmt(total.get('reconcile_errors'))} |",
        "",
        "| operator memory | MiB |",
        "|---|---:|",
        f"| RSS idle, before the apply | {fmt(op.get('rss_idle_mib'))} |",
        f"| **peak RSS (VmHWM)** | **{fmt(op.get('rss_peak_vmhwm_mib'))}** |",
        f"| peak RSS, sampled every {SAMPLE_INTERVAL_S} s | {fmt(op.get('rss_peak_sampled_mib'))} |",
        f"| **final RSS** (after delete) | **{fmt(op.get('rss_final_mib'))}** |",
        "",
        f"- Reconciles by result over the run: {reconciles or '-'}. Operator log: "
        + ", ".join(f"{level} {n}" for level, n in sorted(levels.items()))
        + f", {report['operator_log'].get('tracebacks', 0)} tracebacks.",
    ]
    if hold.get("final_counts"):
        counts = hold["final_counts"]
        lines += [
            f"- After the {params['hold']} s hold: {counts['proxies']} proxies, {counts['with children']} "
            f"with their children, {counts['with status']} with a status, "
            f"{counts['with PodDisruptionBudget']} with a PodDisruptionBudget, "
            f"{counts['degraded']} Degraded.",
        ]
    lines += [
        f"- Operator stop (SIGTERM at the end): {fmt(op.get('stop_s'), ' s')}, exit code "
        f"{fmt(op.get('exit_code'))} (-9: killed after {OPERATOR_STOP_S:.0f} s).",
        f"- Emulator ({params['emulator']}; one event loop, shares the {env['cpus']} CPUs): CPU seconds "
        f"apply {fmt(apply_['emulator_cpu_s'])}, hold {fmt(hold['emulator_cpu_s'])}, delete "
        f"{fmt(delete['emulator_cpu_s'])}; peak RSS {fmt(emu.get('rss_peak_vmhwm_mib'))} MiB. "
        f"Watch events seen: {fmt(report['watch'].get('events'))}, "
        f"watch errors: {len(report['watch'].get('errors') or [])}.",
    ]
    shapes = report["operator_log"].get("problem_shapes") or []
    if shapes:
        lines += ["", "Most frequent WARNING/ERROR lines of the operator (digits folded to N):", ""]
        lines += [f"- {s['count']}x: `{s['line']}`" for s in shapes]
    return "\n".join(lines) + "\n"


# --- entry point -----------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--count", type=int, default=500, help="MCPProxy resources applied at once")
    parser.add_argument("--poll", type=float, default=0.25, help="seconds between looks at the cluster")
    parser.add_argument("--hold", type=float, default=40.0, help="seconds of steady state (0: none)")
    parser.add_argument("--stall", type=float, default=60.0, help="fail after this long without progress")
    parser.add_argument("--timeout", type=float, default=300.0, help="deadline of the apply phase, s")
    parser.add_argument("--delete-timeout", type=float, default=180.0, help="deadline of the delete phase, s")
    parser.add_argument(
        "--emulator",
        choices=EMULATORS,
        default="indexed",
        help="indexed: the tests' emulator without its quadratic costs (default); tests: exactly the tests'",
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results", help="results directory")
    parser.add_argument("--serve-emulator", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.count < 1 or args.count > 9999:
        parser.error("--count must be between 1 and 9999")
    if (
        not 0.05 <= args.poll <= 10
        or args.hold < 0
        or min(args.stall, args.timeout, args.delete_timeout) <= 0
    ):
        parser.error("--poll must be in [0.05, 10], --hold >= 0, the others positive")
    return args


def interrupt(signum: int, _frame: FrameType | None) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    if args.serve_emulator is not None:
        serve_emulator(args.serve_emulator, args.emulator)
        return
    options = Options(
        count=args.count,
        poll=args.poll,
        hold=args.hold,
        stall=args.stall,
        timeout=args.timeout,
        delete_timeout=args.delete_timeout,
        emulator=args.emulator,
        out=args.out,
    )
    signal.signal(signal.SIGTERM, interrupt)  # the context managers then stop every process by PID
    try:
        report = run(options)
    except KeyboardInterrupt as exc:
        print(f"interrupted ({exc or 'SIGINT'}); started processes were stopped", file=sys.stderr)
        raise SystemExit(130) from None
    write_report(options.out, "operator_scale", report)
    if report["error"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
