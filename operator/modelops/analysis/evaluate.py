"""Check evaluation: measured values and a check's limits in, a verdict with its reasons out.

Pure: no I/O, no clock. The caller measures; this module judges and explains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

from ..api.modeldeployment import (LATENCY_QUANTILES, BudgetPolicy, Check, CheckStatus, CheckTemplate, DriftTest,
                                   NoDataPolicy, Outcome, Verdict)
from ..api.types import duration_seconds
from .drift import MIN_EXPECTED, Binned, DriftFinding, judge_drift
from .sequential import (MAX_SAMPLES, MIN_SAMPLES, Buckets, Finding, Intervals, Proportion, Unresolvable, bucket_total,
                         compare_proportions, fold, percentile_name, samples_to_locate, samples_to_within,
                         tail_above)


@dataclass(frozen=True)
class Measurement:
    """What a metric provider measured for one check in one window."""

    value: float | None
    """Candidate's value; None when the query returned nothing."""
    baseline: float | None = None
    """Stable version's value in the same window (relative checks)."""
    samples: int | None = None
    """Samples behind the candidate's value; None when the check does not count them."""
    error: str | None = None
    """Why the provider could not measure (unreachable, timeout, bad query)."""
    baseline_samples: int | None = None
    """Samples behind stable's value (sequential checks)."""
    buckets: Buckets = ()
    baseline_buckets: Buckets = ()
    """The two versions' latency histograms (sequential latency checks)."""
    bins: Binned = field(default_factory=dict)
    reference_bins: Binned = field(default_factory=dict)
    """The candidate's live inputs in the window by (feature, bin), and its reference's (drift tests)."""


def _fmt(x: float) -> str:
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"  # as Prometheus writes them
    return f"{x:.6g}"


def _missing(x: float | None) -> bool:
    return x is None or math.isnan(x)


def _finite(x: float | None) -> float | None:
    """What status may hold: JSON has no Infinity or NaN, and the API server rejects them."""
    return x if x is not None and math.isfinite(x) else None


def _limits(check: Check, baseline: float | None) -> list[tuple[str, float, str]]:
    """(bound kind, bound, words) for every limit; relative bounds need the baseline."""
    bounds: list[tuple[str, float, str]] = []
    if check.min is not None:
        bounds.append(("min", check.min, f">= {_fmt(check.min)}"))
    if check.max is not None:
        bounds.append(("max", check.max, f"<= {_fmt(check.max)}"))
    if baseline is not None:
        if check.max_drop_percent is not None:
            floor = baseline - abs(baseline) * check.max_drop_percent / 100
            words = f">= {_fmt(floor)} (at most {_fmt(check.max_drop_percent)}% below stable {_fmt(baseline)})"
            bounds.append(("min", floor, words))
        if check.max_increase_percent is not None:
            ceiling = baseline + abs(baseline) * check.max_increase_percent / 100
            words = f"<= {_fmt(ceiling)} (at most {_fmt(check.max_increase_percent)}% above stable {_fmt(baseline)})"
            bounds.append(("max", ceiling, words))
    return bounds


def _bounds(check: Check, baseline: float | None) -> list[tuple[str, float, str]]:
    """The thresholds a value is held against: none for a sequential check, which weighs evidence instead."""
    return [] if check.sequential is not None else _limits(check, baseline)


def limit_bounds(check: Check, baseline: float | None) -> dict[str, float]:
    """The limits `evaluate` holds a value against, as numbers: "min" and "max" -> the tightest bound of
    that kind, a relative one computed from stable's `baseline` (taken as `evaluate` takes it: only a
    finite one counts). A kind the check does not bound, or bounds only relative to a missing baseline,
    has no entry."""
    effective: dict[str, float] = {}
    for kind, bound, _ in _bounds(check, _finite(baseline)):
        tightest = max if kind == "min" else min
        effective[kind] = tightest(effective.get(kind, bound), bound)
    return effective


