"""The operator's guarantees, checked after every operation of a schedule.

Each check has a name (G1, G2, G4, G5, S, D, W, ...); a violation raises `Violation` whose message ends
with the schedule's trace, so a failing Hypothesis example reads as a story.

Exposure. A version is EXPOSED when the backend objects, as stored now, send it requests in any of
three ways (World.exposure, read from the objects alone, never from the operator's status):
- weight: a share of the model's live traffic (KServe's revision split; on Gateway API the weights
  of its Service's refs in the route's path-only rules; Seldon v1 a non-shadow predictor's traffic;
  Seldon v2 the Experiment's candidate weights, or the stable Model without an Experiment);
- copies: a share of stable's requests copied to it, its answers discarded: on Gateway API a
  RequestMirror filter to its Service on any rule of the route (percent; all requests without
  percent or fraction); on Seldon v1 its predictor with `shadow: true` (100 %); on Seldon v2 the
  Experiment's spec.mirror naming its Model (spec.mirror.percent);
- cohort: a header cohort sent to it: on Gateway API a rule named `modelops-cohort-*` with a ref to
  its Service (rules the user wrote with header matches, pins, are the user's and not counted).
"No traffic" below means none of the three: weight 0, no copies, no cohort. The world simulates all four
backends, KServe in both modes; serverless KServe has only weights, the Seldon ones no cohorts.

- G1 rollback sticks. Once a status with phase RolledBack and failedVersion X is in the store,
  the first round after it that runs without injected faults on the newest object (a round handed
  a stale watch event may lose its conditional status write and decide again) leaves X with 0 % of the live
  traffic (no weight, no copies, no cohort), and X never gets any of them again, nor appears as
  canary again, unless a new rollout of X was started for a reason (a round saw spec.version away
  from X since, or a Retry was issued), or a person's Rollback request made X stable again.
  KServe exception, stated precisely: when X's revision had been rolled out (a 100 % step), the
  rolled-out revision keeps serving X while stable's re-created revision is not ready; this may
  last only until a settle that makes the latest revision ready, followed by a fault-free round.
  A round while the backend object is annotated for another ModelDeployment is no such round:
  the object is not the operator's to write (BackendNotOwned) until it is handed back.
  Write-ahead: a version's live weight never rises unless the persisted status names it as stable
  or as the canary (and a canary's live weight never rises above the persisted canaryWeight). A
  version gains copies (its percent rises) only while the persisted status names it stable, or
  canary with canaryMirror set (and then to at most canaryMirror); it gains a cohort (one more
  cohort rule) only while the persisted status names it stable, or canary with canaryMatch set.
  Exposure may linger after the status moved on (status is written first, the backend second: a
  crash between the two leaves the old exposure), so it is only ever judged on a rise; after a
  round without injected faults or reported problems on the newest object the backend carries
  copies/cohorts exactly as the persisted status says (canaryMirror to the canary, or none;
  cohort rules to the canary only while canaryMatch is set) - G3 below.
- G2 the loop survives: run_round raises nothing but the injected Crash; no status holding
  NaN/Infinity is ever sent; no round ends in InternalError (an unexpected exception); after a
  round that reported no problem, status has Synced=True; after one that reported a problem and
  whose last status write went through, Synced=False with a reason.
- G4 Abort: an Abort (new id) seen by a fault-free round on the newest object while a candidate C (= spec.version) is in
  flight leaves phase RolledBack, failedVersion C, no canary, and C at 0 % (G1 from then on), the request's id
  handled (unless the round ran under a refused spec with none accepted since a restart: it acts on no request,
  its fail_safe rolls C back all the same; nor when its `serving` is refused too: nothing can be routed).
  Each distinct request id is acted on at most once: at most one history entry ever carries its
  reason.
- G5 a duplicate claim (same model and version, another artifact) never has its artifact URI in
  a backend object.
- E evidence (Gateway API and Seldon, whose objects' weights are the live split): a step passed by analysis (the
  StepAdvanced out of it, or the automatic Promoted after the last) was judged on its own traffic: the
  store has carried the step's weight for the candidate without a break since a moment no later than
  the step's decision plus ROUTING_GRACE_SECONDS, or than the start of the passing analysis's window.
- G3 exposure follows the status: after a round that ran without injected faults on the newest
  object and reported no problem, a version has copies only when the persisted status names it
  canary with canaryMirror (and then exactly that percent), and a cohort only when it names it
  canary with canaryMatch set.
- H honesty (Gateway API): after a round that ran without injected faults on the newest object, a status
  message saying "all traffic on stable" never stands beside a rule the operator refuses to drive (one
  selecting by header, query or method that names several of the deployment's Services, or one mixing such
  matches with path-only ones that names any of them) with a ref of non-zero weight to another version.
- S refused spec: a status never says it observed (observedGeneration) a generation of the spec the operator
  refuses (World.refuse_spec: the round runs under the last spec it accepted, and says so).
- D drill limit: after a round without injected faults on the newest object (problems reported or not), no drill started MAX_DRILL_SECONDS or longer ago is still in the status,
  whatever spec stands (a refused one included).
- M measurements amid events (World.event_storm): watch events that are no new generation of the spec (a backend
  object's, an EndpointSlice's, a ModelVersion's, the echo of the operator's own write) arriving while an
  analysis' queries are unanswered never make it give up: after such a round without injected faults on the
  newest object, whose spec names the candidate in flight and holds no new request, the analysis is recorded
  (lastAnalysisAt moves), and a failed one is counted (one more consecutive failure, unless the candidate left).
- F flooding tenant (World.flooding_tenant): other namespaces' requests flooding the operator's Prometheus gate
  (analysis/gate.py, the real FairGate) never move this deployment's verdicts: after a round whose new analysis
  ran amid the flood, no check says it got no answer (unless the metrics hang); and no other namespace gets two
  slots while a query of this deployment waits within its bounds, between two grants to its namespace.
- K KServe Standard mode: after a round as in G3, no request (weight, copy or cohort) goes to a predictor Service
  KServe does not have (a canary's, removed from spec.canary, is deleted at once), and spec.canary holds at most the
  one entry, its trafficPercent an integer in 0..100 (W).
- W weights: KServe canaryTrafficPercent is absent or an integer in 0..100; Seldon v1's non-shadow predictors
  and Seldon v2's Experiment candidates have integer weights in 0..100 summing to 100 (a shadow predictor
  none); the HTTPRoute's refs
  to the deployment's Services in its rules without header, query or method matches (a pin's
  are the user's) have integer weights in 0..100 summing to 100 (cohort rules do not take part),
  and its other rule stays as the user wrote it. Cohort rules (`modelops-cohort-*`): at most one
  per model rule, each with exactly one ref, to one of the deployment's Services; a model rule
  carries at most one RequestMirror filter to those Services; and after a round as in G3 cohort
  rules exist only while a match step is persisted (canaryMatch set).
- GitOps (checked by World.git_apply): a re-apply of the backend object's Git manifest by the
  GitOps tool's own field manager, unforced, never changes what decides traffic nor any exposure
  (weights, copies, cohorts); sent without the operator's fields (Argo CD's managedFieldsManagers) it
  is accepted, sent with Git's values it is refused only by a 409 naming the `modelops` manager.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from typing import Any

from modelops.api.modeldeployment import ModelDeploymentSpec, ModelDeploymentStatus, Outcome, Phase
from modelops.api.types import duration_seconds
from modelops.reconcile import serving_of
from modelops.rollout.plan import analysis_window
from modelops.rollout.values import ACTIVE, MAX_DRILL_SECONDS, ROUTING_GRACE_SECONDS, parse_rfc3339

from .fakes import dig


TOLERATED: set[str] = {"kserve-rolled-out-candidate"}
"""What the schedule search steps over. Backend facts, not bugs:

