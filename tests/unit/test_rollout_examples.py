"""The rollout semantics of DESIGN.md section 4, one scenario each."""

from datetime import timedelta

from modelops.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus, Phase, Request, TrafficOverride
from modelops.rollout import Carried
from modelops.rollout.plan import progress_deadline
from modelops.rollout.values import ROUTING_GRACE_SECONDS, parse_rfc3339

from .rollout_sim import Sim, make_spec


def rolling_out(**spec_options) -> Sim:
    sim = Sim(make_spec(**spec_options))
    sim.step()
    sim.set(version="1.1.0")
    return sim


def request(action, rid="r1", **kw):
    return Request.model_validate({"id": rid, "action": action, "reason": "testing", "actor": "sre", **kw})


def test_first_version_is_stable_at_once():
    sim = Sim(make_spec())
    d = sim.step()
    assert (d.status.phase, d.status.stable_version, d.intent.weights()) == (Phase.Stable, "1.0.0", {"1.0.0": 100})
    assert [h.action for h in d.status.history] == ["Deployed"]


def test_healthy_candidate_walks_every_step_then_is_promoted():
    sim = rolling_out()
    weights = [sim.decisions[-1].intent.weights()]
    while sim.status.phase is not Phase.Stable:
        weights.append(sim.tick("Pass").intent.weights())
        assert len(weights) < 20
    distinct = [w for i, w in enumerate(weights) if i == 0 or w != weights[i - 1]]
    assert distinct == [{"1.0.0": 90, "1.1.0": 10}, {"1.0.0": 50, "1.1.0": 50}, {"1.1.0": 100}]
    assert (sim.status.stable_version, sim.status.fallback_version, sim.status.canary_version) == ("1.1.0", "1.0.0", None)
    assert sim.reasons().count("StepAdvanced") == 2 and sim.reasons()[-1] == "Promoted"


def test_a_step_waits_for_its_pause_even_when_analysis_passes():
    sim = rolling_out(pause="1m")
    for _ in range(5):  # 50 s < 1 m
        assert sim.tick("Pass").status.canary_weight == 10
    assert sim.tick("Pass").status.canary_weight == 50


def test_a_step_whose_write_landed_late_passes_only_on_traffic_it_routed():
    """A saturated API server: the 50 % write lands 15 s after the step was decided. The analysis 10 s in
    measured the 10 % step, and the one 20 s in mostly that too: the step waits for a window that began once the
    backend carried 50 %."""
    sim = rolling_out(pause="10s")
    sim.tick("Pass")
    fifty = sim.decisions[-1].intent
    assert fifty.candidate_weight == 50
    decided = parse_rfc3339(sim.status.step_started_at)
    sim.carried = None  # the write is still queued
    assert sim.tick("Pass").status.canary_weight == 50
    sim.carried = Carried(fifty, decided + timedelta(seconds=15))
    assert sim.tick("Pass").status.canary_weight == 50  # its window began 10 s in
    assert sim.tick("Pass").status.phase is Phase.Stable  # 20 s to 30 s: all of it at 50 %


def test_a_step_the_backend_is_not_seen_carrying_never_passes_but_its_failures_count():
    sim = rolling_out(pause="10s", analysis={"failureLimit": 1})
    for _ in range(4):
        sim.carried = None  # every round's apply failed, or found the backend not there yet
        assert sim.tick("Pass").status.canary_weight == 10
    sim.carried = None
    assert sim.tick("Fail").status.phase is Phase.RolledBack


def test_no_data_before_the_step_is_seen_carried_does_not_count_toward_no_data_limit():
    """The first step's route write is queued behind a saturated API server: the candidate has no requests yet, and
    its analyses see no data. They are not about the step's traffic, so they do not roll a healthy candidate back;
    once the backend carries the step, no data counts again."""
    sim = rolling_out(pause="10s", analysis={"noDataLimit": 2, "failureLimit": 1})
    for _ in range(4):
        sim.carried = None  # the write is still queued
        assert sim.tick("NoData").status.phase is Phase.Progressing
    assert sim.status.consecutive_no_data == 0 and sim.status.canary_weight == 10
    sim.carried = Carried(sim.decisions[-1].intent, sim.now + timedelta(seconds=5))
    sim.tick("NoData")  # its window began before the step was carried: still not its own traffic
    assert sim.status.consecutive_no_data == 0
    sim.tick("NoData")
    assert sim.status.consecutive_no_data == 1
    assert sim.tick("NoData").status.phase is Phase.RolledBack


