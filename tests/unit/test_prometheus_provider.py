"""The Prometheus provider against a real HTTP server on 127.0.0.1 answering in every way, well or badly."""

from __future__ import annotations

import asyncio
import math
import re
import socket
import ssl
import threading
import time
from datetime import datetime, timedelta, timezone

import pytest
import pytest_asyncio
from aiohttp import web

from modelops.analysis import prometheus
from modelops.analysis.evaluate import Measurement
from modelops.analysis.measure import analyse, measure, sample_count
from modelops.analysis.prometheus import PrometheusProvider, close_sessions, provider_for
from modelops.analysis.promql import Subject, TemplateQuery
from modelops.analysis.provider import Asker
from modelops.api.modeldeployment import Check, CheckTemplate, PrometheusConfig, Verdict

AT = datetime(2026, 1, 1, 0, 0, 0, 123456, tzinfo=timezone.utc)
SECRET_BODY = "password=hunter2 token=sk-live-0123456789abcdef"


def vector(*values, labels=None):
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"pod": f"p{i}", **(labels or {})}, "value": [1767225600, v]} for i, v in enumerate(values)]}}


ANSWERS = {
    "one": vector("0.25"),
    "none": vector(),
    "scalar": {"status": "success", "data": {"resultType": "scalar", "result": [1767225600, "3.5"]}},
    "string": {"status": "success", "data": {"resultType": "string", "result": [1767225600, "hello"]}},
    "matrix": {"status": "success", "data": {"resultType": "matrix", "result": [
        {"metric": {}, "values": [[1767225600, "1"], [1767225615, "2"]]}]}},
    "many": vector("1", "2", "3", "4", "5", labels={"long": "x" * 300}),
    "inf": vector("+Inf"),
    "neginf": vector("-Inf"),
    "nan": vector("NaN"),
    "number": vector(7),
    "garbage": vector("twelve"),
    "bool": vector(True),
    "nopair": {"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}, "value": "1"}]}},
    "histogram": {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {}, "histogram": [1767225600, {"count": "3", "sum": "1"}]}]}},
    "nodata": {"status": "success"},
    "nostatus": {"data": {"resultType": "scalar", "result": [0, "1"]}},
    "list": [1, 2, 3],
    "unknown_type": {"status": "success", "data": {"resultType": "table", "result": []}},
    "error": {"status": "error", "errorType": "bad_data", "error": "parse error: " + SECRET_BODY},
    "hostile_error": {"status": "error", "errorType": "<script>" + "x" * 100 + "</script>\n" + SECRET_BODY,
                      "error": SECRET_BODY},
}


class Server:
    def __init__(self):
        self.release = asyncio.Event()
        self.requests: list[web.Request] = []
        self.forms: list[dict[str, str]] = []
        self.peers: list[tuple] = []
        self.in_flight = 0
        self.address = ""

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request)
        self.peers.append(request.transport.get_extra_info("peername"))
        self.forms.append(dict(await request.post()) if request.method == "POST" else dict(request.query))
        case = request.match_info["case"]
        if case in ANSWERS:
            return web.json_response(ANSWERS[case])
        if case == "nonjson":
            return web.Response(text="<html>" + SECRET_BODY + "</html>", content_type="text/html")
        if case == "status400":
            return web.json_response(ANSWERS["error"], status=400)
        if case == "status503":
            return web.json_response({"status": "error", "errorType": "timeout", "error": SECRET_BODY}, status=503)
        if case == "status500":
            return web.Response(text=SECRET_BODY, status=500)
        if case == "status401":
            return web.Response(text="Unauthorized: " + SECRET_BODY, status=401)
        if case == "redirect":
            raise web.HTTPFound("http://example.invalid/steal")
        if case == "huge":
            return web.Response(body=b"[" + b"1," * (3 * 1024 * 1024) + b"1]", content_type="application/json")
        if case == "huge_chunked":
            response = web.StreamResponse()
            await response.prepare(request)
            for _ in range(80):
                await response.write(b" " * 65536)
            await response.write_eof()
            return response
        if case == "batching":
            return await self.batching(request)
        if case == "hang":
            self.in_flight += 1
            try:
                await self.release.wait()
            finally:
                self.in_flight -= 1
            return web.json_response(ANSWERS["one"])
        raise web.HTTPNotFound()


    async def batching(self, request: web.Request) -> web.StreamResponse:
        """`vector(N)` answers N; a query naming `slow` takes 2 s, each naming `sleepy` 20 ms; a batch
        (label_replace(q, "modelops_batch_query", "i", "", "") or ...) answers each part tagged with its index, and
        takes 2 s when a part is slow, plus 20 ms for each sleepy part (Prometheus evaluates them one by one)."""
        query = self.forms[-1]["query"]
        parts = re.findall(r'label_replace\((.*?), "modelops_batch_query", "(\d+)", "", ""\)', query) or [(query, None)]
        if any("slow" in q for q, _ in parts):
            await asyncio.sleep(2)
        await asyncio.sleep(0.02 * sum("sleepy" in q for q, _ in parts))  # one operand after the other
        result = []
        for q, index in parts:
            labels = {"modelops_batch_query": index} if index is not None and "untagged" not in q else {}
            result.append({"metric": labels, "value": [1767225600, re.search(r"vector\((\d+)\)", q).group(1)]})
        return web.json_response({"status": "success", "data": {"resultType": "vector", "result": result}})