- kserve-rolled-out-candidate: after a 100 % step (HotSwap, or a last step of 100) KServe has rolled the
  candidate's revision out; a rollback restores stable's artifact as a new revision, and until that one is
  ready KServe keeps routing to the rolled-out one. Tolerated: traffic that reaches a version only through
  the rolled-out revision, until a settle plus one fault-free round.

Fixed since, tolerance kept available (add the name back to step over a regression):
- abort-unjudged-pinned: reconcile.refuse_unjudged (a refused spec, none accepted since a restart) acted on no
  request, and its fail_safe left a candidate pinned by trafficOverride in flight: an Abort waited for the spec's
  fix (test_an_abort_of_a_pinned_candidate_written_into_a_refused_spec_after_a_restart_is_carried_out).
  Tolerated: G4, for a round as `RoundInfo.unjudged` says, of a candidate pinned when it began.
- stale-echo-base: reconcile.py took a stale echo of an EARLIER own write as the base
  (test_stale_echo_of_an_earlier_own_write_is_taken_as_the_base).
- stale-status-base: reconcile.py decided from, and merge-patched against, a status older than its own
  last write (test_stale_event_between_own_status_write_and_its_echo, test_lost_ack_then_stale_event_
  acts_on_a_request_twice). Tolerated: the world's watch never delivers such an object.
