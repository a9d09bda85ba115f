"""Specs the operator refuses, generated from its models' rules, and specs at the edge of each rule it accepts.

The unit tier checks that the operator refuses (or accepts) each, naming the field; the integration tier checks
that the API server does the same, so that no spec the operator cannot use is ever stored. Durations are found by
walking the models (every field whose type carries `DurationBounds`): a new duration field is covered as soon as
the full manifests below hold it, and a unit test fails until they do.
"""

from __future__ import annotations

import types
import typing
from dataclasses import dataclass
from typing import Any, Iterator

from pydantic import BaseModel

from modelops.api.metricprovider import ClusterMetricProviderSpec
from modelops.api.modeldeployment import MAX_ANALYSES_LIMIT, ModelDeploymentSpec
from modelops.api.notifier import ClusterNotifierSpec
from modelops.analysis.sequential import MIN_SAMPLES
from modelops.api.types import DurationBounds

from .conftest import model_deployment_manifest, with_path

API_VERSION = "modelops.io/v1alpha1"
OVERFLOWING = "99999999999999h"
"""A duration whose nanoseconds overflow int64 (Go, the API server's CEL) and whose seconds overflow a timedelta."""
SELECTOR = {"matchLabels": {"team": "fraud"}, "matchExpressions": [{"key": "tier", "operator": "In", "values": ["a"]}]}


def _manifest(kind: str, spec: dict[str, Any], name: str) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": kind, "metadata": {"name": name}, "spec": spec}


def full_manifests() -> dict[str, tuple[type[BaseModel], dict[str, Any]]]:
    """Kind -> (its spec's model, a valid manifest that sets every duration field the model has)."""
    deployment = model_deployment_manifest()
    deployment["spec"]["strategy"]["readyTimeout"] = "10m"
    deployment["spec"]["analysis"].update(window="20s", prometheus={"address": "http://prometheus:9090",
                                                                    "timeout": "5s"})
    deployment["spec"]["analysis"]["checks"][0] = {"name": "errors", "template": "errorRate", "maxIncreasePercent": 10,
                                                   "gradingDelay": "1h", "sequential": {"maxDuration": "1h"}}
    return {
        "ModelDeployment": (ModelDeploymentSpec, deployment),
        "ClusterMetricProvider": (ClusterMetricProviderSpec, _manifest("ClusterMetricProvider", {
            "prometheus": {"address": "http://prometheus:9090", "timeout": "5s"}, "namespaceSelector": SELECTOR},
            "refusal-probe")),
        "ClusterNotifier": (ClusterNotifierSpec, _manifest("ClusterNotifier", {
            "webhook": {"url": "https://hooks.example/a", "timeout": "5s"}, "namespaceSelector": SELECTOR},
            "refusal-probe")),
    }


@dataclass(frozen=True)
class Case:
    what: str
    manifest: dict[str, Any]
    path: tuple[str, ...]
    """The field the refusal is about, under spec."""
    words: str | None = None
    """What the refusal says (None: the pattern's words, which differ between pydantic and the API server)."""

    @property
    def api_field(self) -> str:
        """The field as the API server names it: spec.analysis.checks[0].max."""
        return "spec" + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in self.path)

    @property
    def model_field(self) -> str:
        """The field as pydantic names it: analysis.checks.0.max."""
        return ".".join(self.path)


def _unwrap(annotation: Any) -> Iterator[Any]:
    """The types and metadata an annotation is made of (through Optional, Annotated and lists)."""
    yield annotation
    if typing.get_origin(annotation) is typing.Annotated:
        yield from annotation.__metadata__
        yield from _unwrap(typing.get_args(annotation)[0])
    elif typing.get_origin(annotation) in (typing.Union, types.UnionType, list):
        for arg in typing.get_args(annotation):
            yield from _unwrap(arg)


