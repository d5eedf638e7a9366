# Two commands do all the set-up:  `make demo`  (the service on the tiny CPU model)
#                                   `make test`  (the whole test suite, CPU only)
PYTHON ?= python3
VENV ?= .venv
TORCH_VERSION ?= 2.13.0
BIN := $(VENV)/bin
TINY := models/tiny

.PHONY: install demo serve test bench bench-streaming clean

# torch first and pinned: an unpinned torch pulls gigabytes of CUDA packages.
$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==$(TORCH_VERSION)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

$(TINY)/config.json: $(BIN)/.installed
	$(BIN)/python -m training tiny-model $(TINY)

# The demo: random tiny weights, so the text is gibberish, but every path is the real one.
demo: $(TINY)/config.json
	AI_DIRECTOR_BASE_MODEL=$(TINY) AI_DIRECTOR_DEVICE=cpu AI_DIRECTOR_MAX_NEW_TOKENS=64 $(BIN)/python -m app

# The real service: configure with AI_DIRECTOR_* variables (see README).
serve: install
	$(BIN)/python -m app

test: install
	$(BIN)/python -m pytest -q

bench: $(TINY)/config.json
	$(BIN)/python bench/batching.py --model $(TINY)

bench-streaming: $(TINY)/config.json
	$(BIN)/python bench/streaming.py --model $(TINY)

clean:
	rm -rf $(VENV) models outputs
