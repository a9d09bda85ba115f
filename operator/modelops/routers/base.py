"""The router interface, shaped like Flagger's: observe the backend, apply a traffic intent.

Finalizing (leaving only the stable version) is applying the intent "all on stable" with
create=False, so it needs no method of its own.

A router owns one backend object per ModelDeployment. It never decides anything: the
rollout engine decides, the router makes the backend match the decision and reports
what the backend really does (which versions are ready, which weights are live, and
whether someone changed them behind the operator's back).

Taking traffic off a candidate must always be possible, even once ModelVersions are
deleted: a router works from what the backend already has and needs a version's
ModelVersion only to write that version's artifact into a unit that does not carry it
yet. When that ModelVersion is gone it raises VersionUnavailable, never KeyError.

Writes are server-side applies under the field manager `modelops` (see `kube`): a router
computes, purely, the operator's complete applied configuration of the fields it drives on
an object (None when the live object already holds it, owned by the operator), and applies
it. Every apply carries every field the operator means to keep owning, since one it owned
and leaves out is removed: the identity it set when it created the object (owner annotation,
labels) and its bookkeeping annotations included. Fields other managers own (a GitOps
manifest's, a user's) are left alone, except those a router must drive: those it forces.
An object is created by an apply without force (a conflict, where another writer created it
meanwhile with other values, is a 409 as a POST's AlreadyExists was), and only after a read
showed it absent and the caller allows creating.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Protocol

from ..analysis.promql import TemplateQuery, observed
from ..api.modeldeployment import CheckTemplate, Serving
from ..api.modelversion import ModelVersionSpec
from ..kube import FieldPath, managed_fields
from ..rollout import TrafficIntent


# The shadow-comparison contract (docs/concepts/analysis.md, "Shadow agreement"): whatever compares a mirrored request's
# answers (a comparator beside the candidate, a job joining prediction logs) counts each compared request in
#   model_shadow_comparisons_total{namespace, model, version, outcome="agree"|"disagree"}
# with `version` the candidate's. Not a serving system's metric: the same query on every backend that mirrors.
_COMPARED = 'model_shadow_comparisons_total{namespace="{{namespace}}", model="{{model}}", version="{{version}}"'
_AGREED = _COMPARED + ', outcome="agree"}'
SHADOW_AGREEMENT = TemplateQuery(f"({observed(_AGREED)} or vector(0)) / {observed(_COMPARED + '}')}", observed(_COMPARED + "}"))

# The delayed ground truth contract (docs/concepts/analysis.md, "Accuracy from labels that arrive late"): whatever joins labels to predictions (a
# feedback endpoint, a job reading prediction logs) counts each prediction once, when it is as old as the check's
# gradingDelay (its grading age), by the label it had by then:
#   model_predictions_aged_total{namespace, model, version, grade="correct"|"wrong"|"none"}
# with `version` the version that made it; "none": no label by that age (a later one is never counted). Counting
# on arrival instead biases a window toward the outcomes labelled soonest. A new name, so that counters of the
# arrival-counting contract before it (model_predictions_graded_total) are never read as this one: the check has no
# data. Its samples are the predictions graded correct or wrong, counted as scraped (`observed`).
_AGED = 'model_predictions_aged_total{namespace="{{namespace}}", model="{{model}}", version="{{version}}"'
_GRADED = observed(_AGED + ', grade=~"correct|wrong"}')
_RIGHT = observed(_AGED + ', grade="correct"}')
ACCURACY = TemplateQuery(f"({_RIGHT} or vector(0)) / {_GRADED}", _GRADED)

# The drift score contract: a drift detector (Alibi Detect, Evidently...) watching a version's inputs exports its
# latest score as the gauge model_drift_score{namespace, model, version}, higher meaning more drift, once per
# evaluation. The check takes the highest score of the window; its samples are the scores reported in it.
_DRIFT = 'model_drift_score{namespace="{{namespace}}", model="{{model}}", version="{{version}}"}'
DRIFT_SCORE = TemplateQuery(f"max(max_over_time({_DRIFT}[{{{{window}}}}]))",
                            f"sum(count_over_time({_DRIFT}[{{{{window}}}}]))")

# The binned drift contract (docs/concepts/analysis.md, "Drift"): whatever sees a version's inputs counts each input in one bin of
# every feature it watches,
#   model_input_bin_total{namespace, model, version, feature, bin}   (every bin's counter created at 0), and
#   model_reference_bin_count{namespace, model, version, feature, bin}
# holds the number of the version's reference (training) inputs in each bin. A window's counts are counted as
# scraped (`observed`): increase()'s extrapolation would scale every count, and the test's statistic with them.
_BINS = 'model_input_bin_total{namespace="{{namespace}}", model="{{model}}", version="{{version}}"}'
_REFERENCE = 'model_reference_bin_count{namespace="{{namespace}}", model="{{model}}", version="{{version}}"}'
DRIFT_TEST = TemplateQuery(observed(_BINS, by="feature, bin"), reference=f"max by (feature, bin) ({_REFERENCE})")
CONTRACT_TEMPLATES: dict[CheckTemplate, TemplateQuery] = {CheckTemplate.accuracy: ACCURACY,
                                                          CheckTemplate.driftScore: DRIFT_SCORE,
                                                          CheckTemplate.driftTest: DRIFT_TEST}
"""The templates over the documented contracts rather than a backend's own metrics: every backend has them."""