@pytest_asyncio.fixture
async def server():
    state = Server()
    app = web.Application()
    app.router.add_route("*", "/{case}/api/v1/query", state.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    state.address = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        state.release.set()
        await close_sessions()
        await runner.cleanup()


def provider(server, case, timeout=2.0, **kw) -> PrometheusProvider:
    return PrometheusProvider(f"{server.address}/{case}", timeout=timeout, **kw)


@pytest.mark.asyncio
@pytest.mark.parametrize("case, value", [
    ("one", 0.25), ("none", None), ("scalar", 3.5), ("inf", math.inf), ("neginf", -math.inf), ("nan", None),
    ("number", 7.0),
])
async def test_values(server, case, value):
    assert await provider(server, case).query("up", AT) == value


@pytest.mark.asyncio
async def test_sends_query_and_time_with_three_decimals(server):
    await provider(server, "one").query('sum(rate(x{a="b"}[5m]))', AT)
    request, form = server.requests[-1], server.forms[-1]
    assert request.method == "GET"
    assert form == {"query": 'sum(rate(x{a="b"}[5m]))', "time": "1767225600.123"}
    assert "Authorization" not in request.headers


@pytest.mark.asyncio
async def test_long_query_goes_in_a_post_form(server):
    long_query = "sum(" + " + ".join(["up"] * 1000) + ")"
    assert await provider(server, "one").query(long_query, AT) == 0.25
    assert server.requests[-1].method == "POST"
    assert server.forms[-1]["query"] == long_query


@pytest.mark.asyncio
async def test_bearer_token_is_sent(server):
    await provider(server, "one", bearer_token="s3cret-token").query("up", AT)
    assert server.requests[-1].headers["Authorization"] == "Bearer s3cret-token"


@pytest.mark.asyncio
async def test_providers_with_the_same_address_share_a_connection(server):
    for _ in range(3):
        await provider(server, "one").query("up", AT)
    assert len(set(server.peers)) == 1
    assert len(prometheus._SESSIONS) == 1
    await provider(server, "one", bearer_token="t").query("up", AT)
    assert len(prometheus._SESSIONS) == 2


@pytest.mark.asyncio
@pytest.mark.parametrize("case, kind, words", [
    ("string", "bad_response", "returned a string, one value expected"),
    ("matrix", "bad_response", "returned a matrix, one value expected"),
    ("many", "many_series", "returned 5 series, one expected; aggregate it"),
    ("garbage", "bad_response", "not a Prometheus API answer"),
    ("bool", "bad_response", "not a Prometheus API answer"),
    ("nopair", "bad_response", "not a Prometheus API answer"),
    ("histogram", "bad_response", "native histogram"),
    ("nonjson", "bad_response", "not a Prometheus API answer"),
    ("nodata", "bad_response", "not a Prometheus API answer"),
    ("nostatus", "bad_response", "not a Prometheus API answer"),
    ("list", "bad_response", "not a Prometheus API answer"),
    ("unknown_type", "bad_response", "not a Prometheus API answer"),
    ("huge", "bad_response", "answer larger than 4 MiB"),
    ("huge_chunked", "bad_response", "answer larger than 4 MiB"),
    ("error", "rejected", "query rejected: bad_data"),
    ("status400", "rejected", "query rejected: bad_data (HTTP 400)"),
    ("status503", "http", "HTTP 503 (timeout)"),
    ("status500", "http", "HTTP 500"),
    ("status401", "http", "HTTP 401"),
    ("redirect", "http", "HTTP 302"),
    ("missing", "http", "HTTP 404"),
])
async def test_errors_are_classified_and_never_quote_the_body(server, case, kind, words):
    with pytest.raises(prometheus.ProviderError) as caught:
        await provider(server, case).query("up", AT)
    error = caught.value
    assert error.kind == kind
    assert words in str(error)
    assert str(error).startswith(f"Prometheus at {server.address}/{case}: ")
    assert "hunter2" not in str(error) and "sk-live" not in str(error) and "<html" not in str(error)
    assert len(str(error)) < 300


@pytest.mark.asyncio
async def test_many_series_names_a_few_label_sets_capped(server):
    with pytest.raises(prometheus.ProviderError) as caught:
        await provider(server, "many").query("up", AT)
    detail = str(caught.value).split(": ", 1)[1]
    assert "pod='p0'" in detail and len(detail) <= 200


@pytest.mark.asyncio
async def test_error_type_is_reduced_to_a_short_token(server):
    with pytest.raises(prometheus.ProviderError) as caught:
        await provider(server, "hostile_error").query("up", AT)
    error_type = str(caught.value).split("query rejected: ", 1)[1]
    assert len(error_type) <= 40
    assert all(c.isalnum() or c in "_ " for c in error_type), error_type


@pytest.mark.asyncio
async def test_a_redirect_is_not_followed(server):
    with pytest.raises(prometheus.ProviderError):
        await provider(server, "redirect", bearer_token="t").query("up", AT)
    assert len(server.requests) == 1


@pytest.mark.asyncio
async def test_a_server_that_never_answers_times_out(server):
    started = time.monotonic()
    with pytest.raises(prometheus.ProviderError) as caught:
        await provider(server, "hang", timeout=0.3).query("up", AT)
    elapsed = time.monotonic() - started
    assert caught.value.kind == "timeout"
    assert "timed out after 0.3s" in str(caught.value)
    assert 0.25 <= elapsed < 1.3


@pytest.mark.asyncio
async def test_concurrent_queries_to_one_prometheus_are_bounded_across_providers_and_use_no_threads(server):
    """Every analysis builds its own provider: the bound holds for all of them together."""
    threads = threading.active_count()
    analyses = [provider(server, "hang", timeout=0.2, max_concurrency=4, asker=Asker(f"ns{i}", "fraud"))
                for i in range(5)]
    started = time.monotonic()
    tasks = [asyncio.ensure_future(hanging.query("up", AT)) for hanging in analyses for _ in range(4)]
    await asyncio.sleep(0.1)
    assert threading.active_count() == threads
    assert server.in_flight == 4
    assert len(server.requests) == 4
    results = await asyncio.gather(*tasks, return_exceptions=True)
    elapsed = time.monotonic() - started
    assert all(isinstance(r, prometheus.ProviderError) and r.kind == "timeout" for r in results), results
    assert len(server.requests) == 20
    assert 0.9 <= elapsed < 2.5  # five rounds of four, each cut at 0.2 s
    assert threading.active_count() == threads


@pytest.mark.asyncio
async def test_connection_refused_is_unreachable():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    try:
        with pytest.raises(prometheus.ProviderError) as caught:
            await PrometheusProvider(f"http://user:pw@127.0.0.1:{port}", timeout=2).query("up", AT)
    finally:
        await close_sessions()
    assert caught.value.kind == "unreachable"
    assert str(caught.value).startswith(f"Prometheus at http://127.0.0.1:{port}: unreachable: ")
    assert "Connection refused" in str(caught.value) or "ConnectionRefusedError" in str(caught.value)
    assert "pw" not in str(caught.value)


@pytest.mark.asyncio
async def test_an_address_that_is_no_url_is_unreachable():
    try:
        with pytest.raises(prometheus.ProviderError) as caught:
            await PrometheusProvider("prometheus:9090", timeout=1).query("up", AT)
    finally:
        await close_sessions()
    assert caught.value.kind == "unreachable"
    assert "not an http:// or https:// address" in str(caught.value)


def self_signed() -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, PEM."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "prometheus test")])
    now = datetime.now(timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM).decode(), key_pem.decode()


@pytest.mark.asyncio
async def test_tls_verifies_against_the_ca_from_memory(tmp_path):
    cert_pem, key_pem = self_signed()
    (tmp_path / "cert.pem").write_text(cert_pem)  # the test server loads files; the provider does not
    (tmp_path / "key.pem").write_text(key_pem)
    server_ssl = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ssl.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    async def answer(request):
        return web.json_response(ANSWERS["one"])

    app = web.Application()
    app.router.add_get("/api/v1/query", answer)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ssl)
    await site.start()
    address = f"https://127.0.0.1:{runner.addresses[0][1]}"
    try:
        assert await PrometheusProvider(address, timeout=2, ca_pem=cert_pem).query("up", AT) == 0.25
        assert await PrometheusProvider(address, timeout=2, insecure_skip_verify=True).query("up", AT) == 0.25
        with pytest.raises(prometheus.ProviderError) as caught:
            await PrometheusProvider(address, timeout=2).query("up", AT)
        assert caught.value.kind == "unreachable"
        assert "TLS certificate not trusted" in str(caught.value)
    finally:
        await close_sessions()
        await runner.cleanup()


