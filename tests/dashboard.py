"""The chart's Grafana dashboard as tests read it: its variables, its panels' queries, and Grafana's
substitution of `$variables` in them, done by hand (no Grafana runs here)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

DASHBOARD = Path(__file__).resolve().parents[1] / "charts" / "modelops" / "dashboards" / "modelops.json"
BUILTINS = {"__interval", "__interval_ms", "__rate_interval", "__range", "__range_s", "__range_ms"}
"""Grafana's own variables that the queries may use."""

_REFERENCE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")
_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<selector>.+),\s*)?(?P<label>\w+)\)$")


def load(path: Path = DASHBOARD) -> dict[str, Any]:
    return json.loads(path.read_text())


def references(text: str) -> set[str]:
    """The variables a text refers to, in any of Grafana's three syntaxes."""
    return {next(g for g in m.groups() if g) for m in _REFERENCE.finditer(text)}


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Grafana's substitution; a variable without a value is an error naming it."""
    def one(match: re.Match[str]) -> str:
        name = next(g for g in match.groups() if g)
        if name not in values:
            raise KeyError(f"no value for ${name} in {text!r}")
        return values[name]
    return _REFERENCE.sub(one, text)


def variables(dashboard: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(dashboard["templating"]["list"])


def label_values(variable: Mapping[str, Any]) -> tuple[str | None, str]:
    """A query variable's label_values(selector, label), as (selector or None, label)."""
    query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
    match = _LABEL_VALUES.match(query.strip())
    assert match, f"variable {variable['name']}: not a label_values query: {query}"
    return match["selector"], match["label"]


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel that queries (rows are not; a collapsed row holds its panels)."""
    for panel in dashboard["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


@dataclass(frozen=True)
class Target:
    panel: str
    ref: str
    expr: str
    instant: bool
    repeat: str | None
    """The variable the panel is repeated for: one copy of it per value."""

    def __str__(self) -> str:
        return f"panel {self.panel!r}, query {self.ref}"


def targets(dashboard: Mapping[str, Any]) -> list[Target]:
    return [Target(p["title"], t["refId"], t["expr"], bool(t.get("instant")) and not t.get("range"), p.get("repeat"))
            for p in panels(dashboard) for t in p.get("targets", [])]


def regex_of(values: list[str]) -> str:
    """How Grafana writes a multi-value variable into a query: a regex alternation."""
    return values[0] if len(values) == 1 else "(" + "|".join(re.escape(v) for v in values) + ")"