def test_a_step_never_seen_carried_counts_no_data_once_its_ready_timeout_has_passed():
    """No data does not count before the backend carries the step, for strategy.readyTimeout from the step's
    decision; past it no data counts whether carried or not, so a step the backend never carries still ends."""
    sim = rolling_out(pause="10s", analysis={"noDataLimit": 2, "failureLimit": 1}, strategy={"readyTimeout": "1m"})
    decided = parse_rfc3339(sim.status.step_started_at)
    while sim.status.phase is Phase.Progressing:
        sim.carried = None  # every round's route write timed out
        sim.tick("NoData")
        assert sim.now - decided <= timedelta(minutes=1, seconds=20)
    assert sim.status.phase is Phase.RolledBack and sim.now - decided == timedelta(minutes=1, seconds=10)
    assert "inconclusive 2 times in a row" in sim.status.history[-1].reason


def test_a_step_carried_within_the_grace_counts_from_its_decision():
    sim = rolling_out(pause="10s")
    decided = parse_rfc3339(sim.status.step_started_at)
    sim.carried = Carried(sim.decisions[-1].intent, decided + timedelta(seconds=ROUTING_GRACE_SECONDS))
    assert sim.tick("Pass").status.canary_weight == 50


def test_failure_limit_consecutive_failures_roll_back_immediately():
    sim = rolling_out(analysis={"failureLimit": 2})
    sim.tick("Fail")
    assert sim.status.phase is Phase.Progressing and sim.status.consecutive_failures == 1
    d = sim.tick("Fail")
    assert d.status.phase is Phase.RolledBack
    assert d.intent.weights() == {"1.0.0": 100}
    assert d.status.failed_version == "1.1.0"
    assert "Failed (2/2)" in d.status.history[-1].reason


def test_a_pass_resets_the_consecutive_failures():
    sim = rolling_out(analysis={"failureLimit": 2}, pause="5m")
    for verdict in ["Fail", "Pass", "Fail", "Pass", "Fail"]:
        sim.tick(verdict)
    assert sim.status.phase is Phase.Progressing and sim.status.consecutive_failures == 1


def test_rolled_back_stays_rolled_back_until_spec_changes():
    sim = rolling_out(analysis={"failureLimit": 1})
    sim.tick("Fail")
    for _ in range(10):
        sim.tick("Pass")
    assert sim.status.phase is Phase.RolledBack and sim.status.canary_version is None
    sim.set(version="1.2.0")
    assert sim.status.phase is Phase.Progressing and sim.status.canary_version == "1.2.0"


def test_reverting_spec_version_after_rollback_is_stable_again():
    sim = rolling_out(analysis={"failureLimit": 1})
    sim.tick("Fail")
    sim.set(version="1.0.0")
    assert (sim.status.phase, sim.status.failed_version) == (Phase.Stable, None)


def test_progressive_rollback_steps_down_and_is_still_watched():
    sim = rolling_out(steps=(10, 25, 50), pause="10s", strategy={"rollback": "Progressive"},
                      analysis={"failureLimit": 1})
    sim.tick("Pass"), sim.tick("Pass")
    assert sim.status.canary_weight == 50
    assert sim.tick("Fail").status.phase is Phase.RollingBack
    assert sim.tick("Pass").status.canary_weight == 25
    assert sim.tick("Pass").status.canary_weight == 10
    d = sim.tick("Pass")
    assert d.status.phase is Phase.RolledBack and d.intent.weights() == {"1.0.0": 100}


def test_progressive_rollback_drops_to_zero_on_a_new_failure():
    sim = rolling_out(steps=(10, 25, 50), pause="10s", strategy={"rollback": "Progressive"},
                      analysis={"failureLimit": 1})
    sim.tick("Pass"), sim.tick("Pass"), sim.tick("Fail")
    assert sim.status.phase is Phase.RollingBack
    d = sim.tick("Fail")
    assert d.status.phase is Phase.RolledBack and d.intent.weights() == {"1.0.0": 100}


