# modelops: `make demo` runs the product on this machine; `make test` runs every test tier.
# Both install what they need: Python packages in .venv, Debian's prometheus and containerd, and
# the control-plane and node binaries built from Go modules into a cache outside the repo.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CORE := */modelops/rollout/*,*/modelops/analysis/evaluate.py

.PHONY: demo test unit docs docs-crd bench bench-stats setup system-deps controlplane kserve helm argocd-lua crds clean image kind-up upstream-crds

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,demo]'
	touch $@

setup: upstream-crds $(VENV)/.installed system-deps controlplane kserve helm argocd-lua

# First, and with the system's Python alone: without the serving systems' CRDs nothing else is
# worth installing, and the message says what to do.
upstream-crds:
	@$(PYTHON) -m playground.upstream_crds >/dev/null

system-deps:
	@command -v prometheus >/dev/null || { \
	  echo "installing Debian package prometheus"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }
	@command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null || { \
	  echo "installing Debian packages podman runc debootstrap"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null; }
	@command -v tmux >/dev/null || { \
	  echo "installing Debian package tmux"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tmux >/dev/null; }
	@command -v containerd >/dev/null && [ -x /usr/lib/cni/bridge ] || { \
	  echo "installing Debian packages containerd containernetworking-plugins"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq containerd containernetworking-plugins >/dev/null; }

# With kube-controller-manager, kube-scheduler, kubelet and kube-proxy: the single-node cluster of tests/cluster.
controlplane:
	@tools/controlplane/build.sh node >/dev/null

# KServe's controller, from its Go source beside the checkout (../shared/kserve-v0.20.0) or in
# $$MODELOPS_KSERVE_SOURCE: tests/cluster runs it on the single-node cluster.
kserve:
	@tools/kserve/build.sh >/dev/null

helm:
	@tools/helm/build.sh >/dev/null

# Argo CD's way of running Lua customizations (deploy/argocd/), on gopher-lua: their tests run on it.
argocd-lua:
	@tools/argocd-lua/build.sh >/dev/null

# The operator's container image (Dockerfile), built with podman on a locally made base.
image: system-deps
	@tools/image/build.sh

# A real cluster on a machine with Docker and internet: kind, KServe (serverless), Prometheus, this chart.
kind-up:
	tools/kind/up.sh

# The CRDs from the API models, into crds/ and the chart (a test holds the three equal).
crds: $(VENV)/.installed
	$(VENV)/bin/modelops crds --out crds
	$(VENV)/bin/modelops crds --out charts/modelops/crds

# The main job on a local default: a real rollout, an automatic rollback and a promotion.
demo: setup
	$(PY) -m demo.run --out demo-output

# The test command: every tier, with branch coverage of the pure core printed and enforced. The tiers that mostly
# wait on rollouts (unit, integration, deploy, end-to-end) run on two workers, a file each at a time, every worker
# with a control plane of its own; the statistical simulations (thousands of rollouts each, six times slower under
# coverage tracing) run on two workers without it; the fault simulation
# (which prints its counts) and the chaos tier (whose bounds are timings) run after them, alone. First of all, in a
# second, the documentation site is built strictly: a broken link, a missing anchor or a page left out of its nav fails it.
test: setup
	@site=$$(mktemp -d) && NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir $$site; status=$$?; rm -rf $$site; exit $$status
	$(PY) -m pytest -n 2 --dist loadfile --durations=15 --cov=modelops --cov-branch --cov-report= tests \
	  --ignore=tests/sim --ignore=tests/chaos -m "not statistics"
	$(PY) -m pytest -n 2 --dist loadfile --durations=5 -m statistics tests/unit
	$(PY) -m pytest --durations=10 --cov=modelops --cov-branch --cov-report= --cov-append tests/sim tests/chaos
	$(PY) -m coverage report --include='$(CORE)' --fail-under=90

# The benchmark (not part of `make test`): N ModelDeployments (default 1,000) on the local control plane with
# Prometheus and the operator; figures.json and bench.png in bench-output/. COMPARE=old/figures.json: the change.
N ?= 1000
bench: upstream-crds $(VENV)/.installed system-deps controlplane
	$(PY) -m bench.run --deployments $(N) --out bench-output $(if $(COMPARE),--compare $(COMPARE))

# How soon the sequential checks roll a worse candidate back, against Wald's SPRT (simulated; prints a table).
bench-stats: $(VENV)/.installed
	$(PY) -m bench.stats

# The CRD field reference, from the API models (a unit test holds the committed page equal to it).
docs-crd: $(VENV)/.installed
	$(VENV)/bin/modelops docs-crd --out docs/reference/crds.md

# The documentation site, into site/ (`make test` builds it strictly into a temporary directory instead).
docs: docs-crd
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

unit: $(VENV)/.installed
	$(PY) -m pytest tests/unit

clean:
	rm -rf $(VENV) .pytest_cache .coverage .hypothesis