def duration_fields(model: type[BaseModel], prefix: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...],
                                                                                         DurationBounds]]:
    """(path under spec, bounds) of every duration field of `model`; a list's items as its first one."""
    for name, field in model.model_fields.items():
        key = field.alias or name
        parts = list(_unwrap(field.annotation)) + list(field.metadata)
        is_list = any(typing.get_origin(p) is list for p in parts)
        path = prefix + ((key, "0") if is_list else (key,))
        for part in parts:
            if isinstance(part, DurationBounds):
                yield path, part
                break
            if isinstance(part, type) and issubclass(part, BaseModel):
                yield from duration_fields(part, path)


def _at(manifest: dict[str, Any], path: tuple[str, ...], value: Any) -> dict[str, Any]:
    return with_path(manifest, ".".join(("spec",) + path), value)


def _just_over(most: str) -> str:
    return f"{most}1ms"


def duration_refusals() -> Iterator[Case]:
    for kind, (model, manifest) in full_manifests().items():
        for path, bounds in duration_fields(model):
            words = f"must be {'more than 0s' if bounds.positive else '0s or more'} and at most {bounds.most}"
            name = f"{kind} {'.'.join(path)}"
            yield Case(f"{name} just over {bounds.most}", _at(manifest, path, _just_over(bounds.most)), path, words)
            yield Case(f"{name} {OVERFLOWING}", _at(manifest, path, OVERFLOWING), path)
            yield Case(f"{name} negative", _at(manifest, path, "-1s"), path)
            if bounds.positive:
                for zero in ("0s", "0ms", "0m0s"):
                    yield Case(f"{name} {zero}", _at(manifest, path, zero), path, words)


def duration_acceptances() -> Iterator[Case]:
    for kind, (model, manifest) in full_manifests().items():
        for path, bounds in duration_fields(model):
            name = f"{kind} {'.'.join(path)}"
            yield Case(f"{name} at {bounds.most}", _at(manifest, path, bounds.most), path)
            least = "1ms" if bounds.positive else "0s"
            yield Case(f"{name} at {least}", _at(manifest, path, least), path)


def _long_prefix() -> str:
    """A DNS subdomain of 254 characters: one more than a label key's prefix may have."""
    prefix = ".".join(["a" * 63] * 4)[:254]
    assert len(prefix) == 254 and prefix[-1] == "a"
    return prefix


VALUES_WORDS = "values must be given when operator is In or NotIn"


def selector_refusals() -> Iterator[Case]:
    """Label selectors Kubernetes' own LabelSelector validation refuses, wherever the operator takes one."""
    for kind in ("ClusterMetricProvider", "ClusterNotifier"):
        manifest = full_manifests()[kind][1]
        at = ("namespaceSelector", "matchExpressions", "0")
        expressions = [
            ("In without values", {"key": "tier", "operator": "In"}, at, VALUES_WORDS),
            ("NotIn with empty values", {"key": "tier", "operator": "NotIn", "values": []}, at, VALUES_WORDS),
            ("Exists with values", {"key": "tier", "operator": "Exists", "values": ["a"]}, at, VALUES_WORDS),
            ("DoesNotExist with values", {"key": "tier", "operator": "DoesNotExist", "values": ["a"]}, at,
             VALUES_WORDS),
            ("an operator Kubernetes lacks", {"key": "tier", "operator": "Gt", "values": ["1"]}, at + ("operator",),
             None),
            ("a value of 64 characters", {"key": "tier", "operator": "In", "values": ["v" * 64]},
             at + ("values", "0"), None),
            ("a value that is no label value", {"key": "tier", "operator": "In", "values": ["-a"]},
             at + ("values", "0"), None),
            ("a key whose name has 64 characters", {"key": "k" * 64, "operator": "Exists"}, at + ("key",), None),
            ("a key whose prefix has 254 characters", {"key": f"{_long_prefix()}/tier", "operator": "Exists"},
             at + ("key",), "prefix is at most 253 characters"),
        ]
        for what, expression, path, words in expressions:
            yield Case(f"{kind} matchExpressions: {what}",
                       _at(manifest, ("namespaceSelector", "matchExpressions"), [expression]), path, words)
        labels = ("namespaceSelector", "matchLabels")
        yield Case(f"{kind} matchLabels: a value that is no label value", _at(manifest, labels, {"team": "a b"}),
                   labels, None)
        yield Case(f"{kind} matchLabels: a key whose prefix has 254 characters",
                   _at(manifest, labels, {f"{_long_prefix()}/team": "a"}), labels, "prefix is at most 253 characters")


