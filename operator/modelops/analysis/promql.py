"""PromQL text from check templates and user queries (pure).

Values go in only as escaped PromQL string-literal content, so a label value such as a
namespace or a version can never close the quotes and change the query around it; inside a
regular-expression matcher (`=~`, `!~`, as in `pod=~"{{revision}}-.*"`) a value is also quoted for
the regular expression, so a version's dots match dots only. A query is parsed (Prometheus'
grammar as the Rust crate `promql-parser` implements it) when its spec is read (`check_query`):
a syntax error, or a variable anywhere but inside a label matcher's value, is refused then rather
than failing every analysis. Anything the parser raises, a Rust panic included, is such a refusal; a query
whose operators and nested brackets exceed `MAX_NESTING` is refused before it is parsed, as a parse that deep
overflows the stack and kills the process.
"""

from __future__ import annotations

import asyncio
import functools
import re
from dataclasses import dataclass
from typing import Any, Iterator

import promql_parser

from ..api.types import DURATION_PATTERN

_VARIABLE = re.compile(r"\{\{\s*([a-zA-Z]+)\s*\}\}")
VARIABLES = ("namespace", "model", "version", "revision", "object", "window")
_MARKER = "modelopsvariable{}x"
"""What the n-th variable of a query stands as while it is parsed: a name no real label value or metric has."""
_REGEX_OPS = (promql_parser.MatchOp.Re, promql_parser.MatchOp.NotRe)
_REGEX_SPECIAL = re.compile(r"[\\.+*?()|\[\]{}^$]")
"""What Go's regexp.QuoteMeta escapes (Prometheus' matchers are Go regular expressions)."""
MAX_NESTING = 250
"""The most operators and bracket levels (`_nesting`) a query may have: the built-in templates have under 60;
parsing overflowed the stack at 5,000 on an 8 MB stack, 800 on a 1 MB one."""
_OPERATOR = re.compile(r"[-+*/%^]|[=!<>]=?|\b(?:and|or|unless|atan2)\b", re.IGNORECASE)


@dataclass(frozen=True)
class Subject:
    """The version a query is about, and where it runs."""

    namespace: str
    model: str
    version: str
    revision: str
    """The backend's name for this version's serving unit (KServe revision, Seldon predictor, Service...)."""
    object: str
    """The backend object the ModelDeployment drives (InferenceService, SeldonDeployment, HTTPRoute)."""
    window: str


@dataclass(frozen=True)
class TemplateQuery:
    """A built-in check of one backend: the value's PromQL and the sample count's PromQL."""

    value: str
    """The value; for a drift test, the live inputs counted in the window by (feature, bin)."""
    samples: str | None = None
    buckets: str | None = None
    """A latency template's histogram: cumulative counts by `le` in the window (for sequential comparisons)."""
    reference: str | None = None
    """A drift test's reference (training) inputs counted by (feature, bin)."""


def observed(counter: str, by: str = "") -> str:
    """PromQL for what `counter` (a selector of one counter) counted over `{{window}}`, summed (`by` those labels,
    such as `le`), as its samples show it: each series' last sample in the window less its last sample before the
    window's start (`offset`; a range, so that a staleness marker left by a failed scrape there is skipped, as an
    instant selector would not), where increase() would extrapolate both ends to the window's edges. A series born
    within the window counts from 0, one that vanished within it up to its last sample. A series whose counter
    reset (its pod restarted) within the window, or between the start and the window's first sample (a sample in
    the window below the start), takes increase()'s count instead, which allows for the reset but extrapolates."""
    window = "[{{window}}]"
    last = f"last_over_time({counter}{window})"
    start = f"last_over_time({counter}[5m] offset {{{{window}}}})"
    reset = f"((resets({counter}{window}) > 0) or (min_over_time({counter}{window}) < {start}))"
    kept = f" by ({by}) " if by else ""
    return (f"sum{kept}((({last} - {start}) unless {reset})"
            f" or (increase({counter}{window}) and {reset}) or {last})")