def test_a_ca_bundle_that_is_not_pem_is_a_credentials_error():
    with pytest.raises(prometheus.ProviderError) as caught:
        PrometheusProvider("https://prometheus:9090", timeout=1, ca_pem="-----BEGIN CERTIFICATE-----\nnope\n")
    assert caught.value.kind == "credentials"


def test_provider_error_kinds():
    error = prometheus.ProviderError("timeout", "slow")
    assert (error.kind, str(error)) == ("timeout", "slow")
    with pytest.raises(ValueError):
        prometheus.ProviderError("whatever", "x")


# provider_for: credentials from Secrets, every failure a credentials error; the timeout capped.

class ApiError(Exception):
    def __init__(self, status):
        super().__init__(f"({status}) Reason: ... body with {SECRET_BODY}")
        self.status = status


class FakeSecrets:
    def __init__(self, values=None, error=None):
        self.values, self.error = values or {}, error

    async def value(self, namespace, name, key):
        if self.error is not None:
            raise self.error
        if (name, key) not in self.values:
            raise KeyError(f"secret {namespace}/{name} has no key {key!r}")
        return self.values[name, key]


def config(**kw):
    return PrometheusConfig.model_validate({"address": "http://prometheus:9090", **kw})


@pytest.mark.asyncio
async def test_provider_for_reads_credentials_and_caps_the_timeout():
    secrets = FakeSecrets({("tok", "token"): "abc\n"})
    made = await provider_for(config(bearerTokenSecret={"name": "tok", "key": "token"}, timeout="2m"), "ns", secrets)
    assert made.timeout == 30.0
    assert made._headers["Authorization"] == "Bearer abc"
    assert (await provider_for(config(timeout="10s"), "ns", secrets, cap=4.0)).timeout == 4.0
    assert (await provider_for(config(timeout="2s"), "ns", secrets, cap=4.0)).timeout == 2.0