def test_progressive_rollback_with_no_lower_step_puts_all_traffic_on_stable_at_once():
    hot_swap = Sim(make_spec(strategy={"type": "HotSwap", "rollback": "Progressive"}, analysis={"failureLimit": 1}))
    hot_swap.step()
    hot_swap.set(version="1.1.0")
    d = hot_swap.tick("Fail")  # not one more analysis at 100 %
    assert d.status.phase is Phase.RolledBack and d.intent.weights() == {"1.0.0": 100}
    first_step = rolling_out(steps=(10, 50), strategy={"rollback": "Progressive"}, analysis={"failureLimit": 1})
    d = first_step.tick("Fail")
    assert d.status.phase is Phase.RolledBack and d.intent.weights() == {"1.0.0": 100}


def test_no_data_holds_then_fails_after_its_bound():
    sim = rolling_out(analysis={"noDataLimit": 3, "failureLimit": 1}, pause="10s")
    for _ in range(2):
        d = sim.tick("NoData")
        assert d.status.phase is Phase.Progressing and d.status.canary_weight == 10
    assert sim.tick("NoData").status.phase is Phase.RolledBack
    assert "inconclusive 3 times in a row" in sim.status.history[-1].reason


def test_no_data_policy_pass_and_fail():
    passing = rolling_out(checks=[{"name": "c", "query": "up", "max": 0.05, "noData": "Pass"}], pause="10s")
    passing.tick("NoData")
    assert passing.status.canary_weight == 50
    failing = rolling_out(checks=[{"name": "c", "query": "up", "max": 0.05, "noData": "Fail"}],
                          analysis={"failureLimit": 1})
    assert failing.tick("NoData").status.phase is Phase.RolledBack


def test_traffic_waits_for_a_ready_candidate():
    sim = Sim(make_spec())
    sim.ready.discard("1.1.0")
    sim.step()
    d = sim.set(version="1.1.0")
    assert d.intent.weights() == {"1.0.0": 100} and "waiting for 1.1.0" in d.status.message
    for _ in range(5):
        assert sim.tick("NoData").status.phase is Phase.Progressing  # no verdicts while it takes no traffic
    sim.ready.add("1.1.0")
    assert sim.tick("Pass").intent.weights() == {"1.0.0": 90, "1.1.0": 10}


def test_hot_swap_takes_all_traffic_then_is_promoted_by_a_passed_analysis():
    sim = Sim(make_spec(strategy={"type": "HotSwap"}))
    sim.step()
    d = sim.set(version="1.1.0")
    assert d.status.phase is Phase.Progressing and d.intent.weights() == {"1.1.0": 100}
    d = sim.tick("Pass", seconds=1)
    assert d.status.phase is Phase.Stable and d.status.fallback_version == "1.0.0"


def test_hot_swap_is_rolled_back_by_failed_analyses():
    sim = Sim(make_spec(strategy={"type": "HotSwap"}, analysis={"failureLimit": 1}))
    sim.step()
    sim.set(version="1.1.0")
    d = sim.tick("Fail")
    assert d.status.phase is Phase.RolledBack and d.intent.weights() == {"1.0.0": 100}


def test_new_version_mid_rollout_restarts_with_it():
    sim = rolling_out(pause="10s")
    sim.tick("Pass")
    assert sim.status.canary_weight == 50
    d = sim.set(version="1.2.0")
    assert (d.status.canary_version, d.status.canary_weight) == ("1.2.0", 10)
    assert [h.action for h in d.status.history][-3:] == ["Superseded", "RolloutStarted", "StepAdvanced"]


def test_returning_spec_to_stable_mid_rollout_cancels_it():
    sim = rolling_out()
    d = sim.set(version="1.0.0")
    assert (d.status.phase, d.status.canary_version, d.intent.weights()) == (Phase.Stable, None, {"1.0.0": 100})