- serving-roles-before-apply: reconcile.py's ModelVersion servedBy bookkeeping failed the round before
  router.apply, leaving Synced=True (test_failed_serving_roles_bookkeeping_skips_apply_and_reports_synced).
  Tolerated: the Synced=False check, when the round's last failed call was a ModelVersion call."""


class Violation(AssertionError):
    pass


@dataclass
class Ban:
    """A rolled-back candidate that must not get traffic again."""

    armed: bool = False
    """A fault-free round has run since the rollback was persisted."""
    justified: bool = False
    """A round saw spec.version away from it, or a Retry was issued, since the rollback."""
    settled_ready: bool = False
    exempt_expired: bool = False


class Checker:
    def __init__(self) -> None:
        self.bans: dict[str, Ban] = {}
        self.history: Counter[tuple] = Counter()
        """How often each entry is in the last status' history: two equal entries (an unmoved clock) are two events."""
        self.request_entries: dict[str, list[tuple]] = {}
        self.prev_live: dict[str, int] = {}
        self.live_since: dict[tuple[str, int], float] = {}
        """(version, live weight) -> the clock since which the store has carried it without a break."""
        self.prev_status: ModelDeploymentStatus | None = None
        self.prev_side: dict[str, dict[str, int]] = {"copies": {}, "cohort": {}}
        self.other_rule: Any = None
        self.checks = 0
        self.seen_status_rv: str | None = None
        self.seen_backend_rv: list[str] | None = None

    # --- plumbing -------------------------------------------------------------------------------

    def fail(self, world: Any, name: str, words: str) -> None:
        trace = "\n  ".join(world.trace[-60:])
        raise Violation(f"{name}: {words}\nschedule trace (last 60 steps):\n  {trace}")

    def check(self, world: Any, ok: bool, name: str, words: str) -> None:
        from .world import STATS

        self.checks += 1
        STATS["checks"] += 1
        if not ok:
            self.fail(world, name, words)

    def start(self, world: Any) -> None:
        route = world.backend()
        if route is not None and world.gateway:
            self.other_rule = other_rule(route)
        self.prev_live = world.live()
        self.prev_side = side_of(world)
        self.note_live(world, self.prev_live)
        self.prev_status = world.status()

    # --- after every operation ----------------------------------------------------------------------

    def after(self, world: Any, op: str, info: Any, **details: Any) -> None:
        status = world.status()
        live = world.live()
        side = side_of(world)
        self.check_store(world, status)
        self.check(world, status.observed_generation not in world.refused_generations, "S",
                   f"status says it observed generation {status.observed_generation}, a spec the operator refuses")
        self.check_evidence(world, status)  # on what the store carried up to this operation
        self.note_live(world, live)
        self.check_history(world, status)
        if op == "round":
            self.after_round(world, info, status, live)
        if op == "edit":
            self.after_edit(world, details["spec_patch"], status)
        if op == "settle" and details.get("ready"):
            for ban in self.bans.values():
                ban.settled_ready = ban.settled_ready or ban.armed
        self.check_bans(world, status, live, side)
        self.check_write_ahead(world, status, live)
        self.check_side_write_ahead(world, status, side)
        self.check_backend(world)
        self.prev_live = live
        self.prev_side = side
        self.prev_status = status

    def check_store(self, world: Any, status: ModelDeploymentStatus) -> None:
        self.check(world, not world.kube.nan_rejections, "G2",
                   f"a write holding NaN/Infinity was sent: {world.kube.nan_rejections[:1]}")
        obj = world.obj()
        if obj["metadata"]["resourceVersion"] != self.seen_status_rv:
            self.seen_status_rv = obj["metadata"]["resourceVersion"]
            try:
                json.dumps(obj.get("status") or {}, allow_nan=False)
                finite = True
            except ValueError:
                finite = False
            self.check(world, finite, "G2", "status in the store holds NaN/Infinity")
        if status.phase is Phase.RolledBack and status.failed_version and status.failed_version != status.stable_version:
            self.bans.setdefault(status.failed_version, Ban())

    def note_live(self, world: Any, live: dict[str, int]) -> None:
        now = world.clock().timestamp()
        self.live_since = {(v, w): self.live_since.get((v, w), now) for v, w in live.items()}

    def check_evidence(self, world: Any, status: ModelDeploymentStatus) -> None:
        before = self.prev_status
        if world.kserve or before is None or before.canary_version is None or before.step_started_at is None:
            return
        if before.canary_weight == 0 or before.canary_mirror or before.canary_match:
            return
        known = {(e.version, e.action, e.reason, e.time) for e in before.history}
        passed = [e for e in status.history if (e.version, e.action, e.reason, e.time) not in known and e.actor == "modelops" and e.version == before.canary_version and (
            (e.action == "StepAdvanced" and not e.reason.startswith("step 1/")) or
            (e.action == "Promoted" and e.reason.startswith("analysis passed")))]
        if not passed or status.last_analysis_at is None:
            return
        since = self.live_since.get((before.canary_version, before.canary_weight))
        spec = world.valid_spec
        window_start = parse_rfc3339(status.last_analysis_at).timestamp() - duration_seconds(analysis_window(spec))
        bound = max(parse_rfc3339(before.step_started_at).timestamp() + ROUTING_GRACE_SECONDS, window_start)
        self.check(world, since is not None and since <= bound, "E",
                   f"{passed[0].action} ({passed[0].reason}) on an analysis ending {status.last_analysis_at}, but the "
                   f"store carried {before.canary_weight} % to {before.canary_version} only since {since}")

    def check_history(self, world: Any, status: ModelDeploymentStatus) -> None:
        def key_of(entry: Any) -> tuple:
            return entry.version, entry.action, entry.reason, entry.actor, entry.time

        # The newest occurrences of an entry beyond those seen last time are new. History is bounded: an entry that
        # fell off lowers its count, so a later equal one counts as new.
        counts = Counter(map(key_of, status.history))
        unseen = counts - self.history
        self.history = counts
        new = []
        for entry in reversed(status.history):
            if unseen[key_of(entry)] > 0:
                unseen[key_of(entry)] -= 1
                new.append(entry)
        for entry in reversed(new):
            key = key_of(entry)
            if "#" in entry.reason:
                request = entry.reason.split("#")[1]
                seen = self.request_entries.setdefault(request, [])
                seen.append(key)
                self.check(world, len(seen) <= 1, "G4", f"request {request} acted on more than once: {sorted(seen)}")
            rolled_back_now = status.phase is Phase.RolledBack and status.failed_version == entry.version
            if entry.action == "RolledBack" and entry.actor != "modelops" and entry.version in self.bans \
                    and entry.reason.startswith("manual rollback from "):
                self.bans.pop(entry.version)  # a person's Rollback request made it stable again, by name or as fallback
            if entry.action == "RolloutStarted" and entry.version in self.bans and not rolled_back_now:
                ban = self.bans.pop(entry.version)
                retried = entry.reason.startswith("manual retry:") and "#" in entry.reason \
                    and entry.reason.split("#")[1] in world.retry_ids
                self.check(world, ban.justified or retried, "G1",
                           f"rolled-back {entry.version} started again without a version change or Retry: {key}")

    def check_bans(self, world: Any, status: ModelDeploymentStatus, live: dict[str, int],
                   side: dict[str, dict[str, int]]) -> None:
        for version, ban in self.bans.items():
            if status.canary_version == version:
                self.check(world, ban.justified, "G1",
                           f"rolled-back {version} is the canary again (phase {status.phase}) without a new rollout")
            if ban.armed:
                for kind, per in side.items():
                    if per.get(version):
                        self.check(world, False, "G1", f"rolled-back {version} still gets {kind} ({per[version]}) "
                                                       f"after a fault-free round: {side}")
                    else:
                        self.check(world, True, "G1", "")
            if not ban.armed or not live.get(version):
                continue
            self.check(world, self.kserve_exempt(world, version, ban), "G1",
                       f"rolled-back {version} has {live[version]}% of live traffic {live}")

    def kserve_exempt(self, world: Any, version: str, ban: Ban) -> bool:
        """X still served by the rolled-out revision while stable's re-created revision is not ready."""
        if not world.kserve:
            return False
        from .world import INFERENCE_SERVICE, NAME, NS

        isvc = world.backend()
        rolled = world.uri_labels.get(world.controller.rolled_out_uri(world.kube, INFERENCE_SERVICE, NS, NAME) or "")
        if rolled == version and "kserve-rolled-out-candidate" in TOLERATED:
            return True
        if ban.exempt_expired:
            return False
        in_spec = world.uri_labels.get(dig(isvc, "spec", "predictor", "model", "storageUri") or "")
        return rolled == version and in_spec != version

    def check_write_ahead(self, world: Any, status: ModelDeploymentStatus, live: dict[str, int]) -> None:
        named = {status.stable_version: 100, status.canary_version: status.canary_weight}
        drill = status.drill
        if drill is not None and drill.routed_at is not None and drill.returning_at is None:
            named[drill.fallback_version] = 100  # a rollback drill: all traffic to the fallback, persisted first
        rolled = None
        if world.kserve and "kserve-rolled-out-candidate" in TOLERATED:
            from .world import INFERENCE_SERVICE, NAME, NS

            rolled = world.uri_labels.get(world.controller.rolled_out_uri(world.kube, INFERENCE_SERVICE, NS, NAME) or "")
        for version, percent in live.items():
            if percent <= self.prev_live.get(version, 0):
                continue
            if version == rolled and version != status.stable_version:
                continue  # known bug: KServe's rolled-out revision is not stable's (see TOLERATED)
            self.check(world, version in named, "G1",
                       f"{version} gained live traffic ({self.prev_live.get(version, 0)}% -> {percent}%) that the "
                       f"persisted status does not name (stable {status.stable_version}, canary {status.canary_version})")
            if version != status.stable_version and version == status.canary_version:
                self.check(world, percent <= status.canary_weight, "G1",
                           f"canary {version} has {percent}% live, above the persisted canaryWeight {status.canary_weight}")

    def check_side_write_ahead(self, world: Any, status: ModelDeploymentStatus,
                               side: dict[str, dict[str, int]]) -> None:
        for version, percent in side["copies"].items():
            if percent <= self.prev_side["copies"].get(version, 0) or version == status.stable_version:
                continue
            self.check(world, version == status.canary_version and 0 < percent <= status.canary_mirror, "G1",
                       f"{version} gained copies of {percent}% that the persisted status does not name (canary "
                       f"{status.canary_version} canaryMirror {status.canary_mirror})")
        for version, count in side["cohort"].items():
            if count <= self.prev_side["cohort"].get(version, 0) or version == status.stable_version:
                continue
            self.check(world, version == status.canary_version and bool(status.canary_match), "G1",
                       f"{version} gained a cohort that the persisted status does not name (canary "
                       f"{status.canary_version} canaryMatch {status.canary_match})")

    def check_follows_status(self, world: Any, status: ModelDeploymentStatus) -> None:
        """G3 (and W's cohort rule), after a fault-free round on the newest object that reported no problem."""
        side = side_of(world)
        canary = status.canary_version
        wanted_copies = {canary: status.canary_mirror} if canary and status.canary_mirror else {}
        self.check(world, side["copies"] == wanted_copies, "G3",
                   f"copies {side['copies']} after a fault-free round; the persisted status says {wanted_copies}")
        cohort_to = set(side["cohort"])
        wanted_cohort = {canary} if canary and status.canary_match else set()
        self.check(world, cohort_to <= wanted_cohort, "G3",
                   f"cohort rules to {sorted(cohort_to)} after a fault-free round; the persisted status says "
                   f"canary {canary} canaryMatch {status.canary_match}")
        if world.gateway and world.backend() is not None:
            rules = world.backend()["spec"]["rules"]
            cohorts = [r for r in rules if str(r.get("name") or "").startswith("modelops-cohort-")]
            self.check(world, not cohorts or bool(status.canary_match), "W",
                       f"cohort rules {[r['name'] for r in cohorts]} while no match step is persisted")
        if world.standard:
            gone = {label: kind for kind, per in world.exposure().items() for label in per if label.startswith("unknown:")}
            self.check(world, not gone, "K", f"requests to a predictor Service KServe does not have: {gone}")

    def check_backend(self, world: Any) -> None:
        objects = world.backend_objects()
        seen = [o["metadata"]["resourceVersion"] for o in objects]
        if not objects or seen == self.seen_backend_rv:
            return
        self.seen_backend_rv = seen
        text = json.dumps(objects)
        for uri in world.duplicate_uris:
            self.check(world, f'"{uri}"' not in text, "G5", f"duplicate claim's artifact {uri} is in the backend object")
        backend = world.backend()
        if world.standard:
            entries = dig(backend, "spec", "canary") or []
            self.check(world, len(entries) <= 1 and all(type(e.get("trafficPercent")) is int and 0 <= e["trafficPercent"]
                                                        <= 100 for e in entries), "W", f"spec.canary is {entries}")
            return
        if world.kserve:
            percent = dig(backend, "spec", "predictor", "canaryTrafficPercent")
            self.check(world, percent is None or (type(percent) is int and 0 <= percent <= 100), "W",
                       f"canaryTrafficPercent is {percent!r}")
            return
        if not world.gateway:
            self.check_seldon_weights(world, objects)
            return
        ours = [r for rule in world.controller.plain_rules(backend) for r in rule.get("backendRefs") or []
                if r.get("name") in world.services]
        weights = [r.get("weight", 1) for r in ours]
        self.check(world, all(type(w) is int and 0 <= w <= 100 for w in weights) and (not ours or sum(weights) == 100),
                   "W", f"HTTPRoute weights {weights}")
        self.check(world, other_rule(backend) == self.other_rule, "W", "the HTTPRoute's other rule changed")
        rules = backend["spec"]["rules"]
        cohorts = [r for r in rules if str(r.get("name") or "").startswith("modelops-cohort-")]
        model_rules = [r for r in world.controller.plain_rules(backend)
                       if any(ref.get("name") in world.services for ref in r.get("backendRefs") or [])]
        self.check(world, len(cohorts) <= len(model_rules), "W",
                   f"{len(cohorts)} cohort rules for {len(model_rules)} model rules")
        self.check(world, all(len(r.get("backendRefs") or []) == 1 and r["backendRefs"][0].get("name") in world.services
                              for r in cohorts), "W", f"a cohort rule routes elsewhere than to one version: {cohorts}")
        self.check(world, len({r["name"] for r in cohorts}) == len(cohorts), "W", "two cohort rules share a name")
        for rule in model_rules:
            mirrors = [f for f in rule.get("filters") or [] if f.get("type") == "RequestMirror"
                       and dig(f, "requestMirror", "backendRef", "name") in world.services]
            self.check(world, len(mirrors) <= 1, "W", f"a model rule mirrors to several versions: {mirrors}")

    def check_seldon_weights(self, world: Any, objects: list[dict[str, Any]]) -> None:
        """W on Seldon: v1's non-shadow predictors, and v2's Experiment candidates, have integer weights in 0..100
        summing to 100; a v1 shadow predictor has traffic 0."""
        for obj in objects:
            if obj["kind"] == "SeldonDeployment":
                predictors = dig(obj, "spec", "predictors") or []
                weights = [p.get("traffic", 0) for p in predictors if not p.get("shadow")]
                shadows = [p.get("traffic", 0) for p in predictors if p.get("shadow")]
                self.check(world, not any(shadows), "W", f"a shadow predictor takes traffic: {shadows}")
            elif obj["kind"] == "Experiment":
                weights = [c.get("weight") for c in dig(obj, "spec", "candidates") or []]
            else:
                continue
            self.check(world, all(type(w) is int and 0 <= w <= 100 for w in weights) and sum(weights) == 100, "W",
                       f"{obj['kind']} weights {weights}")

    # --- edits and rounds ---------------------------------------------------------------------------------

    def after_edit(self, world: Any, spec_patch: dict[str, Any], status: ModelDeploymentStatus) -> None:
        request = spec_patch.get("request")
        if request and request.get("action") == "Retry":
            for ban in self.bans.values():
                ban.justified = True

    def after_round(self, world: Any, info: Any, status: ModelDeploymentStatus, live: dict[str, int]) -> None:
        self.check(world, info.error is None, "G2", f"run_round raised {info.error!r}")
        for banned, ban in self.bans.items():
            if info.obj["spec"]["version"] != banned:
                ban.justified = True  # a round saw spec.version away from it: coming back is a new rollout
        internal = [e for e in info.events if e[1] == "InternalError"]
        self.check(world, not internal, "G2", f"a round ended in an unexpected exception: {internal[:1]}")
        if info.crashed:
            return
        if world.flood is not None:
            self.check_flooded(world, info, status)
        synced = next((c for c in status.conditions if c.type == "Synced"), None)
        if info.failures_in_a_row == 0:
            if info.fresh or "stale-echo-base" not in TOLERATED:
                self.check(world, synced is not None and synced.status == "True", "G2",
                           f"a round without problems left Synced={synced and synced.status}")
        else:
            writes = [outcome for call, outcome in info.calls
                      if call.verb == "patch_status" and call.plural == "modeldeployments"]
            failed = [call for call, outcome in info.calls if outcome != "ok"]
            roles_failed = bool(failed) and failed[-1].plural == "modelversions"
            if writes and writes[-1] == "ok" and not (roles_failed and "serving-roles-before-apply" in TOLERATED):
                self.check(world, synced is not None and synced.status == "False" and bool(synced.reason), "G2",
                           f"a round that reported a problem left Synced={synced and synced.status}")
        if info.faulted or not info.fresh:
            return  # on a stale object a round may lose its conditional status write (409) and decide again
        if info.failures_in_a_row == 0:
            self.check_follows_status(world, status)
        drill = status.drill
        self.check(world, drill is None or (world.clock() - parse_rfc3339(drill.started_at)).total_seconds()
                   < MAX_DRILL_SECONDS, "D", f"a drill started {drill and drill.started_at} still runs at {world.clock()}")
        if info.backend_fresh:  # what a watch has yet to deliver, the round cannot speak of: its event wakes the next
            self.check_honest(world, status)
        self.check_abort(world, info, status)
        if not world.backend_is_ours():
            return  # not the operator's to write (BackendNotOwned): G1 is judged from a round after it is handed back
        for ban in self.bans.values():
            if ban.armed and ban.settled_ready:
                ban.exempt_expired = True
            ban.armed = True

    def check_measured(self, world: Any, info: Any, asked: list[str]) -> None:
        """M, after a round of an event storm (World.event_storm) whose analysis asked its queries."""
        before, spec = info.before, info.obj["spec"]
        request = spec.get("request")
        if not asked or info.crashed or info.faulted or not info.fresh or spec.get("version") != before.canary_version \
                or (request and request["id"] not in before.handled_requests):
            return  # the round acts on a new version or request before any analysis
        status = world.status()
        self.check(world, status.last_analysis_at is not None and status.last_analysis_at != before.last_analysis_at,
                   "M", f"an analysis asked {len(asked)} queries amid watch events, and none was recorded "
                        f"(last analysis {before.last_analysis_at} -> {status.last_analysis_at})")
        if status.last_outcome is Outcome.Failed and status.canary_version == before.canary_version:
            self.check(world, status.consecutive_failures == before.consecutive_failures + 1, "M",
                       f"a failed analysis amid watch events counted {before.consecutive_failures} -> "
                       f"{status.consecutive_failures} failures")

    def check_gate(self, world: Any, gate: Any) -> None:
        """F's bound on the real gate (World.flooding_tenant)."""
        self.check(world, gate.worst <= 1, "F", f"another namespace was served {gate.worst} times while a query of "
                                                 f"this deployment waited within its bounds")

    def check_flooded(self, world: Any, info: Any, status: ModelDeploymentStatus) -> None:
        """F, after a round while other tenants flood the gate: a new analysis' verdicts are the ones the metrics
        give (only a provider that hangs, or fails to be made in time, gives no answer)."""
        from .world import STATS

        self.check_gate(world, world.flood.gate)
        if status.last_analysis_at == info.before.last_analysis_at:
            return
        STATS["analyses amid a flooding tenant"] += 1
        if {"hang", "factory_timeout"} & set(world.behaviour.values()):
            return
        unanswered = [c.name for c in status.checks if "gave no answer" in (c.message or "")]
        self.check(world, not unanswered, "F", f"checks {unanswered} gave no answer while other tenants flooded the "
                                               f"gate: {world.flood.gate.grants}")

    def check_honest(self, world: Any, status: ModelDeploymentStatus) -> None:
        """H, after a round as in G3 (problems reported or not)."""
        from .world import STATS

        refused = [] if not world.gateway else refused_rules(world.backend(), set(world.services))
        if refused:
            STATS["rounds beside a refused rule"] += 1
            STATS["rounds beside a refused rule, rolled back"] += status.phase is Phase.RolledBack
        if "all traffic on stable" not in (status.message or ""):
            return
        elsewhere = {world.services[ref["name"]] for rule in refused for ref in rule.get("backendRefs") or []
                     if ref.get("name") in world.services and ref.get("weight", 1)} - {status.stable_version}
        self.check(world, not elsewhere, "H", f"status says {status.message!r} while a rule the operator refuses "
                                              f"routes to {sorted(elsewhere)}")

    def check_abort(self, world: Any, info: Any, status: ModelDeploymentStatus) -> None:
        request = (info.obj["spec"] or {}).get("request")
        before = info.before
        if not request or request.get("action") != "Abort" or request["id"] in before.handled_requests:
            return
        candidate = before.canary_version
        if before.phase not in ACTIVE or candidate is None or info.obj["spec"]["version"] != candidate:
            return
        if "abort-unjudged-pinned" in TOLERATED and info.unjudged and before.pinned_weight is not None:
            return
        if info.unjudged and serving_of(info.obj) is None:
            return  # no backend to route on (docs/concepts/guarantees.md: "nothing can be routed, and the status only says why")
        handled = request["id"] in status.handled_requests or info.unjudged  # rolled back by fail_safe instead
        self.check(world, status.phase is Phase.RolledBack and status.failed_version == candidate
                   and status.canary_version is None and handled, "G4",
                   f"Abort {request['id']} of {candidate} left phase {status.phase} canary {status.canary_version}")
        self.bans.setdefault(candidate, Ban())


def side_of(world: Any) -> dict[str, dict[str, int]]:
    """The copies and cohorts of the world's exposure (weights are `world.live()`)."""
    return {k: v for k, v in world.exposure().items() if k != "weight"}


def refused_rules(route: dict[str, Any] | None, services: set[str]) -> list[dict[str, Any]]:
    """The route's rules the operator refuses to drive (see H), read from the object alone."""
    out = []
    for rule in dig(route, "spec", "rules") or []:
        named = {ref.get("name") for ref in rule.get("backendRefs") or []} & services
        conditional = [any(m.get(k) for k in ("headers", "queryParams", "method")) for m in rule.get("matches") or []]
        if str(rule.get("name") or "").startswith("modelops-cohort-") or not named or not any(conditional):
            continue
        if not all(conditional) or len(named) > 1:
            out.append(rule)
    return out


def other_rule(route: dict[str, Any]) -> Any:
    """The HTTPRoute's rule the operator must not touch (the user's, to other-svc)."""
    return next((r for r in dig(route, "spec", "rules") or []
                 if any(ref.get("name") == "other-svc" for ref in r.get("backendRefs") or [])), None)