def escape(value: str) -> str:
    """Content for a double-quoted PromQL string literal."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _nodes(node: Any) -> Iterator[Any]:
    """Every node of a parsed expression, depth first."""
    yield node
    for name in ("expr", "lhs", "rhs", "param", "vector_selector"):
        child = getattr(node, name, None)
        if child is not None:
            yield from _nodes(child)
    for child in getattr(node, "args", None) or ():
        yield from _nodes(child)


def _nesting(text: str) -> int:
    """An upper bound on how deep `text` parses: its operators (each may add a level: a chain `a+b+c` parses as
    nested binary expressions) plus its deepest bracket nesting, outside what cannot nest: string literals,
    comments, and a selector's matchers (braces do not nest in PromQL). One pass, as PromQL's lexer reads it."""
    bare: list[str] = []
    quote, in_braces, i = "", False, 0
    while i < len(text):
        char = text[i]
        if quote:
            if char == "\\" and quote != "`":
                i += 1  # the escaped character, a quote included
            elif char == quote:
                quote = ""
        elif char in "\"'`":
            quote = char
        elif in_braces:
            in_braces = char != "}"
        elif char == "{":
            in_braces = True
        elif char == "#":
            end = text.find("\n", i)
            i = len(text) if end < 0 else end
            continue
        else:
            bare.append(char)
        i += 1
    depth = deepest = 0
    for char in bare:
        if char in "([":
            depth += 1
            deepest = max(deepest, depth)
        elif char in ")]":
            depth -= 1
    return len(_OPERATOR.findall("".join(bare))) + deepest


def _parse(text: str) -> Any:
    """`text` parsed; a ValueError, in words, for anything else the parser does."""
    nesting = _nesting(text)
    if nesting > MAX_NESTING:
        raise ValueError(f"could not be parsed: {nesting} operators and nested brackets, more than the "
                         f"{MAX_NESTING} a query may have")
    try:
        return promql_parser.parse(text)
    except ValueError as e:
        raise ValueError(f"not PromQL: {e}") from None
    except (KeyboardInterrupt, SystemExit, asyncio.CancelledError):
        raise
    except BaseException as e:  # a Rust panic arrives as pyo3's PanicException, which is no Exception
        raise ValueError(f"could not be parsed: the PromQL parser failed ({type(e).__name__}: {e})") from None


@functools.lru_cache(maxsize=4096)
def _variables(query: str) -> tuple[tuple[str, bool], ...]:
    """Each {{variable}} of `query` in order: its name, and whether it stands in a regular-expression matcher. A
    ValueError, in words, unless `query` is PromQL with every variable but {{window}} inside a label matcher's value
    (as in `service="{{revision}}"`) and {{window}} where a duration goes."""
    reserved = _MARKER.split("{")[0]
    if reserved in query:
        raise ValueError(f"{reserved!r} is reserved")
    names: list[str] = []

    def placeholder(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in VARIABLES:
            raise ValueError(f"unknown variable {{{{{name}}}}}; known: {', '.join(VARIABLES)}")
        names.append(name)
        return "5m" if name == "window" else _MARKER.format(len(names) - 1)

    tree = _parse(_VARIABLE.sub(placeholder, query))
    in_regex: dict[int, bool] = {}
    for node in _nodes(tree):
        matchers = getattr(node, "matchers", None)
        if matchers is None:
            continue
        for matcher in [*matchers.matchers, *(m for group in matchers.or_matchers for m in group)]:
            if matcher.name == "__name__":
                continue
            for n in map(int, re.findall(_MARKER.format(r"(\d+)"), matcher.value)):
                in_regex[n] = matcher.op in _REGEX_OPS
    for n, name in enumerate(names):
        if name != "window" and n not in in_regex:
            raise ValueError(f"{{{{{name}}}}} may only stand inside the value of a label matcher, "
                             f'as in {name}="{{{{{name}}}}}"')
    return tuple((name, in_regex.get(n, False)) for n, name in enumerate(names))


def check_query(query: str) -> None:
    """A ValueError, in words, unless `query` is PromQL whose variables stand where `render` can fill them in."""
    _variables(query)


def render(query: str, subject: Subject) -> str:
    """Substitute {{variable}}s: as PromQL string content, quoted for the regular expression in a regex matcher.
    A query `check_query` refuses is a ValueError here too."""
    if not re.fullmatch(DURATION_PATTERN, subject.window):
        raise ValueError(f"window {subject.window!r} is not a duration")
    places = iter(_variables(query))

    def substitute(match: re.Match[str]) -> str:
        name, in_regex = next(places)
        value = getattr(subject, name)
        return escape(_REGEX_SPECIAL.sub(lambda m: "\\" + m.group(0), value) if in_regex else value)

    return _VARIABLE.sub(substitute, query)