def evaluate(check: Check, measured: Measurement, at: str, previous: CheckStatus | None = None, *,
             sequential_checks: int = 1) -> CheckStatus:
    """Judge one check. `at` is the end of the measured window, as RFC 3339; `previous` is the check's status from
    the rollout's last analysis, whose intervals a sequential check carries on. `sequential_checks`: how many
    sequential checks decide the analysis (see `alpha_split`)."""
    baseline = _finite(measured.baseline)
    intervals = _intervals(check, measured, previous)
    bounds = _bounds(check, baseline)
    limit = "; ".join(words for _, _, words in bounds) or _relative_words(check)

    def result(verdict: Verdict, message: str, value: float | None = measured.value,
               samples: int | None = _candidate_samples(measured)) -> CheckStatus:
        return CheckStatus(
            name=check.name,
            verdict=verdict,
            value=_finite(value),
            baseline=baseline,
            samples=samples,
            limit=limit,
            message=message,
            time=at,
            dry_run=check.dry_run,
            candidate_intervals=intervals[0],
            stable_intervals=intervals[1],
        )

    if measured.error is not None:
        return result(Verdict.Error, f"could not measure: {measured.error}")
    if check.template is CheckTemplate.driftTest:
        return result(*_test_drift(check, measured))
    if _missing(measured.value):
        return result(Verdict.NoData, "no data for the candidate")
    if measured.samples is not None and measured.samples < check.min_samples:
        return result(Verdict.NoData, f"{measured.samples} samples, {check.min_samples} needed for a verdict")
    if check.relative and baseline is None:
        if measured.baseline is not None and math.isinf(measured.baseline):
            return result(Verdict.NoData, f"stable's value is {_fmt(measured.baseline)}: nothing to compare with")
        return result(Verdict.NoData, "no data for the stable version to compare with")
    value = measured.value
    assert value is not None
    if check.sequential is not None:
        return result(*_weigh(check, measured, intervals, alpha_split(check, sequential_checks)))
    for kind, bound, words in bounds:
        if _breaks(kind, value, bound):
            return result(Verdict.Fail, f"{_fmt(value)} breaks the limit {words}")
    if math.isinf(value):
        # Typically x / 0: not a measurement, so never a pass (it fails above when it breaks a bound).
        return result(Verdict.NoData, f"{_fmt(value)} is not a measurement (a division by zero?)")
    return result(Verdict.Pass, f"{_fmt(value)} within {limit}")


def _candidate_samples(measured: Measurement) -> int | None:
    """The candidate's samples: counted by a sample query, or (a latency histogram) the histogram's count."""
    if measured.samples is not None or not measured.buckets:
        return measured.samples
    total = bucket_total(measured.buckets)
    return int(total) if math.isfinite(total) else None


def _breaks(kind: str, value: float, bound: float) -> bool:
    """Whether `value` is beyond an inclusive bound. A value equal to the bound up to float rounding is on it:
    Prometheus' rate ratios carry noise in the last bits (0.95 comes back as 0.9499999999999998), and a
    relative bound is itself a product of floats."""
    if math.isclose(value, bound, rel_tol=1e-9):
        return False
    return value < bound if kind == "min" else value > bound


def _intervals(check: Check, measured: Measurement,
               previous: CheckStatus | None) -> tuple[Intervals | None, Intervals | None]:
    """A sequential proportion check's intervals (candidate's, stable's) with this look's counts folded in; the
    previous ones as they were when the look brought no counts (no data, an error), so that a failed look loses
    none of the spread seen so far."""
    if check.sequential is None or check.compares_latencies:
        return None, None
    kept = (previous.candidate_intervals, previous.stable_intervals) if previous is not None else (None, None)
    value, baseline, n_c, n_s = measured.value, measured.baseline, measured.samples, measured.baseline_samples
    if (measured.error is not None or value is None or baseline is None or n_c is None or n_s is None
            or not (0 <= value <= 1 and 0 <= baseline <= 1)):  # NaN is not between 0 and 1 either
        return kept
    return fold(kept[0], value * n_c, n_c), fold(kept[1], baseline * n_s, n_s)


def sequential_checks(checks: Iterable[Check]) -> int:
    """The sequential checks that decide an analysis of these: dry runs decide nothing."""
    return sum(c.sequential is not None and not c.dry_run for c in checks)


def alpha_split(check: Check, sequential: int) -> int:
    """In how many shares a sequential check's 1 - confidence is split (Bonferroni) when `sequential` checks decide
    its analysis: a false failure of any of them then has at most the largest of their 1 - confidence. A dry run
    is judged as it would be if it decided too, so that adding one changes no other check's verdict."""
    return max(1, sequential + check.dry_run)