def selector_acceptances() -> Iterator[Case]:
    for kind in ("ClusterMetricProvider", "ClusterNotifier"):
        manifest = full_manifests()[kind][1]
        prefix = _long_prefix()[:253]
        yield Case(f"{kind} every operator with its values", _at(manifest, ("namespaceSelector",), {
            "matchLabels": {"team": "", f"{prefix}/tier": "v" * 63},
            "matchExpressions": [{"key": "a", "operator": "In", "values": ["x"]},
                                 {"key": "b", "operator": "NotIn", "values": ["x", "z"]},
                                 {"key": "c", "operator": "Exists"}, {"key": "d", "operator": "DoesNotExist"},
                                 {"key": "k" * 63, "operator": "Exists", "values": []}]}), ("namespaceSelector",))


def bound_refusals() -> Iterator[Case]:
    """Bounds whose order no value satisfies, and counts a step's deadline multiplies by its interval."""
    _, manifest = full_manifests()["ModelDeployment"]
    check = ("analysis", "checks", "0")
    yield Case("a check whose min is above its max", _at(manifest, check, {
        "name": "errors", "template": "errorRate", "min": 0.5, "max": 0.1}), check, "min is above max")
    for limit in ("failureLimit", "noDataLimit"):
        yield Case(f"{limit} over {MAX_ANALYSES_LIMIT}", _at(manifest, ("analysis", limit), MAX_ANALYSES_LIMIT + 1),
                   ("analysis", limit), None)
    budget = check + ("sequential", "maxSamples")
    yield Case(f"a sequential budget under {MIN_SAMPLES} samples, the fewest any verdict needs",
               _at(manifest, budget, MIN_SAMPLES - 1), budget, None)
    yield Case("a driftTest check with a limit", _at(manifest, check, {
        "name": "drift", "template": "driftTest", "max": 0.3}), check, "judged by its test alone")
    yield Case("driftTest settings on a driftScore check", _at(manifest, check, {
        "name": "drift", "template": "driftScore", "max": 0.3, "driftTest": {}}), check, "driftTest settings belong")
    looks = check + ("driftTest", "looks")
    yield Case("a driftTest over no analyses", _at(manifest, check, {
        "name": "drift", "template": "driftTest", "driftTest": {"looks": 0}}), looks, None)


def bound_acceptances() -> Iterator[Case]:
    _, manifest = full_manifests()["ModelDeployment"]
    check = ("analysis", "checks", "0")
    yield Case("a check whose min is its max", _at(manifest, check, {
        "name": "errors", "template": "errorRate", "min": 0.1, "max": 0.1}), check)
    yield Case("a driftTest check without a limit, over one analysis", _at(manifest, check, {
        "name": "drift", "template": "driftTest", "driftTest": {"looks": 1, "confidence": 0.999}}), check)
    yield Case(f"limits of {MAX_ANALYSES_LIMIT}", _at(_at(manifest, ("analysis", "failureLimit"), MAX_ANALYSES_LIMIT),
                                                      ("analysis", "noDataLimit"), MAX_ANALYSES_LIMIT), ("analysis",))


REFUSALS = [*duration_refusals(), *selector_refusals(), *bound_refusals()]
ACCEPTANCES = [*duration_acceptances(), *selector_acceptances(), *bound_acceptances()]
MODELS = {kind: model for kind, (model, _) in full_manifests().items()}

