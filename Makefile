# Long-Context, Reproduced. `make book` runs every chapter on the cpu profile and renders the book;
# `make test` runs the unit tests and every chapter on the tiny profile. Both create .venv if needed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= cpu
RESULTS := results/$(PROFILE)
STAMP := $(VENV)/.installed-dev

CHAPTERS := $(basename $(notdir $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))))
APPENDIX := 99_scorecards
PAPER_CHAPTERS := $(filter-out $(APPENDIX),$(CHAPTERS))
EXECUTED := $(foreach c,$(CHAPTERS),$(RESULTS)/$(c)/executed.ipynb)
LCX := $(wildcard lcx/*.py)

.PHONY: help venv book test lint chapter lab bench clean
help:
	@echo "make book     run every chapter on PROFILE=$(PROFILE) with papermill and render _build/html"
	@echo "make test     unit tests + every chapter on the tiny profile (nbmake)"
	@echo "make chapter NB=01_rope [PROFILE=gpu] [PARAMS='-p name value' | PARAMS='-f params.yaml']"
	@echo "make lab      open the chapters in JupyterLab"
	@echo "make bench    training throughput and MFU of the cpu models (prints numbers; not a test)"

venv: $(STAMP)
# torch first, from the CPU wheel: the later install only sees a range it already satisfies, and the
# constraint keeps any dependency from pulling a CUDA torch or nvidia packages into this venv.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e '.[dev]' --constraint constraints-cpu.txt
	@if $(BIN)/pip list 2>/dev/null | grep -qi '^nvidia-'; then echo "nvidia packages in the CPU venv" >&2; exit 1; fi
	touch $@

# One executed notebook per chapter; make reruns a chapter only when it or lcx changed.
$(RESULTS)/%/executed.ipynb: notebooks/%.ipynb $(LCX) | $(STAMP)
	@mkdir -p $(@D)
	$(BIN)/papermill $< $@.tmp.ipynb -p profile $(PROFILE) --cwd notebooks --log-output --no-progress-bar > $(@D)/papermill.log 2>&1 \
		|| { tail -n 40 $(@D)/papermill.log; echo "chapter $* failed: see $(@D)/papermill.log and $@.tmp.ipynb" >&2; exit 1; }
	mv $@.tmp.ipynb $@
# The appendix collects every chapter's scorecard, so it runs last.
$(RESULTS)/$(APPENDIX)/executed.ipynb: $(foreach c,$(PAPER_CHAPTERS),$(RESULTS)/$(c)/executed.ipynb)

# Jupyter Book renders the executed notebooks (no second execution), staged in the source layout.
book: $(EXECUTED)
	@rm -rf _build/src && mkdir -p _build/src/notebooks
	cp -p _config.yml _toc.yml _build/src/ && cp -rp book _build/src/
	@for c in $(CHAPTERS); do cp -p $(RESULTS)/$$c/executed.ipynb _build/src/notebooks/$$c.ipynb; done
	$(BIN)/jupyter-book build _build/src --path-output . -W --keep-going
	@echo "book: $(CURDIR)/_build/html/index.html"

lint: $(STAMP)
	$(BIN)/ruff check lcx tests notebooks
	$(BIN)/ruff format --check lcx tests notebooks

test: lint
	LCX_PROFILE=tiny $(BIN)/pytest -n 2 tests --nbmake notebooks

chapter: $(STAMP)
	@test -n "$(NB)" || { echo "usage: make chapter NB=01_rope [PROFILE=gpu] [PARAMS='-p name value']" >&2; exit 2; }
	@mkdir -p $(RESULTS)/$(NB)
	$(BIN)/papermill notebooks/$(NB).ipynb $(RESULTS)/$(NB)/executed.ipynb -p profile $(PROFILE) $(PARAMS) --cwd notebooks

lab: $(STAMP)
	$(BIN)/pip install --quiet -e '.[lab]' --constraint constraints-cpu.txt
	$(BIN)/jupyter lab notebooks

bench: $(STAMP)
	$(BIN)/python -m lcx.bench

clean:
	rm -rf _build results/tiny