@dataclass(frozen=True)
class Target:
    """The backend object one ModelDeployment drives."""

    namespace: str
    deployment: str
    """Name of the ModelDeployment."""
    serving: Serving

    def object_name(self, configured: str | None) -> str:
        return configured or self.deployment


KEEPS_NO_WARM = "this backend keeps no retained version deployed for the operator"


@dataclass(frozen=True)
class BackendState:
    ready_versions: frozenset[str] = frozenset()
    units: dict[str, str] = field(default_factory=dict)
    """Version -> the backend's serving unit for it (KServe revision, Seldon predictor, Service): {{revision}}."""
    drift: tuple[str, ...] = ()
    """Out-of-band changes of what the operator had set, in words."""
    serving_versions: frozenset[str] = frozenset()
    """Versions taking traffic that `ready_versions` leaves out, because the backend has not yet confirmed them as
    what it falls back to (KServe: the latest revision, all traffic sent to it, before KServe marks it rolled
    out). The Ready condition counts them; no decision does."""
    refused: tuple[str, ...] = ()
    """Parts of the backend object the operator will not drive, each in words naming it (Gateway API: a rule it
    cannot tell a pin from the model's). It drives the rest; the round reports these, and a status never says
    all traffic is on stable while there are any."""
    pins: dict[str, tuple[str, ...]] = field(default_factory=dict)
    """Version -> the user's pins routing requests to it alone, each in words naming it (never written)."""
    holds_rollouts: str | None = None
    """Why no rollout may start on this backend now, in words naming the fix (KServe copying the operator's
    bookkeeping into pods and revisions); a rollout in flight goes on and can always be rolled back. None: any may."""
    warm_ready: frozenset[str] = frozenset()
    """Versions deployed with no traffic, beside what is routed (TrafficIntent.warm), that the backend reports ready."""
    keeps_no_warm: str | None = KEEPS_NO_WARM
    """Why this backend keeps no version warm, in words; None: it keeps those the intent names."""
    read: dict[str, Any] | None = field(default=None, compare=False)
    """The backend object as this round's observe read it, for the round's apply to start from (its write is
    conditional on that read's resourceVersion); None: apply reads it."""


class Router(Protocol):
    templates: dict[CheckTemplate, TemplateQuery]
    """Built-in checks on this backend's own metrics."""

    def object_name(self, target: Target) -> str:
        """The backend object's name, as metrics label it ({{object}} in queries)."""
        ...

    async def observe(self, target: Target, versions: dict[str, ModelVersionSpec],
                      last: TrafficIntent | None) -> BackendState:
        """What the backend serves now; `last` is the intent applied before, to detect drift."""
        ...

    async def apply(self, target: Target, intent: TrafficIntent, versions: dict[str, ModelVersionSpec],
                    state: BackendState, *, create: bool = True) -> bool:
        """Make the backend carry `intent`; idempotent, so a replay after a crash is harmless.

        `versions` holds only the ModelVersions that still exist: a router works from what the
        backend already has and needs a version's spec only to create a unit for it
        (VersionUnavailable when that spec is gone). `create` is False when finalizing: a
        backend object that is gone stays gone (nothing to do, True).

        True when the backend already carried it and nothing is pending (the caller may rest)."""
        ...


class BackendMisconfigured(Exception):
    """The ModelDeployment's serving section does not fit what is in the cluster (says what to fix)."""


