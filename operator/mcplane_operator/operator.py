"""Run the operator: kopf, started programmatically, with the handlers of `mcplane_operator.handlers`.

Scope: the namespaces given (flag), else `MCPLANE_WATCH_NAMESPACES` (comma-separated), else the whole cluster.
Only one replica acts at a time (kopf peering, `mcplane-operator`; needs kopf's peering CRDs) unless
`standalone` is set. kopf serves its liveness probe on `liveness_endpoint`; the operator's own metrics go to
the address in the config (`MCPLANE_METRICS_ADDRESS`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import kopf

from mcplane_operator.handlers import OperatorConfig

WATCH_NAMESPACES_ENV = "MCPLANE_WATCH_NAMESPACES"
DEFAULT_LIVENESS_ENDPOINT = "http://0.0.0.0:8080/healthz"


def watch_scope(
    namespaces: Sequence[str] | None, all_namespaces: bool, environ: Mapping[str, str] | None = None
) -> tuple[bool, list[str]]:
    """(cluster-wide, namespaces): flags first, then the environment, then the whole cluster."""
    given = [ns.strip() for ns in namespaces or () if ns.strip()]
    if given and all_namespaces:
        raise ValueError("watch either some namespaces or all of them, not both")
    if given:
        return False, given
    if all_namespaces:
        return True, []
    env = os.environ if environ is None else environ
    from_env = [ns.strip() for ns in env.get(WATCH_NAMESPACES_ENV, "").split(",") if ns.strip()]
    if from_env and from_env != ["*"]:
        return False, from_env
    return True, []


def run(
    namespaces: list[str] | None = None,
    all_namespaces: bool = False,
    *,
    standalone: bool = False,
    liveness_endpoint: str | None = DEFAULT_LIVENESS_ENDPOINT,
    config: OperatorConfig | None = None,
    verbose: bool = False,
) -> None:
    """Run until SIGTERM/SIGINT. Settings are made in the handlers' one `@kopf.on.startup`."""
    clusterwide, watched = watch_scope(namespaces, all_namespaces)
    config = config or OperatorConfig.from_env()  # a bad value fails here, before anything starts
    kopf.configure(verbose=verbose, log_prefix=True)  # "[namespace/name] message", as `kopf run` logs
    settings = kopf.OperatorSettings()
    # Named namespaces are served as named: kopf's scanning would list and watch every Namespace, which a
    # namespaced install does not grant (RBAC). The CRDs are installed before the operator starts.
    settings.scanning.disabled = not clusterwide
    kopf.run(
        settings=settings,
        clusterwide=clusterwide,
        namespaces=watched,
        standalone=standalone,
        liveness_endpoint=liveness_endpoint,
        memo=kopf.Memo(config=config),
    )
