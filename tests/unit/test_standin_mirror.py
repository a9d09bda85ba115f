"""Mirror and header-match steps on the stand-ins, without a cluster: how a Gateway rule's RequestMirror filters
and a Seldon v1 shadow predictor read, which rule a header-carrying request reaches, how the load generator
copies requests (against loopback HTTP servers), and how a model server counts agreement with the served
prediction."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from playground.loadgen import LoadGenerator
from playground.revision_server import predictions_of
from playground.revision_server import SHADOW_HEADER, Behaviour
from playground.standin import free_port
from playground.standin_backends import predictor_shares, requested_mirrors, route_for


def mirror_filter(**request_mirror) -> dict:
    return {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "fraud-v2", "port": 80}, **request_mirror}}


# --- Gateway: RequestMirror filters and rule precedence -----------------------------------------------------


@pytest.mark.parametrize(("request_mirror", "percent"), [
    ({"percent": 30}, 30),
    ({"percent": 0}, 0),
    ({"fraction": {"numerator": 1, "denominator": 4}}, 25),
    ({"fraction": {"numerator": 7}}, 7),  # denominator 100 unless set
    ({}, 100),  # neither: every request
])
def test_a_request_mirror_filter_copies_its_percent_of_the_rule_to_its_service(request_mirror, percent):
    assert requested_mirrors({"filters": [mirror_filter(**request_mirror)]}) == [("fraud-v2", percent)]


def test_only_request_mirror_filters_are_mirrors():
    rule = {"filters": [{"type": "RequestHeaderModifier", "requestHeaderModifier": {"set": []}},
                        mirror_filter(percent=10),
                        {"type": "RequestMirror", "requestMirror": {"backendRef": {"name": "audit"}}}]}
    assert requested_mirrors(rule) == [("fraud-v2", 10), ("audit", 100)]
    assert requested_mirrors({"backendRefs": [{"name": "fraud-v1"}]}) == []


def target(unit: str, percent: float, url: str = "http://127.0.0.1:1") -> dict:
    return {"unit": unit, "version": unit, "percent": percent, "url": url}


MODEL_PATH = {"path": {"type": "PathPrefix", "value": "/"}}
COHORT = [{**MODEL_PATH, "headers": [{"type": "Exact", "name": "x-cohort", "value": "testers"}]}]
TABLE = [
    {"matches": [MODEL_PATH], "split": [target("stable", 100)], "mirror": [target("candidate", 20)]},
    {"matches": COHORT, "split": [target("candidate", 100)], "mirror": []},  # modelops-cohort-... rule
    {"matches": [{"path": {"type": "PathPrefix", "value": "/docs"}}], "split": [target("docs", 100)], "mirror": []},
]


def test_the_cohort_rule_gets_requests_with_its_headers_and_everyone_else_the_default_rule():
    assert route_for(TABLE, "/", {"X-Cohort": "testers"}) is TABLE[1]  # header names match case-insensitively
    assert route_for(TABLE, "/", {}) is TABLE[0]
    assert route_for(TABLE, "/", {"x-cohort": "others"}) is TABLE[0]
    assert route_for(TABLE, "/docs/a", {"x-cohort": "testers"}) is TABLE[2]  # the longer path first


# --- Seldon Core v1: shadow predictors ----------------------------------------------------------------------


def test_a_shadow_predictor_serves_nothing_whatever_its_traffic_and_gets_a_copy_of_every_request():
    assert predictor_shares({"name": "shadow", "shadow": True, "traffic": 40}) == (0, 100)
    assert predictor_shares({"name": "main", "traffic": 100}) == (100, 0)
    assert predictor_shares({"name": "main", "shadow": False, "traffic": 60}) == (60, 0)
    assert predictor_shares({"name": "idle"}) == (0, 0)


# --- revision_server: agreement with the reference model ----------------------------------------------------


@pytest.mark.parametrize(("agreement", "disagreeing"), [(1.0, 0), (0.7, 30), (0.9, 10), (0.0, 100)])
def test_agreement_is_an_exact_share_of_the_answers(agreement, disagreeing):
    behaviour = Behaviour(agreement=agreement)
    predictions = [behaviour.next().prediction for _ in range(100)]
    assert predictions.count("b") == disagreeing and predictions.count("a") == 100 - disagreeing
    if 0 < disagreeing < 100:  # spread over the run, not bunched at one end
        assert predictions[:50].count("b") == disagreeing // 2


def test_agreement_does_not_change_which_requests_fail():
    plain, disagreeing = Behaviour(error_rate=0.2), Behaviour(error_rate=0.2, agreement=0.5)
    assert [plain.next().fails for _ in range(50)] == [disagreeing.next().fails for _ in range(50)]


# --- LoadGenerator: copies to mirror targets ----------------------------------------------------------------


class Recorder:
    """A loopback HTTP server answering every POST with `answer`, remembering each request's body and headers."""

    def __init__(self, answer: dict, code: int = 200):
        self.requests: list[tuple[bytes, dict[str, str]]] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                recorder.requests.append((body, dict(self.headers)))
                payload = json.dumps(answer).encode()
                self.send_response(code)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def headers(self, name: str) -> list[str | None]:
        return [{k.lower(): v for k, v in h.items()}.get(name.lower()) for _, h in self.requests]