@pytest.mark.asyncio
@pytest.mark.parametrize("secrets, words", [
    (FakeSecrets(), "secret ns/tok has no key 'token'"),
    (FakeSecrets(error=ApiError(404)), "secret ns/tok not found"),
    (FakeSecrets(error=ApiError(403)), "reading secret ns/tok is forbidden"),
    (FakeSecrets(error=ApiError(500)), "reading secret ns/tok: API error 500"),
    (FakeSecrets(error=UnicodeDecodeError("utf-8", b"\xff", 0, 1, "bad")), "is not text"),
    (FakeSecrets({("tok", "token"): "two\nlines"}), "is not a bearer token"),
    (FakeSecrets({("tok", "token"): "  "}), "is not a bearer token"),
])
async def test_provider_for_credentials_errors(secrets, words):
    with pytest.raises(prometheus.ProviderError) as caught:
        await provider_for(config(bearerTokenSecret={"name": "tok", "key": "token"}), "ns", secrets)
    assert caught.value.kind == "credentials"
    assert words in str(caught.value)
    assert "hunter2" not in str(caught.value)


@pytest.mark.asyncio
async def test_provider_for_rejects_a_ca_secret_that_is_not_pem():
    secrets = FakeSecrets({("ca", "ca.crt"): "not a certificate"})
    with pytest.raises(prometheus.ProviderError) as caught:
        await provider_for(config(caSecret={"name": "ca", "key": "ca.crt"}), "ns", secrets)
    assert caught.value.kind == "credentials" and "secret ns/ca key 'ca.crt' is not a PEM CA bundle" in str(caught.value)


@pytest.mark.asyncio
async def test_provider_for_lets_other_errors_through():
    with pytest.raises(ConnectionError):
        await provider_for(config(bearerTokenSecret={"name": "tok", "key": "token"}), "ns",
                           FakeSecrets(error=ConnectionError("API server down")))


# measure: whatever one check's measurement meets is that check's Error verdict, not the analysis' crash.