def _weigh(check: Check, measured: Measurement, intervals: tuple[Intervals | None, Intervals | None],
           split: int) -> tuple[Verdict, str]:
    """A sequential check's verdict: the evidence so far on the candidate against stable (see sequential), a
    proportion's variance widened by its `intervals`' spread, each of its one-sided bounds at 1 - confidence split
    in `split` shares."""
    assert check.sequential is not None and measured.value is not None and measured.baseline is not None
    alpha = (1 - check.sequential.confidence) / split
    confidence = 1 - alpha
    higher_is_better = check.max_drop_percent is not None
    percent = check.max_drop_percent if higher_is_better else check.max_increase_percent
    assert percent is not None
    edge = f"{_fmt(percent)}% {'below' if higher_is_better else 'above'} stable"
    values = f"{_fmt(measured.value)} vs stable {_fmt(measured.baseline)}"
    if check.compares_latencies:
        counts = (bucket_total(measured.buckets), bucket_total(measured.baseline_buckets))
    else:
        counts = (measured.samples or 0, measured.baseline_samples or 0)
    sizes = f"{_fmt(counts[0])} and {_fmt(counts[1])} samples"
    if not all(math.isfinite(n) for n in counts):
        return Verdict.Error, f"{values}: {sizes}, a count that is no number"
    if min(counts) < MIN_SAMPLES:
        return Verdict.Undecided, f"not enough evidence yet: {values}, {sizes} ({MIN_SAMPLES} each needed)"
    if check.compares_latencies:
        quantile = LATENCY_QUANTILES[check.template]
        if counts[1] < samples_to_locate(quantile):
            return Verdict.Undecided, (f"not enough evidence yet: {values}, {sizes} ({samples_to_locate(quantile)} of "
                                    f"stable's needed to locate its {percentile_name(quantile)})")
        try:
            tail = tail_above(measured.buckets, measured.baseline_buckets, quantile)
        except Unresolvable as error:
            return Verdict.Error, f"{values}: {error}"
        evidence = compare_proportions(tail.candidate, tail.stable, tolerance=percent / 100, higher_is_better=False,
                                       confidence=confidence)
        edge = f"{_fmt(percent)}% above stable's share"
        found = (f"{_share(tail.candidate.rate)} of the candidate's requests vs {_share(tail.stable.rate)} of stable's "
                 f"slower than {tail.bound:g}s, the bucket bound nearest stable's {percentile_name(quantile)}")
        if tail.too_far is not None and evidence.finding is not Finding.worse:
            # Slower at the nearest bound is slower (the safe side); anything else says nothing of the quantile.
            return Verdict.Error, f"{values}: {tail.too_far}"
    else:
        if not (0 <= measured.value <= 1 and 0 <= measured.baseline <= 1):
            return Verdict.Error, f"{values}: a sequential check's value must be a proportion between 0 and 1"
        evidence = compare_proportions(Proportion(measured.value * counts[0], counts[0], intervals[0]),
                                       Proportion(measured.baseline * counts[1], counts[1], intervals[1]),
                                       tolerance=percent / 100, higher_is_better=higher_is_better,
                                       confidence=confidence)
        found = values
    shared = f" ({_fmt(check.sequential.confidence * 100)}% split over {split} sequential checks)" if split > 1 else ""
    sure = f"with {_fmt(confidence * 100)}% confidence{shared}, {sizes}"
    return {
        Finding.worse: (Verdict.Fail, f"{found}: more than {edge}, {sure}"),
        Finding.within: (Verdict.Pass, f"{found}: within {edge}, {sure}"),
        Finding.undecided: (Verdict.Undecided, f"not enough evidence yet: {found}, {sizes}"),
    }[evidence.finding]


