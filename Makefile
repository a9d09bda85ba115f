# modelops: `make demo` runs the product on this machine; `make test` runs every test tier.
# Both install what they need: Python packages in .venv, Debian's prometheus, and the
# control-plane binaries built from Go modules into a cache outside the repo.

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CORE := */modelops/rollout/*,*/modelops/analysis/evaluate.py

.PHONY: demo test unit setup system-deps controlplane crds clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,demo]'
	touch $@

setup: $(VENV)/.installed system-deps controlplane

system-deps:
	@command -v prometheus >/dev/null || { \
	  echo "installing Debian package prometheus"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

controlplane:
	@tools/controlplane/build.sh >/dev/null

crds: $(VENV)/.installed
	$(VENV)/bin/modelops crds --out crds

# The main job on a local default: a real rollout, an automatic rollback and a promotion.
demo: setup
	$(PY) -m demo.run --out demo-output

# The test command: every tier, with branch coverage of the pure core printed and enforced.
test: setup
	$(PY) -m pytest --cov=modelops --cov-branch --cov-report= tests
	$(PY) -m coverage report --include='$(CORE)' --fail-under=90

unit: $(VENV)/.installed
	$(PY) -m pytest tests/unit

clean:
	rm -rf $(VENV) .pytest_cache .coverage .hypothesis
