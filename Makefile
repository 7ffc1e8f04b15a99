PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
H11_STAMP := $(VENV)/.h11-compiled
CONFIG  ?= snakeway.hcl.example
# Debian packages the test suite drives as real peers (chromium: the status page, in a headless browser).
TEST_DEBS := curl openssl pebble redis-server chromium systemd

.PHONY: serve test check install deps clean bench bench-accept fuzz soak simulate

$(VPY):
	$(PY) -m venv $(VENV)

# The distribution is snakeway-proxy ("snakeway" on PyPI is another project); a .venv made when it was
# called snakeway loses that old name first, so one distribution owns the snakeway package.
$(STAMP): $(VPY) pyproject.toml
	$(VPY) -m pip install -q --upgrade pip
	@! $(VPY) -m pip show -q snakeway 2>/dev/null || $(VPY) -m pip uninstall -q -y snakeway
	$(VPY) -m pip install -q -e '.[test]'
	touch $(STAMP)

# h11 compiled with Cython, in place in the virtualenv (contrib/compile_h11.py; docs/benchmarks.md has what it
# saves per request). Any failure (no compiler, no Cython, a failed check) leaves plain h11 and says so in one
# line; SNAKEWAY_PLAIN_H11=1 skips it. Plain h11 again: `$(VPY) contrib/compile_h11.py --remove`.
$(H11_STAMP): $(STAMP) contrib/compile_h11.py
	@if [ -n "$(SNAKEWAY_PLAIN_H11)" ]; then echo "h11: not compiled (SNAKEWAY_PLAIN_H11 is set)"; \
	elif $(VPY) -m pip install -q -e '.[compile]' >/dev/null 2>&1; then $(VPY) contrib/compile_h11.py || true; \
	else echo "h11: not compiled (Cython could not be installed); snakeway runs on plain h11"; fi
	@touch $(H11_STAMP)

install: $(H11_STAMP)

deps:
	@missing=""; for p in $(TEST_DEBS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get install -y $$missing || { apt-get update && apt-get install -y $$missing; }; \
	fi

serve: $(H11_STAMP)
	$(VPY) -m snakeway serve --config $(CONFIG)

check: $(H11_STAMP)
	$(VPY) -m snakeway check --config $(CONFIG)

# Lint and types first: a finding fails the target before the suite runs.
test: $(H11_STAMP) deps
	$(VPY) -m ruff check .
	$(VPY) -m mypy
	$(VPY) -m pytest -q -m "not simulation"

# The fuzz tests (marker `fuzz`) with the `fuzz` hypothesis profile: many more examples than `make test` runs
# (tests/conftest.py), and no per-test timeout. A failure prints the example that falsified a property.
fuzz: $(H11_STAMP) deps
	SNAKEWAY_HYPOTHESIS_PROFILE=fuzz $(VPY) -m pytest -q -m fuzz --timeout=0

# Mixed load against a real snakeway with 2 workers, SIGHUP every 5 s and a certificate swap every 10 s, for
# SOAK_SECONDS (default 600); fails on a failure the server caused or on RSS growth (docs/benchmarks.md, "Soak").
soak: $(H11_STAMP)
	$(VPY) -m benchmarks.soak

# Side-by-side benchmarks against Caddy and nginx (docs/benchmarks.md); installs wrk, caddy, nginx, pebble
# and redis-server when missing. BENCH_ROUNDS, BENCH_SECONDS and friends: see benchmarks/run.py.
bench: $(H11_STAMP)
	@$(VPY) -c 'import matplotlib' 2>/dev/null || $(VPY) -m pip install -q -e '.[bench]'
	$(VPY) -m benchmarks.run

# A new connection's wait while thousands of keep-alive connections keep each proxy busy (about two
# minutes; benchmarks/accept_fairness.py). BENCH_ACCEPT_BASELINE=<git revision> adds snakeway at that revision.
bench-accept: $(H11_STAMP)
	$(VPY) -m benchmarks.accept_fairness

# The renewal simulator (docs/testing.md, "The renewal simulator"): the real CertManager against a simulated
# CA on a mock clock. First the full-scale targets (tests marked `simulation`, a few minutes), then one JSON
# report per scenario, the figures of docs/internals-certificates.md. SCENARIOS picks presets; SIM_ARGS adds
# flags to each run.
SCENARIOS ?= faults never-validate many-ari from-empty
SIM_ARGS  ?=
simulate: $(H11_STAMP)
	$(VPY) -m pytest -q -m simulation --timeout=0
	@for s in $(SCENARIOS); do $(VPY) -m snakeway.testing.simulate --scenario $$s $(SIM_ARGS) || exit 1; done

clean:
	rm -rf $(VENV) build *.egg-info