SUBJECT = Subject("ns", "fraud", "v2", "v2-rev", "fraud", "5m")


class FakeProvider:
    def __init__(self, answers):
        self.answers = answers

    async def query(self, promql, at, batch=None):
        answer = self.answers[promql.split("{")[0]]
        if isinstance(answer, Exception):
            raise answer
        return answer


def a_check(**kw):
    return Check.model_validate({"name": "c", "query": "value", "max": 1, **kw})


@pytest.mark.parametrize("counted, samples", [(None, 0), (math.nan, 0), (-3.0, 0), (-math.inf, 0), (12.9, 12),
                                              (1e300, 2**53)])
def test_sample_count(counted, samples):
    assert sample_count(counted) == samples


def test_an_infinite_sample_count_is_a_bad_response():
    with pytest.raises(prometheus.ProviderError) as caught:
        sample_count(math.inf)
    assert caught.value.kind == "bad_response"


@pytest.mark.asyncio
@pytest.mark.parametrize("answers, check, expected", [
    ({"value": 0.5, "count": math.nan}, a_check(sampleQuery="count", minSamples=1), Measurement(0.5, None, 0)),
    ({"value": 0.5, "count": math.inf}, a_check(sampleQuery="count"), "+Inf"),
    ({"value": 0.5, "count": -1.0}, a_check(sampleQuery="count"), Measurement(0.5, None, 0)),
    ({"value": prometheus.ProviderError("timeout", "slow")}, a_check(), "slow"),
    # refused when a spec is read (check_query); one accepted before that rule still ends as an Error verdict
    ({"value": 0.5}, a_check().model_copy(update={"query": "value{{{nope}}}"}), "unknown variable"),
    ({"value": RuntimeError("bug")}, a_check(), "internal error (RuntimeError)"),
])
async def test_measure_turns_every_failure_into_an_error(answers, check, expected):
    measured = await measure(FakeProvider(answers), check, {}, SUBJECT, SUBJECT, AT)
    if isinstance(expected, Measurement):
        assert measured == expected
    else:
        assert measured.value is None and expected in measured.error


@pytest.mark.asyncio
async def test_infinities_reach_evaluate_as_they_are():
    """evaluate judges +Inf and -Inf (never a pass); measure passes them on."""
    class Provider:
        async def query(self, promql, at, batch=None):
            return math.inf if 'version="v1"' in promql else -math.inf

    check = Check.model_validate({"name": "c", "query": 'x{version="{{version}}"}', "maxDropPercent": 5})
    stable = Subject("ns", "fraud", "v1", "v1-rev", "fraud", "5m")
    assert await measure(Provider(), check, {}, SUBJECT, stable, AT) == Measurement(-math.inf, math.inf)


@pytest.mark.asyncio
async def test_one_checks_failure_is_only_its_own():
    checks = [a_check(name="ok"), a_check(name="broken", query="broken"),
              Check.model_validate({"name": "tpl", "template": "errorRate", "max": 1})]
    provider_ = FakeProvider({"value": 0.5, "broken": prometheus.ProviderError("http", "HTTP 500")})
    results = await analyse(provider_, checks, {}, SUBJECT, SUBJECT, AT, "2026-01-01T00:00:00Z")
    assert [r.verdict for r in results] == [Verdict.Pass, Verdict.Error, Verdict.Error]
    assert "HTTP 500" in results[1].message
    assert "no built-in errorRate check" in results[2].message


@pytest.mark.asyncio
async def test_template_queries_batch_across_namespaces_and_a_users_only_within_its_own():
    asked: list[tuple[str, str | None]] = []

    class Provider:
        async def query(self, promql, at, batch=None):
            asked.append((promql.split("{")[0], batch))
            return 1.0

    templates = {CheckTemplate.errorRate: TemplateQuery('errors{ns="{{namespace}}"}', 'requests{ns="{{namespace}}"}')}
    checks = [Check.model_validate({"name": "tpl", "template": "errorRate", "max": 1}),
              Check.model_validate({"name": "own-count", "template": "errorRate", "max": 1,
                                    "sampleQuery": 'mine{ns="{{namespace}}"}'}),
              a_check(name="user", query='users{ns="{{namespace}}"}', maxDropPercent=5)]
    await analyse(Provider(), checks, templates, SUBJECT, SUBJECT, AT, "2026-01-01T00:00:00Z")
    assert sorted(asked) == sorted([("errors", ""), ("requests", ""), ("errors", ""), ("mine", "namespace/ns"),
                                    ("users", "namespace/ns"), ("users", "namespace/ns")])