@pytest.fixture
def recorders():
    made: list[Recorder] = []

    def make(answer: dict, code: int = 200) -> Recorder:
        made.append(Recorder(answer, code))
        return made[-1]

    yield make
    for recorder in made:
        recorder.server.shutdown()
        recorder.server.server_close()


def publish(directory: Path, name: str, content) -> None:
    (directory / name).write_text(json.dumps(content))


def test_a_thirty_percent_mirror_gets_exactly_thirty_copies_of_a_hundred_requests_carrying_the_predictions(
        tmp_path, recorders):
    stable, candidate = recorders({"predictions": ["a"]}), recorders({"predictions": ["b"]})
    publish(tmp_path, "split-ns-fraud.json", [target("stable", 100, stable.url)])
    publish(tmp_path, "mirror-ns-fraud.json", [target("candidate", 30, candidate.url)])
    load = LoadGenerator(tmp_path / "split-ns-fraud.json")
    load.refresh()
    for _ in range(100):
        load.request(load.pick())
    load.stop()
    assert load.results == {("stable", 200): 100}  # users see stable's answers only
    assert load.mirrored == {("candidate", 200): 30}
    assert len(stable.requests) == 100 and set(stable.headers(SHADOW_HEADER)) == {None}
    assert len(candidate.requests) == 30
    assert candidate.headers(SHADOW_HEADER) == ['["a"]'] * 30
    assert {body for body, _ in candidate.requests} == {body for body, _ in stable.requests}
    assert load.mirrors_seen[-1][1] == {"candidate": 30} and load.splits_seen[-1][1] == {"stable": 100}


def test_copies_are_spread_evenly_and_a_fractional_percent_is_exact():
    load = LoadGenerator(Path("split-ns-none.json"))
    load.mirror = [target("quarter", 25), target("third", 100 / 3), target("all", 100)]
    due = [{t["unit"] for t in load.copies_due()} for _ in range(12)]
    assert [i for i, units in enumerate(due) if "quarter" in units] == [3, 7, 11]
    assert [i for i, units in enumerate(due) if "third" in units] == [2, 5, 8, 11]
    assert all("all" in units for units in due)
    load.stop()


def test_a_failed_primary_is_still_copied_but_without_predictions(tmp_path, recorders):
    stable, candidate = recorders({"error": "boom"}, code=500), recorders({"predictions": ["b"]})
    publish(tmp_path, "split-ns-fraud.json", [target("stable", 100, stable.url)])
    publish(tmp_path, "mirror-ns-fraud.json", [target("candidate", 100, candidate.url)])
    load = LoadGenerator(tmp_path / "split-ns-fraud.json")
    load.refresh()
    load.request(load.pick())
    load.stop()
    assert load.results == {("stable", 500): 1} and load.mirrored == {("candidate", 200): 1}
    assert candidate.headers(SHADOW_HEADER) == [None]


def test_a_lost_copy_counts_as_code_zero_and_no_mirror_file_means_no_copies(tmp_path, recorders):
    stable = recorders({"predictions": ["a"]})
    publish(tmp_path, "split-ns-fraud.json", [target("stable", 100, stable.url)])
    load = LoadGenerator(tmp_path / "split-ns-fraud.json")
    load.refresh()
    load.request(load.pick())
    assert load.mirror == []
    publish(tmp_path, "mirror-ns-fraud.json", [target("gone", 100, f"http://127.0.0.1:{free_port()}")])
    load.refresh()
    load.request(load.pick())
    load.stop()
    assert load.results == {("stable", 200): 2} and load.mirrored == {("gone", 0): 1}