def _test_drift(check: Check, measured: Measurement) -> tuple[Verdict, str, float | None, int | None]:
    """A drift test's verdict, its value (the smallest p-value of the features tested) and samples (live inputs)."""
    if not measured.bins:
        return Verdict.NoData, "no live inputs counted for the candidate", None, None
    if not measured.reference_bins:
        return (Verdict.Error, "no reference counts published for the candidate (model_reference_bin_count)",
                None, None)
    settings = check.drift_test or DriftTest()
    try:
        evidence = judge_drift(measured.bins, measured.reference_bins, confidence=settings.confidence,
                               looks=settings.looks)
    except Unresolvable as error:
        return Verdict.Error, f"the live inputs and the reference cannot be compared: {error}", None, None
    inputs = min(int(evidence.inputs), MAX_SAMPLES)
    tested = [f for f in evidence.features if f.p_value is not None]
    smallest = min((f.p_value for f in tested), default=None)
    if inputs < check.min_samples:
        return Verdict.NoData, f"{inputs} inputs, {check.min_samples} needed for a verdict", smallest, inputs
    threshold = f"p < {evidence.alpha:.3g} fails"
    if evidence.finding is DriftFinding.drifted:
        drifted = [f for f in tested if f.p_value < evidence.alpha]
        words = ", ".join(f"{f.feature!r} (p = {f.p_value:.3g}, statistic {f.statistic:.4g} over {f.bins} bins)"
                          for f in drifted)
        return (Verdict.Fail, f"the live inputs differ from the reference in {words}; {threshold}, {inputs} inputs",
                smallest, inputs)
    if evidence.finding is DriftFinding.undecided:
        short = ", ".join(f"{f.feature!r} ({_fmt(f.smallest_expected)})" for f in evidence.features
                          if f.p_value is None)
        return (Verdict.NoData, f"too few inputs to test: the fewest any cell expects, by feature: {short}; "
                                f"{_fmt(MIN_EXPECTED)} needed", smallest, inputs)
    return (Verdict.Pass, f"no feature's live inputs differ from the reference (smallest p = {smallest:.3g}; "
                          f"{threshold}), {inputs} inputs", smallest, inputs)


def _share(rate: float) -> str:
    return f"{rate * 100:.3g}%"


def spend_budget(check: Check, judged: CheckStatus, served_seconds: float, *, evidence_seconds: float | None = None,
                 split: int = 1) -> CheckStatus:
    """An Undecided sequential check held against its budget (see SequentialTest): `served_seconds` since the
    candidate began serving, the candidate's samples in `judged`. Within it the check stays Undecided and says what
    is left, and (see budget_warning) when the budget left is not expected to reach a verdict; `evidence_seconds`
    (the part of `served_seconds` its evidence covers, all of it when None) and `split` (see alpha_split) are for
    that. Once the budget is spent, the check takes onBudget's verdict. Any other verdict is returned as it is."""
    test = check.sequential
    if judged.verdict is not Verdict.Undecided or test is None:
        return judged
    most = duration_seconds(test.max_duration)
    samples = judged.samples or 0
    if served_seconds < most and (test.max_samples is None or samples < test.max_samples):
        left = [f"{_seconds_words(most - served_seconds)} of maxDuration {test.max_duration}"]
        if test.max_samples is not None:
            left.append(f"{_fmt(test.max_samples - samples)} of maxSamples {_fmt(test.max_samples)} samples")
        words = " and ".join(left)
        warning = budget_warning(check, judged, served_seconds,
                                 served_seconds if evidence_seconds is None else evidence_seconds, split)
        message = f"{judged.message}; budget left: {words}" + (f"; {warning}" if warning else "")
        return judged.model_copy(update={"message": message, "budget_left": words, "budget_warning": warning})
    spent = (f"maxDuration {test.max_duration}" if served_seconds >= most
             else f"maxSamples {_fmt(test.max_samples or 0)}")
    if test.on_budget is BudgetPolicy.Pass:
        verdict, words = Verdict.Pass, "passes (onBudget Pass): the evidence never said worse"
    else:
        verdict, words = Verdict.Fail, "fails (onBudget Fail): not proven within the tolerated degradation"
    return judged.model_copy(update={"verdict": verdict,
                                     "message": f"undecided when its budget ({spent}) was spent, {words}; "
                                                f"{judged.message}"})