def test_pause_freezes_steps_but_keeps_automatic_rollback():
    sim = rolling_out(pause="10s", analysis={"failureLimit": 2})
    sim.set(paused=True)
    for _ in range(3):
        assert sim.tick("Pass").status.canary_weight == 10
    assert sim.status.phase is Phase.Paused
    assert sim.set(paused=False).status.canary_weight == 50  # the step's pause and analysis were done
    assert [h.action for h in sim.status.history if h.action in ("Paused", "Resumed")] == ["Paused", "Resumed"]
    sim.set(paused=True)
    sim.tick("Fail"), sim.tick("Fail")
    assert sim.status.phase is Phase.RolledBack


def test_paused_before_the_first_step_sends_the_candidate_nothing_until_resumed():
    sim = Sim(make_spec(pause="10s"))
    sim.step()
    d = sim.set(version="1.1.0", paused=True)
    assert d.status.phase is Phase.Paused and d.intent.weights() == {"1.0.0": 100}
    for _ in range(3):
        assert sim.tick("Pass").intent.weights() == {"1.0.0": 100}
    assert "paused before step 1" in sim.status.message and sim.status.current_step == 0
    assert sim.set(paused=False).intent.weights() == {"1.0.0": 90, "1.1.0": 10}


def test_pinned_weight_holds_traffic_and_suspends_rollback():
    sim = rolling_out(analysis={"failureLimit": 1}, pause="5m")
    d = sim.set(traffic_override=TrafficOverride(weight=30, reason="investigating latency"))
    assert d.intent.weights() == {"1.0.0": 70, "1.1.0": 30}
    for verdict in ["Fail", "Fail", "Pass"]:
        assert sim.tick(verdict).intent.weights() == {"1.0.0": 70, "1.1.0": 30}
    assert sim.status.history[-1].reason == "weight pinned at 30%: investigating latency"
    d = sim.set(traffic_override=None)
    assert d.intent.weights() == {"1.0.0": 90, "1.1.0": 10}


def test_manual_promote_abort_retry_are_recorded_once():
    sim = rolling_out()
    d = sim.set(request=request("Promote"))
    assert d.status.stable_version == "1.1.0" and d.status.history[-1].actor == "sre"
    assert sim.step().events == ()  # same request id: not repeated
    sim.set(version="1.2.0")
    d = sim.set(request=request("Abort", "r2"))
    assert d.status.phase is Phase.RolledBack and d.status.history[-1].action == "Aborted"
    d = sim.set(request=request("Retry", "r3"))
    assert d.status.phase is Phase.Progressing and d.status.canary_version == "1.2.0"


def test_rollback_to_a_named_retained_version():
    sim = Sim(make_spec(strategy={"type": "HotSwap"}))
    sim.step()
    for version in ["1.1.0", "1.2.0"]:
        sim.set(version=version), sim.tick("Pass")
    assert sim.status.retained_versions == ["1.1.0", "1.0.0"]
    d = sim.set(request=request("Rollback", version="1.0.0"))
    assert d.status.stable_version == "1.0.0" and d.intent.weights() == {"1.0.0": 100}
    assert d.status.phase is Phase.RolledBack and d.status.failed_version == "1.2.0"
    assert d.status.retained_versions == ["1.2.0", "1.1.0"]
    assert sim.tick().status.stable_version == "1.0.0"  # it does not roll forward by itself


def test_promoting_a_retained_version_takes_it_out_of_the_retained_ones():
    sim = Sim(make_spec(strategy={"type": "HotSwap"}, retention=2))
    sim.step()
    for version in ["1.1.0", "1.2.0"]:
        sim.set(version=version), sim.tick("Pass")
    assert sim.status.retained_versions == ["1.1.0", "1.0.0"]
    sim.set(version="1.1.0"), sim.tick("Pass")  # rolled forward again to a retained version
    assert sim.status.stable_version == "1.1.0"
    assert sim.status.retained_versions == ["1.2.0", "1.0.0"]  # two to go back to, neither of them stable


