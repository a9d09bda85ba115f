"""The demo's scenario, headless: real models behind KServe ModelServer processes, graded traffic."""

from __future__ import annotations

from demo.run import run_demo


def test_bad_version_is_rolled_back_and_good_one_promoted(tmp_path):
    result = run_demo(tmp_path, live=False)
    v2, v3 = result["phases"]["2.0.0"], result["phases"]["3.0.0"]
    assert (v2["phase"], v2["stable"]) == ("RolledBack", "1.0.0")
    assert "Failed (2/2)" in next(h["reason"] for h in v2["history"] if h["action"] == "RolledBack")
    assert (v3["phase"], v3["stable"]) == ("Stable", "3.0.0")
    assert [h["action"] for h in v3["history"] if h["version"] == "3.0.0"] == [
        "RolloutStarted", "StepAdvanced", "StepAdvanced", "Promoted"]
    # No request failed because of the operator's own switching (v2's own 5xx are the model's).
    assert result["lost"] == 0
    assert sum(n for (unit, code), n in v3["requests"].items() if code == 200) > 100
    assert result["breach_seconds"] is not None
    assert result["png"].stat().st_size > 20_000
    report = result["report"].read_text()
    assert "visible in Prometheus -> 100 % stable" in report and "operator peak memory" in report
    print(f"\nbreach -> 100% stable: {result['breach_seconds']:.2f} s; operator: {result['operator']}")
