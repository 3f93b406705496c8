# cartintel — every set-up step lives here; `make demo` and `make test` each work from a fresh clone.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
SETUPTOOLS := 80.9.0
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DO_NOT_TRACK := true
export DAGSTER_DISABLE_TELEMETRY := 1
export MLFLOW_DISABLE_TELEMETRY := true
# progress bars of artifact downloads would bury the demo's own progress lines
export MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR := false
# A persistent local instance (git-ignored), so runs of `make demo` show up in `make dev`.
export DAGSTER_HOME := $(CURDIR)/.dagster_home

.PHONY: venv system-packages demo test dev mlflow serve bench bench-scale check lock clean

venv: $(STAMP)

# The lock holds the whole transitive set; the project itself installs without resolving again.
$(STAMP): requirements.lock pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "==> installing pinned dependencies into $(VENV) (first time: ~3-4 minutes)"
	$(BIN)/pip install --disable-pip-version-check --progress-bar on --no-deps -r requirements.lock
	$(BIN)/pip check
	$(BIN)/pip install --disable-pip-version-check --no-deps --no-build-isolation -e .
	@touch $(STAMP)

# Debian's chromium (the dashboard's browser test) and wrk (the serving benchmark's load generator)
system-packages:
	@bash infra/scripts/install-system-packages.sh

demo: venv
	$(BIN)/cartintel demo

test: venv system-packages
	$(BIN)/pytest -n 2 --dist loadfile --durations=12

dev: venv
	$(BIN)/cartintel dev --workspace workspace.yaml --host 127.0.0.1 --port 3000

mlflow: venv
	@mkdir -p mlruns
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlruns/mlflow.db \
	  --default-artifact-root $(CURDIR)/mlruns/artifacts --host 127.0.0.1 --port 5000

serve: venv
	$(BIN)/cartintel serve --host 127.0.0.1 --port 8000

bench: venv system-packages
	$(BIN)/python -m cartintel_tests.benchmarks.run --out BENCHMARKS.md
	$(BIN)/python -m cartintel_tests.benchmarks.ope --out BENCHMARKS.md
	$(BIN)/python -m cartintel_tests.benchmarks.decisions --out BENCHMARKS.md
	$(BIN)/python -m cartintel_tests.benchmarks.loop --out BENCHMARKS.md
	$(BIN)/python -m cartintel_tests.benchmarks.backfill --out BENCHMARKS.md
	@# 4M and 40M REES46-shaped events (~15 GB of temporary files in build/, removed after)
	$(BIN)/python -m cartintel_tests.benchmarks.landing --out BENCHMARKS.md

# The graph end to end at 100k, 1M and 5M sessions on each engine (hours; SIZES=... to choose;
# WORKDIR=dir keeps each size's storefront and warehouse there, so a run cut short resumes)
SIZES ?= 100000,1000000,5000000
bench-scale: venv system-packages
	$(BIN)/python -m cartintel_tests.benchmarks.scale --sizes $(SIZES) --out BENCHMARKS.md \
		$(if $(WORKDIR),--workdir $(WORKDIR))

check: venv
	$(BIN)/ruff format --check cartintel_assets cartintel_tests
	$(BIN)/ruff check cartintel_assets cartintel_tests
	$(BIN)/mypy cartintel_assets

# Regenerate the lock from the pins in pyproject.toml in a throw-away environment.
lock:
	rm -rf build/lockenv && $(PYTHON) -m venv build/lockenv
	build/lockenv/bin/pip install --disable-pip-version-check ".[dev]" "setuptools==$(SETUPTOOLS)"
	build/lockenv/bin/pip freeze --exclude cartintel > requirements.lock
	@# the editable install builds with this setuptools (>= 70.1 ships bdist_wheel), not the venv's old one
	echo "setuptools==$(SETUPTOOLS)" >> requirements.lock
	rm -rf build/lockenv

clean:
	rm -rf $(VENV) build .pytest_cache
