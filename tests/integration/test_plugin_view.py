"""`kubectl modelops get --watch` in a real terminal (tmux) during a real KServe rollout, and the plain
and JSON outputs of `get`, `list -A` and `history` when stdout is not a terminal."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from modelops import view

from .scenario import Scenario, fast_spec

pytestmark = pytest.mark.integration

GOOD = {"error_rate": 0.0, "accuracy": 0.95}
# Slow enough for a person (and a screen poll) to see each step with its checks: the first analysis
# comes once a whole window (5 s) of candidate traffic exists, then one every second until the pause ends.
SLOW = {"strategy": {"steps": [{"weight": 20, "pause": "10s"}, {"weight": 50, "pause": "10s"}]}}
PLUGIN = Path(sys.executable).with_name("kubectl-modelops")
VERDICT = r"(Pass|Fail|NoData|Error)"


@pytest.fixture
def scenario(control_plane, namespace, kserve, operator):
    s = Scenario(control_plane, namespace, kserve)
    yield s
    s.stop_load()


@pytest.fixture
def plugin_env(scenario):
    """What a user's shell has: the control plane's kubectl first on PATH, its admin kubeconfig."""
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "COLUMNS", "LINES", "TMUX")}
    return {**env, "KUBECONFIG": str(scenario.cp.kubeconfig), "PATH": f"{scenario.cp.bin}{os.pathsep}{env['PATH']}",
            "TERM": "xterm-256color"}


class Terminal:
    """A tmux session on a server of its own (its socket in `folder`): a real terminal, 160 columns by 50 rows."""

    def __init__(self, command: list[str], env: dict[str, str], folder: Path):
        if shutil.which("tmux") is None:
            pytest.fail("tmux is not installed (`make system-deps` installs it)", pytrace=False)
        self.socket, self.session = str(folder / "tmux.sock"), "view"
        # The shell keeps the pane open after the plugin exits, so that its exit status can be read.
        shell = f"{shlex.join(command)}; echo \"plugin exited with status $?\"; sleep 600"
        self.tmux("new-session", "-d", "-s", self.session, "-x", "160", "-y", "50", shell, env=env)

    def tmux(self, *args: str, env: dict[str, str] | None = None) -> str:
        return subprocess.run(["tmux", "-S", self.socket, *args], env=env, check=True, capture_output=True,
                              text=True, timeout=10).stdout

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-t", self.session)

    def wait_for(self, predicate, timeout: float, what: str) -> str:
        deadline = time.monotonic() + timeout
        screen = ""
        while time.monotonic() < deadline:
            screen = self.screen()
            if predicate(screen):
                return screen
            time.sleep(0.2)
        raise AssertionError(f"{what}: not on the screen within {timeout}s; the screen:\n{screen}")

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-session", "-t", self.session], capture_output=True, timeout=10)
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True, timeout=10)
        Path(self.socket).unlink(missing_ok=True)


def weight_row(role: str, version: str, weight: int) -> re.Pattern:
    """A version's line of the weight bars, e.g. `candidate  1.1.0  ████░░░░░░░░░░░░░░░░  20%`."""
    return re.compile(rf"^{role}\s+{re.escape(version)}\s+{view.bar(weight)}\s+{weight}%\s*$", re.M)


def check_rows(screen: str) -> dict[str, str]:
    return dict((name, verdict) for name, verdict in
                re.findall(rf"^(errors|accuracy)\s+\S+\s+.*\s{VERDICT}\s*$", screen, re.M))


def plugin(env: dict[str, str], *args: str) -> str:
    done = subprocess.run([str(PLUGIN), *args], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def status_of(env: dict[str, str], ns: str, timeout: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(PLUGIN), "status", "fraud", "-n", ns, "--timeout", timeout], env=env,
                          capture_output=True, text=True, timeout=150)


def test_status_exits_1_when_the_candidate_is_rolled_back(scenario, prometheus, plugin_env):
    scenario.version("1.0.0", **GOOD)
    scenario.version("1.1.0", error_rate=0.4, accuracy=0.95)
    scenario.serve("1.0.0", fast_spec(prometheus.url), prometheus)
    assert status_of(plugin_env, scenario.ns, "30s").returncode == 0  # the first version, serving
    scenario.patch({"version": "1.1.0"})
    done = status_of(plugin_env, scenario.ns, "120s")
    said = done.stdout.splitlines()
    assert done.returncode == 1 and said[-1].startswith("RolledBack (1.1.0 failed): "), (said, done.stderr)
    assert scenario.status()["phase"] == "RolledBack"
    print("\n$ kubectl modelops status fraud --timeout 120s    (exit 1 at the rollback)\n" + "\n".join(said))


