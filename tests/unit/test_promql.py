import asyncio
import os
import re
import subprocess
import sys

import pytest

from pydantic import ValidationError

from modelops.analysis import promql
from modelops.analysis.promql import Subject, check_query, escape, render
from modelops.api.modeldeployment import Check, CheckTemplate
from modelops.routers import registry
from modelops.routers.base import CONTRACT_TEMPLATES
from modelops.routers.kserve import TEMPLATES

SUBJECT = Subject("prod", "fraud", "1.2.0", "fraud-predictor-00002", "fraud", "5m")


def test_variables_are_substituted():
    query = 'rate(x{ns="{{namespace}}", m="{{ model }}", v="{{version}}", r="{{revision}}", o="{{object}}"}[{{window}}])'
    assert render(query, SUBJECT) == 'rate(x{ns="prod", m="fraud", v="1.2.0", r="fraud-predictor-00002", o="fraud"}[5m])'


def test_a_label_value_cannot_break_out_of_its_quotes():
    hostile = Subject('a"} or vector(1) or x{y="', "m", "1.0.0", "r\\", "o", "1m")
    rendered = render('up{namespace="{{namespace}}", r="{{revision}}"}', hostile)
    assert rendered == 'up{namespace="a\\"} or vector(1) or x{y=\\"", r="r\\\\"}'
    assert escape("line\nbreak") == "line\\nbreak"


def test_unknown_variables_and_bad_windows_are_errors():
    with pytest.raises(ValueError, match="unknown variable"):
        render("up{x=\"{{nope}}\"}", SUBJECT)
    with pytest.raises(ValueError, match="window"):
        render("up", Subject("n", "m", "1.0.0", "r", "o", "5m] or up[1m"))


@pytest.mark.parametrize("query, words", [
    ('sum(rate(x{v="{{version}}"}[5m])', "not PromQL: unclosed left parenthesis"),
    ('sum(rate({{revision}}[5m]))', '{{revision}} may only stand inside the value of a label matcher'),
    ('label_replace(x, "v", "{{version}}", "a", ".*")', "{{version}} may only stand inside the value"),
    ('x{a="{{nope}}"}', "unknown variable {{nope}}"),
    ('x{a="modelopsvariable0x"}', "is reserved"),
])
def test_a_query_that_is_not_promql_or_puts_a_variable_elsewhere_is_refused_naming_the_check(query, words):
    check_query('sum(rate(x{service="{{revision}}", ns="{{namespace}}"}[{{window}}]))')  # the shape that is right
    with pytest.raises(ValidationError) as refused:
        Check.model_validate({"name": "p99", "query": 'x{v="{{version}}"}', "sampleQuery": query, "max": 1})
    assert "check 'p99': sampleQuery: " in str(refused.value) and words in str(refused.value)


def test_a_value_in_a_regular_expression_matcher_matches_itself_only():
    """In `=~` a version's dots would match any character (1.2.0 would select 1x2y0's series too)."""
    query = 'sum(x{pod=~"{{revision}}-.*", version=~"{{version}}", other!~"{{version}}|{{namespace}}", v="{{version}}"})'
    hostile = Subject("prod", "fraud", "1.2.0+b(7)", "r.e*v", "fraud", "5m")
    rendered = render(query, hostile)
    quoted = {"revision": r"r\.e\*v", "version": r"1\.2\.0\+b\(7\)"}
    assert rendered == (f'sum(x{{pod=~"{escape(quoted["revision"])}-.*", version=~"{escape(quoted["version"])}", '
                        f'other!~"{escape(quoted["version"])}|prod", v="1.2.0+b(7)"}})')
    assert re.fullmatch(quoted["version"], "1.2.0+b(7)") and not re.fullmatch(quoted["version"], "1x2y0+b(7)")


def test_every_built_in_template_of_every_backend_is_promql_with_its_variables_in_label_matchers():
    for router in registry.ROUTERS.values():
        for template in router.templates.values():
            for query in (template.value, template.samples, template.buckets, template.reference):
                if query is not None:
                    check_query(query)


@pytest.mark.parametrize("template", sorted(set(TEMPLATES) - set(CONTRACT_TEMPLATES) - {CheckTemplate.shadowAgreement}))
def test_kserve_templates_cover_both_knative_metric_schemes(template):
    query = render(TEMPLATES[template].value, SUBJECT)
    assert "kn_serving_invocation_duration_seconds" in query and "revision_app_request" in query
    assert 'kn_revision_name="fraud-predictor-00002"' in query and 'revision_name="fraud-predictor-00002"' in query
    assert "[5m]" in query and "{{" not in query
    assert TEMPLATES[template].samples is not None


@pytest.mark.parametrize("template", sorted(CONTRACT_TEMPLATES))
def test_contract_templates_select_the_version_by_namespace_model_and_version(template):
    queries = CONTRACT_TEMPLATES[template]
    for query in (queries.value, queries.samples, queries.reference):
        if query is not None:
            assert 'namespace="prod", model="fraud", version="1.2.0"' in render(query, SUBJECT)
    for windowed in (queries.value, queries.samples):  # the reference's counts are a gauge read as it is
        if windowed is not None:
            assert "[5m]" in render(windowed, SUBJECT) or " offset 5m" in render(windowed, SUBJECT)


