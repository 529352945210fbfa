"""The status of an MCPProxy: `observedGeneration`, three conditions, and the facts the operator observed.

Conditions follow the Kubernetes API conventions: `type`, `status` ("True"/"False"), a one-word CamelCase
`reason`, a human `message`, `lastTransitionTime` (moved only when `status` flips) and `observedGeneration`.
kopf writes status as a JSON merge patch, which replaces lists whole, so `build_status` always returns the
complete list of conditions, never a delta.
"""

from __future__ import annotations

import dataclasses
import datetime
import re
from collections.abc import Mapping, Sequence
from typing import Any

READY = "Ready"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
CONDITION_TYPES = (READY, PROGRESSING, DEGRADED)

# Reasons: why a condition has its status. One CamelCase word each, as `kubectl describe` users expect.
AVAILABLE = "Available"  # Ready: every wanted replica is ready
REPLICAS_NOT_READY = "ReplicasNotReady"  # Ready: fewer ready replicas than wanted
SCALED_TO_ZERO = "ScaledToZero"  # Ready: zero replicas wanted, nothing serves
ROLLING_OUT = "RollingOut"  # Progressing: the Deployment has not caught up with its spec
ROLLED_OUT = "RolledOut"  # Progressing: the rollout is complete
RECONCILED = "Reconciled"  # Degraded: false, the children match the spec
INVALID_SPEC = "InvalidSpec"  # the spec does not parse or breaks a cross-field rule
SECRET_MISSING = "SecretMissing"  # a Secret the pods need does not exist
APPLY_FAILED = "ApplyFailed"  # the API server refused a child
BLOCKED = "Blocked"  # Progressing: nothing can roll until the problem is fixed

_REASON = re.compile(r"^[A-Z][A-Za-z0-9]*$")


@dataclasses.dataclass(frozen=True)
class Condition:
    """One condition as the operator judges it, before times and generations are attached."""

    type: str
    status: bool
    reason: str
    message: str

    def __post_init__(self) -> None:
        if self.type not in CONDITION_TYPES:
            raise ValueError(f"unknown condition type {self.type!r}")
        if not _REASON.match(self.reason):
            raise ValueError(f"a condition reason is one CamelCase word, not {self.reason!r}")


@dataclasses.dataclass(frozen=True)
class Rollout:
    """What the Deployment reports, reduced to what the conditions need."""

    wanted: int
    ready: int
    updated: int
    total: int
    observed: bool  # the Deployment controller has seen the Deployment's latest generation

    @classmethod
    def of(cls, deployment: Mapping[str, Any] | None) -> Rollout:
        """Read a Deployment object (None: it does not exist yet)."""
        if deployment is None:
            return cls(wanted=1, ready=0, updated=0, total=0, observed=False)
        spec = deployment.get("spec") or {}
        status = deployment.get("status") or {}
        generation = int((deployment.get("metadata") or {}).get("generation", 0))
        return cls(
            wanted=int(spec.get("replicas", 1)),  # the API server's default when the field is absent
            ready=int(status.get("readyReplicas", 0)),
            updated=int(status.get("updatedReplicas", 0)),
            total=int(status.get("replicas", 0)),
            observed=int(status.get("observedGeneration", 0)) >= generation,
        )

    @property
    def complete(self) -> bool:
        return self.observed and self.updated >= self.wanted and self.total <= self.updated


def rollout_conditions(rollout: Rollout) -> list[Condition]:
    """The children are applied: readiness and progress come from the Deployment."""
    if rollout.wanted == 0:
        ready = Condition(READY, False, SCALED_TO_ZERO, "replicas is 0: no pod serves this proxy")
    elif rollout.ready >= rollout.wanted:
        ready = Condition(READY, True, AVAILABLE, f"{rollout.ready}/{rollout.wanted} replicas ready")
    else:
        ready = Condition(
            READY, False, REPLICAS_NOT_READY, f"{rollout.ready}/{rollout.wanted} replicas ready"
        )
    if rollout.complete:
        progressing = Condition(PROGRESSING, False, ROLLED_OUT, "the Deployment is up to date")
    else:
        progressing = Condition(
            PROGRESSING,
            True,
            ROLLING_OUT,
            f"rolling out: {rollout.updated}/{rollout.wanted} replicas updated, {rollout.total} running",
        )
    degraded = Condition(DEGRADED, False, RECONCILED, "the ConfigMap, Deployment and Service match the spec")
    return [ready, progressing, degraded]


def failure_conditions(reason: str, message: str) -> list[Condition]:
    """The spec cannot be realised: nothing was rolled, and the message says what to fix."""
    return [
        Condition(READY, False, reason, message),
        Condition(PROGRESSING, False, BLOCKED, f"nothing rolls out until this is fixed: {message}"),
        Condition(DEGRADED, True, reason, message),
    ]


def now_rfc3339() -> str:
    return datetime.datetime.now(tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def merge_conditions(
    previous: Sequence[Mapping[str, Any]] | None,
    judged: Sequence[Condition],
    *,
    generation: int,
    now: str | None = None,
) -> list[dict[str, Any]]:
    """The complete conditions list: `lastTransitionTime` is kept unless the condition's status flipped."""
    before = {str(c.get("type")): c for c in previous or () if isinstance(c, Mapping)}
    stamp = now or now_rfc3339()
    merged: list[dict[str, Any]] = []
    for condition in judged:
        status = "True" if condition.status else "False"
        old = before.get(condition.type)
        unchanged = old is not None and old.get("status") == status and old.get("lastTransitionTime")
        merged.append(
            {
                "type": condition.type,
                "status": status,
                "reason": condition.reason,
                "message": condition.message,
                "lastTransitionTime": old["lastTransitionTime"] if unchanged and old else stamp,
                "observedGeneration": generation,
            }
        )
    return merged


def build_status(
    previous: Mapping[str, Any] | None,
    judged: Sequence[Condition],
    *,
    generation: int,
    ready_replicas: int | None = None,
    url: str | None = None,
    active_sessions: int | None = None,
    now: str | None = None,
) -> dict[str, Any]:
    """The status to write, as a merge patch: facts left as None are not written and keep their value."""
    status: dict[str, Any] = {
        "observedGeneration": generation,
        "conditions": merge_conditions(
            (previous or {}).get("conditions"), judged, generation=generation, now=now
        ),
    }
    for key, value in (("readyReplicas", ready_replicas), ("url", url), ("activeSessions", active_sessions)):
        if value is not None:
            status[key] = value
    return status


def condition(status: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any] | None:
    """One condition of a status, by type (for callers and tests that read status back)."""
    for item in (status or {}).get("conditions") or ():
        if isinstance(item, Mapping) and item.get("type") == type_:
            return item
    return None