@pytest.mark.asyncio
async def test_a_slow_query_times_out_its_batch_once_then_only_itself(server):
    """A batch that times out is a timeout for all its queries, once (no second wait: a hung Prometheus is noticed
    as fast as without batching). Each is then asked alone: those that answer in time join batches again, the slow
    one stays alone."""
    slow = provider(server, "batching", timeout=0.5)
    queries = ["vector(1)", "vector(2)", "slow(vector(3))"]

    async def ask_all():
        return await asyncio.gather(*(slow.query(q, AT, batch="ns/tenant") for q in queries), return_exceptions=True)

    first = await ask_all()
    assert all(isinstance(r, prometheus.ProviderError) and r.kind == "timeout" for r in first)
    assert len(server.forms) == 1  # the batch alone: nothing asked twice
    second = await ask_all()
    assert second[:2] == [1.0, 2.0] and second[2].kind == "timeout"
    assert len(server.forms) == 1 + 3  # each alone
    third = await ask_all()
    assert third[:2] == [1.0, 2.0] and third[2].kind == "timeout"
    assert len(server.forms) == 4 + 2  # the two others share a request again; the slow one goes alone
    batch = 'label_replace(vector(1), "modelops_batch_query", "0", "", "") or ' \
            'label_replace(vector(2), "modelops_batch_query", "1", "", "")'
    assert sorted(f["query"] for f in server.forms[-2:]) == sorted([batch, "slow(vector(3))"])


@pytest.mark.asyncio
async def test_a_batch_answer_with_a_series_of_no_query_is_not_trusted(server):
    """A series without the batch label (an odd server, or a query that drops labels): nobody can tell whose it
    is, so each query is asked again alone, and each gets its own answer."""
    odd = provider(server, "batching")
    queries = ["vector(1)", "untagged(vector(2))"]
    answers = await asyncio.gather(*(odd.query(q, AT, batch="ns/tenant") for q in queries))
    assert answers == [1.0, 2.0]
    assert [f["query"] for f in server.forms[1:]] == queries  # the batch, then each alone


@pytest.mark.asyncio
async def test_a_batch_may_take_longer_the_more_queries_it_carries(server):
    """Prometheus evaluates a batch's operands one after the other: 32 queries of 20 ms take 0.64 s, more than one
    query's 0.5 s timeout, and get four timeouts (32 / 8), so they are answered in one request."""
    queries = [f"sleepy(vector({n}))" for n in range(32)]
    answers = await asyncio.gather(*(provider(server, "batching", timeout=0.5).query(q, AT, batch="ns/tenant")
                                     for q in queries))
    assert answers == [float(n) for n in range(32)]
    assert len(server.forms) == 1


@pytest.mark.asyncio
async def test_a_batch_takes_no_longer_than_the_budget_of_those_waiting_for_it(server):
    queries = [f"sleepy(vector({n}))" for n in range(32)]
    answers = await asyncio.gather(*(provider(server, "batching", timeout=0.2, budget=0.3).query(q, AT, batch="ns/t")
                                     for q in queries), return_exceptions=True)
    assert all(isinstance(a, prometheus.ProviderError) and "timed out after 0.3s" in str(a) for a in answers), answers


@pytest.mark.asyncio
async def test_a_template_query_over_a_window_of_its_own_is_batched_only_within_its_namespace():
    """A sequential check's window grows with the rollout (new text, and slower, each time): never in a batch with
    other namespaces' queries. The same template over the analysis window is."""
    asked: list[tuple[str, str, str | None]] = []

    class Provider:
        async def query(self, promql, at, batch=None):
            asked.append((promql.split("{")[0], re.search(r"\[(.*)\]", promql).group(1), batch))
            return 1.0

    templates = {CheckTemplate.errorRate: TemplateQuery('errors{ns="{{namespace}}"}[{{window}}]',
                                                        'requests{ns="{{namespace}}"}[{{window}}]')}
    checks = [Check.model_validate({"name": "plain", "template": "errorRate", "max": 1}),
              Check.model_validate({"name": "growing", "template": "errorRate", "max": 1})]
    await analyse(Provider(), checks, templates, SUBJECT, SUBJECT, AT, "2026-01-01T00:00:00Z", {"growing": "47s"})
    assert sorted(asked) == sorted([("errors", "5m", ""), ("requests", "5m", ""),
                                    ("errors", "47s", "namespace/ns"), ("requests", "47s", "namespace/ns")])