def test_requests_that_cannot_apply_are_ignored_with_a_warning():
    sim = Sim(make_spec(retention=1))
    sim.step()
    for rid, action, extra in [("a", "Promote", {}), ("b", "Abort", {}), ("c", "Retry", {}),
                               ("d", "Rollback", {"version": "0.9.0"})]:
        d = sim.set(request=request(action, rid, **extra))
        assert [e.reason for e in d.events] == ["RequestIgnored"] and d.status.stable_version == "1.0.0"


def test_history_is_bounded():
    sim = Sim(make_spec(history_limit=3, strategy={"type": "HotSwap"}))
    sim.step()
    for v in ["1.1.0", "1.2.0", "2.0.0", "1.1.0"]:
        sim.set(version=v), sim.tick("Pass")
    assert [(h.action, h.version) for h in sim.status.history] == [
        ("RolloutStarted", "1.1.0"), ("StepAdvanced", "1.1.0"), ("Promoted", "1.1.0")]


def test_conditions_tell_the_phase():
    sim = rolling_out(analysis={"failureLimit": 1})
    by_type = {c.type: c for c in sim.status.conditions}
    assert by_type["Progressing"].status == "True" and by_type["Degraded"].status == "False"
    started = by_type["Progressing"].last_transition_time
    sim.tick("Pass", seconds=5)
    assert {c.type: c for c in sim.status.conditions}["Progressing"].last_transition_time == started
    sim.tick("Fail")
    by_type = {c.type: c for c in sim.status.conditions}
    assert by_type["Degraded"].status == "True" and by_type["Degraded"].reason == "RolledBack"
    assert by_type["Ready"].status == "True"


def test_replayed_analysis_is_counted_once():
    sim = rolling_out(analysis={"failureLimit": 2}, pause="5m")
    d = sim.tick("Fail")
    report = sim.decisions[-1]
    again = sim.step(report=None)
    assert again.status.consecutive_failures == 1 and report.status == d.status


def test_progress_deadline_allows_the_wait_or_the_step_and_its_analyses():
    spec = ModelDeploymentSpec.model_validate({
        "model": "m", "version": "2.0.0", "serving": {"backend": "kserve"},
        "strategy": {"steps": [{"weight": 10, "pause": "2m"}, {"weight": 50, "pause": "5m"}], "readyTimeout": "10m"},
        "analysis": {"interval": "1m", "window": "2m", "failureLimit": 2, "noDataLimit": 3}})
    t0 = "2026-01-01T00:00:00.000Z"
    waiting = ModelDeploymentStatus(phase=Phase.Progressing, stable_version="1.0.0", canary_version="2.0.0",
                                    current_step=0, waiting_since=t0)
    assert progress_deadline(spec, waiting) == parse_rfc3339(t0) + timedelta(minutes=10)
    in_step_2 = waiting.model_copy(update={"waiting_since": None, "current_step": 1, "step_started_at": t0})
    # pause 5m + first window 2m + (3 no-data + 2 failures + 1) analyses of 1m
    assert progress_deadline(spec, in_step_2) == parse_rfc3339(t0) + timedelta(minutes=13)
    for held in ({"phase": Phase.Paused}, {"pinned_weight": 30}, {"phase": Phase.Stable, "canary_version": None},
                 {"phase": Phase.RollingBack}):
        assert progress_deadline(spec, in_step_2.model_copy(update=held)) is None


def test_a_retry_waiting_for_stable_is_answered_in_the_decision_whose_promotion_makes_stable_ready():
    """Stable 1.0.0 stops serving while 1.1.0 is at its last step, and a Retry arrives: it waits for stable. The
    analysis then promotes 1.1.0, which serves: the Retry (nothing to retry now) is answered in that same decision,
    so that deciding again from its status changes nothing."""
    sim = rolling_out(steps=(10,), pause="0s")
    sim.ready.discard("1.0.0")
    waiting = sim.set(request=request("Retry"))
    assert "waits for stable 1.0.0" in waiting.status.message and "r1" not in waiting.status.handled_requests
    promoted = sim.tick("Pass")
    assert promoted.status.stable_version == "1.1.0" and "r1" in promoted.status.handled_requests
    assert [e.reason for e in promoted.events if e.reason == "RequestIgnored"] == ["RequestIgnored"]
    again = sim.step()
    assert again.events == () and again.status == promoted.status