def _counting_queries():
    """Every built-in query that counts: samples, histogram buckets, and the values that are counts (a drift test's
    binned inputs) or a ratio of counts."""
    ratios = {CheckTemplate.errorRate, CheckTemplate.accuracy, CheckTemplate.shadowAgreement, CheckTemplate.driftTest}
    for backend, router in sorted(registry.ROUTERS.items(), key=lambda item: item[0].value):
        for template, query in sorted(router.templates.items(), key=lambda item: item[0].value):
            if template is CheckTemplate.driftScore:
                continue  # a gauge: its samples are the scores reported, not a counter's increase
            for kind, text in (("samples", query.samples), ("buckets", query.buckets),
                               ("value", query.value if template in ratios else None)):
                if text is not None:
                    yield pytest.param(text, id=f"{backend.value}-{template.value}-{kind}")


@pytest.mark.parametrize("query", list(_counting_queries()))
def test_counts_are_taken_as_scraped_and_increase_only_where_a_counter_reset(query):
    rendered = render(query, SUBJECT)
    assert "rate(" not in rendered and "offset 5m" in rendered
    guarded = re.findall(r"increase\(([^\[]+)\[5m\]\) and \(\(resets\(\1\[5m\]\) > 0\) or "
                         r"\(min_over_time\(\1\[5m\]\) < last_over_time\(\1\[5m\] offset 5m\)\)\)", rendered)
    assert guarded and len(guarded) == rendered.count("increase(")


class PanicException(BaseException):
    """What pyo3 raises when the Rust parser panics: a BaseException, not an Exception."""


def refusal(query):
    with pytest.raises(ValidationError) as refused:
        Check.model_validate({"name": "p99", "query": query, "max": 1})
    return str(refused.value)


def test_a_panic_or_any_error_of_the_parser_is_a_refusal_naming_the_field(monkeypatch):
    def panics(text):
        raise PanicException("called `Option::unwrap()` on a `None` value")

    monkeypatch.setattr(promql.promql_parser, "parse", panics)
    words = refusal('up{job="panics"}')
    assert "check 'p99': query: could not be parsed: the PromQL parser failed (PanicException: called" in words
    monkeypatch.setattr(promql.promql_parser, "parse", lambda text: 1 / 0)
    assert "query: could not be parsed: the PromQL parser failed (ZeroDivisionError" in refusal('up{job="divides"}')


@pytest.mark.parametrize("stop", [KeyboardInterrupt, SystemExit, asyncio.CancelledError])
def test_an_interrupt_or_a_cancellation_during_the_parse_is_not_swallowed(monkeypatch, stop):
    def stopped(text):
        raise stop()

    monkeypatch.setattr(promql.promql_parser, "parse", stopped)
    with pytest.raises(stop):
        check_query(f'up{{job="{stop.__name__}"}}')


def test_a_query_nested_deep_enough_to_kill_the_parser_is_refused_before_it_is_parsed():
    """7,000 chained `+` (14,001 characters, within the field's 16,384) overflow the parser's stack: the process
    dies of a signal (8 MB of stack takes 5,000; a thread of 1 MB, here for speed, far fewer), where the spec is
    refused."""
    deep = "'+'.join(['x'] * 7000)"
    crash = subprocess.run([sys.executable, "-c", "import promql_parser, threading\nthreading.stack_size(1 << 20)\n"
                            f"threading.Thread(target=promql_parser.parse, args=({deep},)).start()"],
                           capture_output=True)
    assert crash.returncode < 0
    validated = subprocess.run(
        [sys.executable, "-c", "import threading\nthreading.stack_size(1 << 20)\nfrom pydantic import ValidationError\n"
                               "from modelops.api.modeldeployment import Check\n"
                               "def validate():\n"
                               f"    try: Check.model_validate({{'name': 'p99', 'query': {deep}, 'max': 1}})\n"
                               "    except ValidationError as e: print(e)\n"
                               "threading.Thread(target=validate).start()"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert validated.returncode == 0, validated.stderr
    assert (f"check 'p99': query: could not be parsed: 6999 operators and nested brackets, more than the "
            f"{promql.MAX_NESTING} a query may have") in validated.stdout


def test_the_nesting_limit_counts_what_parses_deep_and_only_that():
    at_the_limit = "+".join(["up"] * (promql.MAX_NESTING + 1))
    check_query(at_the_limit)
    assert "251 operators" in refusal(at_the_limit + "+up")
    check_query("(" * promql.MAX_NESTING + "up" + ")" * promql.MAX_NESTING)
    assert "could not be parsed: 251" in refusal("(" * 251 + "up" + ")" * 251)
    # brackets and operators in strings, matchers and comments do not nest; a brace or quote there hides nothing
    check_query('sum(x{path=~"/a-(b|c)", p="' + "(-" * 300 + '", e!="}"}) # ' + "(+" * 300 + "\nor vector(0)")
    nested = "(" * 300 + "1" + ")" * 300
    for hiding in ('x{a="}"} + ', "x{a=\"\\\"}\"} + ", "x{a='}'} + ", "x{a=`}`} + ", '"#" + '):
        assert "could not be parsed: 301" in refusal(hiding + nested), hiding
