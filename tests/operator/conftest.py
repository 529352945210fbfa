"""Operator test fixtures: the API emulator on a free loopback port, and a kubeconfig that points at it.

`KUBECONFIG` is set when this file is imported, before any test module imports `kubernetes` (whose default
kubeconfig path is read at import time), and it points at a file of this session only: nothing in these
tests can reach a real cluster. The file is written once the emulator listens.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import kmock
import pytest

from tests.operator.emulator import EmulatorThread

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "manifests" / "crds" / "mcpproxies.mcplane.dev.yaml"
KUBE_DIR = Path(tempfile.mkdtemp(prefix="mcplane-operator-tests-"))
atexit.register(shutil.rmtree, KUBE_DIR, ignore_errors=True)
KUBECONFIG = KUBE_DIR / "kubeconfig"
os.environ["KUBECONFIG"] = str(KUBECONFIG)
os.environ["KUBECACHEDIR"] = str(KUBE_DIR / "kubectl-cache")  # kubectl's discovery cache: ours, not ~/.kube
DUMMY_TOKEN = "mcplane-test-token"  # the emulator checks no credentials; clients want some


def kubeconfig_for(server: str, namespace: str = "default", token: str = DUMMY_TOKEN) -> str:
    return f"""apiVersion: v1
kind: Config
clusters:
- name: emulator
  cluster:
    server: {server}
users:
- name: tester
  user:
    token: {token}
contexts:
- name: emulator
  context:
    cluster: emulator
    user: tester
    namespace: {namespace}
current-context: emulator
"""


@dataclass(frozen=True)
class Cluster:
    """The running emulator, its URL, and the kubeconfig that reaches it."""

    server: EmulatorThread
    url: str
    kubeconfig: Path

    def request_log(self) -> list[kmock.Request]:
        """Every request the emulator has served so far, oldest first (method, url, headers, body)."""
        return self.server.call(list)


@pytest.fixture(scope="session")
def cluster() -> Iterator[Cluster]:
    """One emulated API server for the session, with the MCPProxy CRD registered from the project's file."""
    with EmulatorThread((CRD_FILE,)) as server:
        KUBECONFIG.write_text(kubeconfig_for(server.url))
        yield Cluster(server=server, url=server.url, kubeconfig=KUBECONFIG)


@contextmanager
def emulated_cluster(directory: Path) -> Iterator[Cluster]:
    """A cluster of one's own (fresh store, empty request log), its kubeconfig written in `directory`.

    For tests that must see only their own requests or install CRDs others must not see; clients reach it
    through `--kubeconfig`/`KUBECONFIG=<its kubeconfig>`, not the session's `KUBECONFIG`.
    """
    with EmulatorThread((CRD_FILE,)) as server:
        kubeconfig = directory / "kubeconfig"
        kubeconfig.write_text(kubeconfig_for(server.url))
        yield Cluster(server=server, url=server.url, kubeconfig=kubeconfig)


# The ServiceMonitor CRD as the Prometheus Operator installs it (schema left open): with it, the operator
# manages ServiceMonitors.
SERVICE_MONITOR_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "servicemonitors.monitoring.coreos.com"},
    "spec": {
        "group": "monitoring.coreos.com",
        "scope": "Namespaced",
        "names": {"plural": "servicemonitors", "singular": "servicemonitor", "kind": "ServiceMonitor"},
        "versions": [
            {
                "name": "v1",
                "served": True,
                "storage": True,
                "schema": {
                    "openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
                },
            }
        ],
    },
}