def test_with_headers_the_generator_follows_its_rule_of_the_routes_file_and_sends_them(tmp_path, recorders):
    stable, candidate, audit = recorders({"predictions": ["a"]}), recorders({"predictions": ["b"]}), recorders({})
    table = [
        {"matches": [MODEL_PATH], "split": [target("stable", 100, stable.url)], "mirror": []},
        {"matches": COHORT, "split": [target("candidate", 100, candidate.url)],
         "mirror": [target("audit", 50, audit.url)]},
    ]
    publish(tmp_path, "routes-ns-fraud.json", table)
    publish(tmp_path, "split-ns-fraud.json", table[0]["split"])
    publish(tmp_path, "mirror-ns-fraud.json", [])
    load = LoadGenerator(tmp_path / "split-ns-fraud.json", headers={"X-Cohort": "testers"})
    load.refresh()
    for _ in range(4):
        load.request(load.pick())
    load.stop()
    assert load.results == {("candidate", 200): 4} and not stable.requests
    assert candidate.headers("x-cohort") == ["testers"] * 4
    assert load.mirrored == {("audit", 200): 2}
    assert audit.headers("x-cohort") == ["testers"] * 2 and audit.headers(SHADOW_HEADER) == ['["b"]'] * 2


def test_predictions_are_read_from_a_200_json_object_only():
    assert predictions_of(200, b'{"predictions": ["a"], "version": "1"}') == ["a"]
    assert predictions_of(200, b'{"predictions": [3, 7]}') == [3, 7]
    assert predictions_of(200, b'{"prediction": "a"}') is None
    assert predictions_of(500, b'{"predictions": ["a"]}') is None
    assert predictions_of(200, b"[1, 2]") is None
    assert predictions_of(200, b"not json") is None


# --- revision_server: counting agreement on mirrored copies -------------------------------------------------


@pytest.fixture
def model_server(tmp_path):
    port = free_port()
    config = {"port": port, "namespace": "ns", "object": "fraud", "unit": "fraud-v2", "flavour": "generic",
              "model": "fraud", "version": "2.0.0", "behaviour": {"latency": 0, "agreement": 0.75}}
    process = subprocess.Popen([sys.executable, "-m", "playground.revision_server", json.dumps(config)],
                               cwd=Path(__file__).resolve().parents[2])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(f"{url}/ready", timeout=0.5)
            break
        except OSError:
            assert time.monotonic() < deadline, "the model server did not come up"
            time.sleep(0.05)
    yield url
    process.kill()
    process.wait()


def test_the_model_server_counts_agreement_with_the_predictions_a_copy_carries(model_server):
    body = b'{"instances": [[1, 2, 3, 4]]}'
    answers = [LoadGenerator.post(model_server, body, {SHADOW_HEADER: '["a"]'}) for _ in range(8)]
    assert [json.loads(a)["predictions"] for _, a in answers] == [["a"], ["a"], ["a"], ["b"]] * 2
    LoadGenerator.post(model_server, body)  # not a copy: nothing compared
    text = urllib.request.urlopen(f"{model_server}/metrics", timeout=5).read().decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    model = (("model", "fraud"), ("namespace", "ns"))
    assert samples[("model_shadow_comparisons_total", (*model, ("outcome", "agree"), ("version", "2.0.0")))] == 6
    assert samples[("model_shadow_comparisons_total", (*model, ("outcome", "disagree"), ("version", "2.0.0")))] == 2
    requests = (("code", "200"), ("namespace", "ns"), ("service", "fraud-v2"))
    assert samples[("http_request_duration_seconds_count", requests)] == 9  # copies are ordinary requests


def test_each_request_is_tallied_under_the_split_it_was_picked_from(tmp_path, recorders):
    stable, candidate = recorders({"predictions": ["a"]}), recorders({"predictions": ["b"]})
    publish(tmp_path, "split-ns-fraud.json", [target("stable", 100, stable.url)])
    load = LoadGenerator(tmp_path / "split-ns-fraud.json")
    load.refresh()
    for _ in range(3):
        load.request(load.pick())
    publish(tmp_path, "split-ns-fraud.json", [target("stable", 80, stable.url), target("candidate", 20, candidate.url)])
    load.refresh()
    load.refresh()  # the same split again: no new entry
    for _ in range(10):
        load.request(load.pick())
    load.stop()
    assert [split for _, split in load.splits_seen] == [{"stable": 100}, {"stable": 80, "candidate": 20}]
    assert load.sent_by_split == [{("stable", 200): 3}, {("stable", 200): 8, ("candidate", 200): 2}]