def budget_warning(check: Check, judged: CheckStatus, served_seconds: float, evidence_seconds: float,
                   split: int) -> str | None:
    """Why an Undecided sequential proportion check's budget left is not expected to reach a verdict, in words;
    None when it is, or when there is too little evidence to tell. A candidate as good as stable needs about
    samples_to_within samples (stable's rate and spread as seen, the versions' samples in the proportion seen so
    far, 1 - confidence split in `split` shares); it is expected to have its samples so far plus as many more as
    their rate over the `evidence_seconds` brings in the rest of maxDuration (a step holds while a check is
    undecided, so the candidate's share holds too), at most maxSamples. Latency checks are not estimated."""
    test, candidate, stable = check.sequential, judged.candidate_intervals, judged.stable_intervals
    if test is None or candidate is None or stable is None or evidence_seconds <= 0:
        return None
    if min(candidate.total, stable.total) < MIN_SAMPLES:
        return None
    higher_is_better = check.max_drop_percent is not None
    percent = check.max_drop_percent if higher_is_better else check.max_increase_percent
    assert percent is not None
    needed = samples_to_within(Proportion(stable.hits, stable.total, stable), tolerance=percent / 100,
                               higher_is_better=higher_is_better, alpha=(1 - test.confidence) / split,
                               stable_per_candidate=stable.total / candidate.total)
    left = max(duration_seconds(test.max_duration) - served_seconds, 0.0)
    by_duration = candidate.total * (1 + left / evidence_seconds)
    cap = test.max_samples if test.max_samples is not None and test.max_samples <= by_duration else None
    if needed <= (by_duration if cap is None else cap):
        return None
    reach = (f"within maxDuration {test.max_duration} at this traffic" if cap is None
             else f"within maxSamples {_fmt(cap)}")
    if math.isinf(needed):
        why = "a candidate as good as stable is never proven within the tolerance"
    else:
        why = f"a candidate as good as stable needs about {_about(needed)} samples to be proven within the tolerance"
    expected = f", about {_about(by_duration)} expected" if cap is None else ""
    return f"cannot reach a verdict {reach}: {why}{expected}; onBudget {test.on_budget.value} will decide"


def _about(n: float) -> str:
    """A sample count to two significant figures, with thousands separators: an estimate's precision."""
    return f"{float(f'{n:.2g}'):,.0f}"


def _seconds_words(seconds: float) -> str:
    """A duration as the API writes them: 1h2m3s, whole seconds rounded up (what is left is never understated)."""
    rest = math.ceil(max(seconds, 0))
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    return "".join(f"{n}{unit}" for n, unit in ((hours, "h"), (minutes, "m"), (secs, "s")) if n) or "0s"


def awaiting_labels(check: Check, first_verdict: str, at: str) -> CheckStatus:
    """A check with a grading delay before its first verdict: not measured, shown as waiting (see Check.grading_delay)."""
    return CheckStatus(name=check.name, verdict=Verdict.NoData, limit=_limit_words(check), time=at,
                       dry_run=check.dry_run,
                       message=f"waiting for graded labels (gradingDelay {check.grading_delay}): judges from {first_verdict}")


def _limit_words(check: Check) -> str:
    return "; ".join(words for _, _, words in _bounds(check, None)) or _relative_words(check)


def _relative_words(check: Check) -> str:
    parts = []
    if check.max_drop_percent is not None:
        parts.append(f"at most {_fmt(check.max_drop_percent)}% below stable")
    if check.max_increase_percent is not None:
        parts.append(f"at most {_fmt(check.max_increase_percent)}% above stable")
    if check.sequential is not None:
        parts.append(f"sequential test, {_fmt(check.sequential.confidence * 100)}% confidence")
    if check.template is CheckTemplate.driftTest:
        settings = check.drift_test or DriftTest()
        parts.append(f"chi-square test against the reference, {_fmt(settings.confidence * 100)}% confidence over "
                     f"{settings.looks} analyses")
    return "; ".join(parts)


def outcome(checks: Iterable[Check], results: Iterable[CheckStatus]) -> Outcome:
    """One analysis' outcome: any failure fails it; missing data holds or fails per check policy; otherwise an
    Undecided check leaves it Undecided (no missing data: the noData policy does not apply to it).

    A provider error is never a pass, whatever the check's noData policy says.
    """
    policy = {c.name: c.no_data for c in checks}
    verdicts = []
    for r in results:
        if r.verdict is Verdict.NoData:
            verdicts.append({NoDataPolicy.Pass: Verdict.Pass, NoDataPolicy.Fail: Verdict.Fail}.get(
                policy.get(r.name, NoDataPolicy.Hold), Verdict.NoData))
        else:
            verdicts.append(r.verdict)
    if Verdict.Fail in verdicts:
        return Outcome.Failed
    if Verdict.NoData in verdicts or Verdict.Error in verdicts:
        return Outcome.Inconclusive
    if Verdict.Undecided in verdicts:
        return Outcome.Undecided
    return Outcome.Passed