def test_watch_in_a_terminal_follows_a_rollout_to_stable(scenario, prometheus, plugin_env, tmp_path):
    scenario.version("1.0.0", **GOOD)
    scenario.version("1.1.0", **GOOD)
    scenario.serve("1.0.0", fast_spec(prometheus.url, **SLOW), prometheus)
    ns = scenario.ns
    # The same watch without a terminal: plain text, a new block whenever what it shows changes.
    piped_out = (tmp_path / "watch.out").open("w")  # a file, not a pipe: nobody reads it until the end
    # SIGINT as a terminal's Ctrl-C sends it, whatever the test runner inherited (a shell's background job
    # ignores SIGINT, and so would the plugin, since Python keeps an ignored SIGINT ignored).
    piped = subprocess.Popen([str(PLUGIN), "get", "fraud", "-n", ns, "--watch"], env=plugin_env,
                             stdout=piped_out, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    terminal = Terminal([str(PLUGIN), "get", "fraud", "-n", ns, "--watch"], plugin_env, tmp_path)
    try:
        started = time.monotonic()
        terminal.wait_for(lambda s: weight_row("stable", "1.0.0", 100).search(s) and "fraud  Stable" in s, 20,
                          "1.0.0 stable with all traffic")
        # the piped watch too has shown the stable state before the rollout starts (it starts on its own clock)
        deadline = time.monotonic() + 20
        while "fraud  Stable" not in (tmp_path / "watch.out").read_text():
            assert time.monotonic() < deadline, "the piped watch printed no first block"
            time.sleep(0.1)
        scenario.patch({"version": "1.1.0"})
        # For a CI pipeline: one status call that times out mid-rollout, one that waits for the promotion (both
        # running beside the terminal, which must see step 1 while it lasts).
        timing_out, waiting = (subprocess.Popen([str(PLUGIN), "status", "fraud", "-n", ns, "--timeout", timeout],
                                                env=plugin_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                               for timeout in ("2s", "120s"))
        mid = terminal.wait_for(lambda s: weight_row("candidate", "1.1.0", 20).search(s)
                                and weight_row("stable", "1.0.0", 80).search(s)
                                and set(check_rows(s)) == {"errors", "accuracy"}
                                and "next analysis in" in s, 30, "step 1 at 20% with both checks")
        seen_mid = time.monotonic()
        assert "Progressing" in mid and re.search(r"in step 1/2 \(20%, pause 10s\) for \d+s", mid), mid
        assert "stable 1.0.0, candidate 1.1.0" in mid
        print(f"\n$ kubectl modelops get fraud -n {ns} --watch    (tmux, 160x50, mid-rollout)\n"
              + "\n".join(line.rstrip() for line in mid.rstrip().splitlines()))
        passed = terminal.wait_for(lambda s: check_rows(s) == {"errors": "Pass", "accuracy": "Pass"}, 20,
                                   "both checks passing")
        assert re.search(r"^\S+Z\s+\S+\s+StepAdvanced\s+1\.1\.0\s+modelops\s+step 1/2 at 20%", passed, re.M), passed
        terminal.wait_for(lambda s: weight_row("candidate", "1.1.0", 50).search(s) and "in step 2/2" in s, 30,
                          "step 2 at 50%")
        done = terminal.wait_for(lambda s: "fraud  Stable" in s and weight_row("stable", "1.1.0", 100).search(s), 40,
                                 "1.1.0 promoted")
        promoted = time.monotonic()
        assert "stable 1.1.0, candidate -, fallback 1.0.0" in done
        assert timing_out.wait(timeout=10) == 2, timing_out.communicate()
        said = waiting.communicate(timeout=30)[0].splitlines()
        assert waiting.returncode == 0 and said[-1] == "Stable: 1.1.0 serves all traffic", said
        assert any(line.startswith("Progressing: ") for line in said), said
        print(f"$ kubectl modelops status fraud -n {ns} --timeout 120s    (exit 0 at the promotion)\n" + "\n".join(said))
        assert re.search(r"Promoted\s+1\.1\.0\s+modelops", done), done
        terminal.tmux("send-keys", "-t", terminal.session, "C-c")
        terminal.wait_for(lambda s: "plugin exited with status 0" in s, 10, "Ctrl-C ends the watch with status 0")
        print(f"screen polls: step 1 on screen {seen_mid - started:.1f}s after the watch began, "
              f"promotion on screen {promoted - seen_mid:.1f}s later")
        # The piped watch polls on its own clock: give it the time to print the promotion too.
        deadline = time.monotonic() + 10
        while "stable 1.1.0, candidate -" not in (tmp_path / "watch.out").read_text() and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        terminal.close()
        piped.send_signal(signal.SIGINT)
        err = piped.communicate(timeout=15)[1]
        piped_out.close()
    assert piped.returncode == 0, err
    out = (tmp_path / "watch.out").read_text()
    blocks = [b for b in out.split("--- ") if b.strip()]
    assert "\x1b" not in out  # not a terminal: no colour codes
    phases = [b.splitlines()[1].split()[-1] for b in blocks]
    assert phases[0] == "Stable" and "Progressing" in phases and phases[-1] == "Stable", phases
    assert any(weight_row("  candidate", "1.1.0", 20).search(b) for b in blocks)
    print(f"non-terminal watch: {len(blocks)} blocks, one per change")

    # Once promoted, without a terminal: plain text and JSON.
    got = plugin(plugin_env, "get", "fraud", "-n", ns)
    assert got.splitlines()[0] == f"{ns}/fraud  Stable"
    assert weight_row("  stable", "1.1.0", 100).search(got), got
    shown = json.loads(plugin(plugin_env, "-n", ns, "get", "fraud", "-o", "json"))
    assert (shown["kind"], shown["schemaVersion"], shown["phase"]) == ("ModelDeploymentView", 1, "Stable")
    assert shown["traffic"] == [{"version": "1.1.0", "role": "stable", "weight": 100, "mirror": 0, "cohort": []}]
    assert shown["versions"]["fallback"] == "1.0.0" and shown["step"] is None
    assert all(c["verdict"] == "Pass" for c in shown["checks"])  # the analysis that promoted it
    assert shown["history"][-1]["action"] == "Promoted" and shown["history"][-1]["actor"] == "modelops"

    listed = plugin(plugin_env, "list", "-A")
    header, *rows = listed.splitlines()
    assert header.split() == ["NAMESPACE", "NAME", "PHASE", "STABLE", "CANDIDATE", "STEP", "MESSAGE"]
    ours = [r.split() for r in rows if r.split()[0] == ns]
    assert len(ours) == 1 and ours[0][:6] == [ns, "fraud", "Stable", "1.1.0", "-", "-"], listed
    assert "Promoted 1.1.0" in " ".join(ours[0][6:])
    items = json.loads(plugin(plugin_env, "list", "-A", "-o", "json"))["items"]
    assert [(v["namespace"], v["phase"]) for v in items if v["namespace"] == ns] == [(ns, "Stable")]

    history = plugin(plugin_env, "history", "fraud", "-n", ns)
    print(f"\n$ kubectl modelops history fraud -n {ns} | cat\n{history}")
    entries = [line.split()[2:5] for line in history.splitlines()[1:]]  # after TIME and AGE
    assert history.splitlines()[0].split() == ["TIME", "AGE", "ACTION", "VERSION", "ACTOR", "REASON"]
    assert [e[:2] for e in entries] == [["Deployed", "1.0.0"], ["RolloutStarted", "1.1.0"],
                                        ["StepAdvanced", "1.1.0"], ["StepAdvanced", "1.1.0"],
                                        ["Promoted", "1.1.0"]], history
    history_json = json.loads(plugin(plugin_env, "history", "fraud", "-n", ns, "-o", "json"))["history"]
    timeless = [{k: v for k, v in h.items() if k != "ageSeconds"} for h in history_json]
    assert timeless == [{k: v for k, v in h.items() if k != "ageSeconds"} for h in shown["history"]]