class VersionUnavailable(BackendMisconfigured):
    """The ModelVersion for a version is gone and the backend has no unit serving it.

    Raised only when a router would need that version's artifact to create (or rewrite) a
    unit for it; whatever the backend already serves is used without the ModelVersion."""

    def __init__(self, version: str, needed_for: str):
        self.version = version
        super().__init__(f"the ModelVersion for {version} is gone and the backend has no unit serving it "
                         f"({needed_for} needs its artifact): recreate the ModelVersion or change spec.version")


class BackendNotOwned(BackendMisconfigured):
    """The backend object exists but is not this ModelDeployment's to drive."""


# Names the one ModelDeployment that drives a backend object: set on every object the operator
# creates, and added by hand to hand over an existing one. Two deployments can never drive one object.
OWNER_ANNOTATION = "modelops.io/deployment"


class OwnedObjects:
    """A ModelDeployment's view of backend objects: it reads, writes and deletes only those naming it."""

    def __init__(self, kube: Any):
        self.kube = kube

    async def get(self, resource: Any, target: Target, name: str) -> dict[str, Any] | None:
        obj = await self.kube.get(resource, target.namespace, name)
        if obj is not None:
            owner = annotations_of(obj).get(OWNER_ANNOTATION)
            if owner != target.deployment:
                whose = f"driven by ModelDeployment {owner}" if owner else "not driven by any ModelDeployment"
                raise BackendNotOwned(f"{resource.kind} {name} is {whose}: annotate it {OWNER_ANNOTATION}="
                                      f"{target.deployment} to hand it to this one")
        return obj

    async def create(self, resource: Any, target: Target, config: dict[str, Any]) -> dict[str, Any]:
        """Only after `get` in the same round has shown the object absent: an apply without force that names
        this deployment, so that a writer who created it meanwhile with other values gets it refused (409)."""
        meta = config["metadata"]
        owned = {**meta, "annotations": {**(meta.get("annotations") or {}), OWNER_ANNOTATION: target.deployment}}
        return await self.kube.apply(resource, target.namespace, meta["name"], {**config, "metadata": owned},
                                     force=False)

    async def apply(self, resource: Any, target: Target, name: str, config: dict[str, Any]) -> dict[str, Any]:
        """The operator's complete configuration of the fields it drives, forced; only after `get` of the same
        object in the same round has shown it is ours."""
        return await self.kube.apply(resource, target.namespace, name, config, force=True)

    async def patch(self, resource: Any, target: Target, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A merge patch, for what an apply cannot do: removing a field another manager owns too. Only after
        `get` or `apply` of the same object in the same round has shown it is ours."""
        return await self.kube.patch(resource, target.namespace, name, patch)

    async def delete(self, resource: Any, target: Target, name: str) -> bool:
        """True when there was something to delete."""
        if await self.get(resource, target, name) is None:
            return False
        return await self.kube.delete(resource, target.namespace, name)

    async def list(self, resource: Any, target: Target, label_selector: str) -> list[dict[str, Any]]:
        """Those matching the selector that name this deployment (a label alone proves nothing)."""
        return [o for o in await self.kube.list(resource, target.namespace, label_selector)
                if annotations_of(o).get(OWNER_ANNOTATION) == target.deployment]


def spec_of(versions: dict[str, ModelVersionSpec], version: str, needed_for: str) -> ModelVersionSpec:
    """The spec of a version whose artifact the router must write; VersionUnavailable when it is gone."""
    spec = versions.get(version)
    if spec is None:
        raise VersionUnavailable(version, needed_for)
    return spec


# Where a router records the weights it set, so that anyone else's change shows as drift.
APPLIED_WEIGHTS = "modelops.io/applied-weights"


UNIT_DIGEST_LENGTH = 10
"""Hex digits of the version's SHA-256 in a unit name: 40 bits, so two versions of one model share a unit
name only if their digests collide (about one chance in 10**12 for a pair)."""
UNIT_NAME_LENGTH = 63  # a DNS-1123 label


def _readable(version: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", version.lower()).strip("-")


def unit_name(version: str) -> str:
    """The backend's name for a version's serving unit, a DNS-1123 label: 1.2.0 -> v1-2-0,
    1.2.0-rc.1 -> v1-2-0-rc-1-<10 hex digits of the SHA-256 of "1.2.0-rc.1">.

    Distinct versions get distinct names. A release version (MAJOR.MINOR.PATCH alone) is written with
    dashes for dots, which gives the version back, and has exactly two dashes. Any other version (with a
    pre-release or build part) loses case and punctuation in the readable part (1.0.0-rc.1 and 1.0.0-RC-1
    read alike), so its name ends with a digest of the exact version; it has at least three dashes, so it
    is never a release version's name either."""
    readable = _readable(version)
    if re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", version):
        return f"v{readable}"
    digest = hashlib.sha256(version.encode()).hexdigest()[:UNIT_DIGEST_LENGTH]
    readable = readable[:UNIT_NAME_LENGTH - len(digest) - 2].rstrip("-")
    return f"v{readable}-{digest}"


def units_by_name(versions: Iterable[str]) -> dict[str, str]:
    """Unit name -> version, for the units of `versions` an object may hold: each version's `unit_name`, and
    the name operators before the digest gave a version with a pre-release or build part (its readable part
    alone, e.g. v1-0-0-rc-1) when no other of `versions` reads alike, so that an upgrade finds the units it
    left running. A name two versions share is nobody's: a unit is never taken for another version's."""
    names = {unit_name(v): v for v in versions}
    legacy: dict[str, set[str]] = {}
    for version in versions:
        legacy.setdefault(f"v{_readable(version)}", set()).add(version)
    for name, claimants in legacy.items():
        if len(claimants) == 1 and name not in names:
            names[name] = next(iter(claimants))
    return names


def applied_weights(weights: dict[str, int]) -> str:
    return json.dumps(weights, sort_keys=True, separators=(",", ":"))


def dig(obj: Any, *path: str) -> Any:
    """obj[path[0]][path[1]]..., None when a step is missing, null or not an object.

    Backend objects are read as the API server returns them: optional fields may be absent
    or null (status before the backend's controller wrote it, metadata without annotations)."""
    for key in path:
        if not isinstance(obj, dict):
            return None
        obj = obj.get(key)
    return obj


def objects_at(obj: Any, *path: str) -> list[dict[str, Any]]:
    """The objects in the list at `path` (predictors, rules, conditions...); [] when absent or null."""
    items = dig(obj, *path)
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def annotations_of(obj: dict[str, Any]) -> dict[str, str]:
    return dig(obj, "metadata", "annotations") or {}


# What the operator sets on an object it creates, and keeps on it while it owns it (see `kept`).
MANAGED_BY = {"app.kubernetes.io/managed-by": "modelops"}
IDENTITY: tuple[FieldPath, ...] = (("metadata", "labels"), ("metadata", "annotations", OWNER_ANNOTATION))


def kept(live: dict[str, Any] | None, *prefixes: FieldPath) -> dict[str, Any]:
    """The fields under `prefixes` the operator owns on `live` (its apply), with their live values, nested.

    What an apply that does not set them anew must carry to keep them: a field the operator owned
    and leaves out of its next apply is removed from the object."""
    out: dict[str, Any] = {}
    for path in managed_fields(live):
        if not any(path[:len(p)] == p for p in prefixes) or any(k.startswith(("k:", "v:", "i:")) for k in path):
            continue
        value: Any = live
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is None:
            continue
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return out


def merged(*configs: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts merged, later ones winning; empty objects dropped (an applied `{}` owns nothing)."""
    out: dict[str, Any] = {}
    for config in configs:
        for key, value in config.items():
            if isinstance(value, dict) and isinstance(out.get(key), dict):
                out[key] = merged(out[key], value)
            elif isinstance(value, dict):
                out[key] = merged(value)
            else:
                out[key] = value
    return {k: v for k, v in out.items() if v != {}}


def weight_drift(obj: dict[str, Any], live: dict[str, int], where: str) -> tuple[str, ...]:
    """Drift between the weights the operator recorded on `obj` and the live ones (none when unreadable)."""
    recorded = annotations_of(obj).get(APPLIED_WEIGHTS)
    try:
        if recorded is None or json.loads(recorded) == live:
            return ()
    except ValueError:
        return ()  # not the operator's record: treated as absent, the next write replaces it
    return (f"{where} weights are {applied_weights(live)}, the operator had set {recorded}: "
            "restoring them (pin a weight with spec.trafficOverride instead)",)


def artifact_version(uri: str | None, versions: dict[str, ModelVersionSpec]) -> str | None:
    """Which known version an artifact URI belongs to."""
    for version, spec in versions.items():
        if spec.artifact.uri == uri:
            return version
    return None
