"""The demo's scenario, headless: real models behind KServe ModelServer processes, one Service each behind a
Gateway API route, graded traffic, and a shadow step before any user gets a candidate's answer."""

from __future__ import annotations

from demo.run import AGREEMENT_MIN, DRIFT_MAX, run_demo


def walked(timeline: list[dict], version: str) -> list[tuple[int, int]]:
    """The (mirror %, weight %) the status gave `version` while it was the candidate, each change once, from its
    first step on (before it, the candidate is waiting to be ready at 0 %)."""
    shares: list[tuple[int, int]] = []
    for point in timeline:
        share = (point["mirror"], point["weight"])
        if point["canary"] != version or share == (0, 0) and not shares:
            continue
        if not shares or shares[-1] != share:
            shares.append(share)
    return shares


def test_bad_version_is_rolled_back_in_its_shadow_step_unseen_and_good_one_promoted(tmp_path):
    result = run_demo(tmp_path, live=False)
    v2, v3 = result["phases"]["2.0.0"], result["phases"]["3.0.0"]
    seen_v2, seen_v3 = result["figures"]["2.0.0"], result["figures"]["3.0.0"]

    assert (v2["phase"], v2["stable"]) == ("RolledBack", "1.0.0")
    v2_history = [h for h in v2["history"] if h["version"] == "2.0.0"]
    # Rolled back during the shadow step: it never advanced beyond step 1.
    assert [h["action"] for h in v2_history] == ["RolloutStarted", "StepAdvanced", "RolledBack"]
    assert v2_history[1]["reason"].startswith("step 1/3 mirroring 100%")
    assert "Failed (2/2)" in v2_history[-1]["reason"]
    assert walked(result["timeline"], "2.0.0") == [(100, 0)]
    # Its failures were real, on the copies; no user got an answer, or an error, from it.
    assert seen_v2["copies"] > 0 and seen_v2["copies_failed"] > 0
    assert (seen_v2["candidate_answers"], seen_v2["candidate_errors"]) == (0, 0)
    # Its inputs drifted from its training data, and its drift check said so before the rollback.
    assert seen_v2["drift"] > DRIFT_MAX
    assert any(p["canary"] == "2.0.0" and p["checks"].get("drift", (None, None))[1] == "Fail" for p in result["timeline"])

    assert (v3["phase"], v3["stable"]) == ("Stable", "3.0.0")
    assert [h["action"] for h in v3["history"] if h["version"] == "3.0.0"] == [
        "RolloutStarted", "StepAdvanced", "StepAdvanced", "StepAdvanced", "Promoted"]
    assert walked(result["timeline"], "3.0.0") == [(100, 0), (0, 20), (0, 50)]  # never back down on the way
    assert seen_v3["compared"] >= 20 and seen_v3["agreement"] >= AGREEMENT_MIN
    assert seen_v3["copies"] > 0 and seen_v3["copies_failed"] == 0
    assert seen_v3["candidate_answers"] > 100 and seen_v3["candidate_errors"] == 0
    assert seen_v3["drift"] < DRIFT_MAX
    # No request failed because of the operator's own switching.
    assert result["lost"] == 0
    assert result["breach_seconds"] is not None
    assert result["png"].stat().st_size > 20_000
    report = result["report"].read_text()
    assert "requests mirrored to the candidate" in report and "agreement with stable" in report
    assert f"{seen_v3['agreement']:.1%} of {seen_v3['compared']}" in report
    assert "visible in Prometheus -> 100 % stable" in report and "operator peak memory" in report
    assert "## The checks' error rates (simulated)" in report
    # The rollback drill: to the fallback v1 and back to v3 on live traffic, timed, nothing failed.
    drill = result["drill"]
    assert (drill["status"]["result"], drill["status"]["fallbackVersion"], drill["status"]["returnedTo"]) == \
        ("Completed", "1.0.0", "3.0.0")
    assert drill["status"]["secondsToFallback"] > 0 and drill["data_plane_to_fallback"] > 0
    assert drill["requests"] > 0 and drill["failed"] == 0
    assert "Time to recover (MTTR)" in report and "| hot swap by hand (usually quoted) | 2-5 min |" in report
    print(f"\ncopies to v2: {seen_v2['copies']} ({seen_v2['copies_failed']} failed), agreement v2 "
          f"{seen_v2['agreement']}, v3 {seen_v3['agreement']:.3f} of {seen_v3['compared']}; "
          f"breach -> 100% stable: {result['breach_seconds']:.2f} s; drill to the fallback: operator "
          f"{drill['status']['secondsToFallback']} s, data plane {drill['data_plane_to_fallback']:.2f} s; "
          f"operator: {result['operator']}")
