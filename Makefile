# Long-Context, Reproduced. `make book` runs every chapter on the cpu profile and renders the book;
# `make test` runs the unit tests, every chapter on the tiny profile, the transformers-sensitive tests
# on transformers 5.17 and the gpu profile's rehearsal.
# Both create .venv if needed.
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
PROFILE ?= cpu
RESULTS := results/$(PROFILE)
STAMP := $(VENV)/.installed-dev
LOCK := requirements/cpu.txt
LOCK_TF517 := requirements/cpu-transformers-5.17.txt
VENV_TF517 := .venv-transformers-5.17
TF_SENSITIVE_TESTS := tests/test_models.py tests/test_rope.py tests/test_attention.py tests/test_evaluate.py tests/test_gpu_path.py tests/test_standins.py
# torch 2.13.0+cpu is not on PyPI: this machine kind keeps the wheel in /opt/wheels.
TORCH_WHEELS ?= $(if $(wildcard /opt/wheels/torch-2.13.0+cpu-*),/opt/wheels,https://download.pytorch.org/whl/cpu/torch/)
LOCK_VENV := .venv-lock
UV := uv==0.13.9
UV_COMPILE := $(LOCK_VENV)/bin/uv pip compile pyproject.toml --extra dev --upgrade --quiet \
	--constraint requirements/torch-cpu.txt --find-links $(TORCH_WHEELS) --python-version 3.11 \
	--custom-compile-command 'make lock'

# MathJax 3, served from the book itself so that its math renders offline (Sphinx's default is a
# CDN): npm's tarball of this version, checked against its sha256, and only the parts tex-chtml.js
# loads (TeX input and its extensions, CommonHTML output and fonts, the menu and its accessibility
# tools: 6.9 MB of the package's 24 MB).
MATHJAX_VERSION := 3.2.2
MATHJAX_SHA256 := 1b9c0a1c44df864e915690558e72adb9cc5203360daefd385084ced3b6c64c09
MATHJAX := _build/mathjax-$(MATHJAX_VERSION)
MATHJAX_PARTS := tex-chtml.js input/tex output/chtml ui a11y sre

CHAPTERS := $(basename $(notdir $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))))
APPENDIX := 99_scorecards
PAPER_CHAPTERS := $(filter-out $(APPENDIX),$(CHAPTERS))
EXECUTED := $(foreach c,$(CHAPTERS),$(RESULTS)/$(c)/executed.ipynb)
LCX := $(wildcard lcx/*.py)

.PHONY: help venv lock book test test-transformers-5.17 lint chapter lab bench gpu-check rehearsal clean
help:
	@echo "make book     run every chapter on PROFILE=$(PROFILE) with papermill and render _build/html"
	@echo "make test     unit tests + every chapter on the tiny profile (nbmake) + the tests on transformers 5.17 + make rehearsal"
	@echo "make lock     refresh requirements/*.txt (the pinned environment); then: make test"
	@echo "make test-transformers-5.17   transformers-sensitive tests on transformers 5.17"
	@echo "make chapter NB=01_rope [PROFILE=gpu] [PARAMS='-p name value' | PARAMS='-f params.yaml']"
	@echo "make lab      open the chapters in JupyterLab"
	@echo "make bench    training throughput and MFU of the cpu models, the loss's and the memory plan's memory (prints numbers; not a test)"
	@echo "make gpu-check  on a GPU machine: packages, steps at 8K-64K, packing, QLoRA, memory vs plan"
	@echo "make rehearsal  every chapter's gpu code path on this CPU, on local stand-ins at toy size"

venv: $(STAMP)
# The venv is installed from the lock: every package at the version the book was built and tested
# with (requirements/cpu.txt, made by `make lock`). pyproject.toml keeps the ranges lcx supports.
# torch is the CPU build (2.13.0+cpu), so no CUDA torch or nvidia packages enter this venv.
$(STAMP): pyproject.toml $(LOCK)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -r $(LOCK) --find-links $(TORCH_WHEELS)
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip check
	@if $(BIN)/pip list 2>/dev/null | grep -qi '^nvidia-'; then echo "nvidia packages in the CPU venv" >&2; exit 1; fi
	touch $@

# Refresh the locks: the newest releases pyproject.toml's ranges allow, around the CPU torch (and, for
# the second lock, around transformers 5.17). Then rerun the tests: `make lock test`. The GPU
# environment files' pip side (their pip lists, and pytorch-gpu as PyPI's torch) is resolved on
# PyPI for Linux x86_64 into requirements/gpu*.txt: the solver's answer for what conda's pip
# installs, and a pip route to a GPU box (flash-attn aside: scripts/gpu_requirements.py).
UV_GPU := $(LOCK_VENV)/bin/uv pip compile --python-version 3.11 --python-platform x86_64-manylinux_2_28 \
	--upgrade --quiet --custom-compile-command 'make lock'
lock:
	test -x $(LOCK_VENV)/bin/uv || { $(PYTHON) -m venv $(LOCK_VENV) && $(LOCK_VENV)/bin/pip install --quiet $(UV) pyyaml==6.0.4; }
	$(UV_COMPILE) -o $(LOCK)
	$(UV_COMPILE) --override requirements/transformers-5.17.txt -o $(LOCK_TF517)
	$(LOCK_VENV)/bin/python scripts/gpu_requirements.py environment.yml > $(LOCK_VENV)/gpu.in
	$(UV_GPU) $(LOCK_VENV)/gpu.in -o requirements/gpu.txt
	$(LOCK_VENV)/bin/python scripts/gpu_requirements.py environment-unsloth.yml > $(LOCK_VENV)/gpu-unsloth.in
	$(UV_GPU) $(LOCK_VENV)/gpu-unsloth.in -o requirements/gpu-unsloth.txt

# The tests that depend on transformers' internals (xPos's attention and cached decoding, RoPE
# against transformers' own, packed documents) on transformers 5.17, in a second venv.
test-transformers-5.17: $(LOCK_TF517)
	test -x $(VENV_TF517)/bin/python || $(PYTHON) -m venv $(VENV_TF517)
	$(VENV_TF517)/bin/pip install --quiet -r $(LOCK_TF517) --find-links $(TORCH_WHEELS)
	$(VENV_TF517)/bin/pip install --quiet --no-deps -e .
	$(VENV_TF517)/bin/pip check
	$(VENV_TF517)/bin/python -c "import transformers; print('transformers', transformers.__version__)"
	LCX_PROFILE=tiny $(VENV_TF517)/bin/pytest -n 2 $(TF_SENSITIVE_TESTS)

# One executed notebook per chapter; make reruns a chapter only when it, lcx or a chapter it reads
# changed. Its progress bars are kept as a Jupyter front end shows them (the last state, not one
# line per update). A chapter writes its results into a staging folder that its last step renames
# into place with a marker (lcx.results.chapter_dir and publish); papermill writes its notebook and
# log beside the folder (.<chapter>.executed.ipynb, .<chapter>.papermill.log), and they join the
# folder only when the run published its results. A chapter that fails before its last step leaves
# the previous run's folder as it was.
$(RESULTS)/%/executed.ipynb: notebooks/%.ipynb $(LCX) | $(STAMP)
	@mkdir -p $(RESULTS)
	$(BIN)/papermill $< $(RESULTS)/.$*.executed.ipynb -p profile $(PROFILE) --cwd notebooks --log-output --no-progress-bar > $(RESULTS)/.$*.papermill.log 2>&1 \
		|| { tail -n 40 $(RESULTS)/.$*.papermill.log; echo "chapter $* failed: see $(RESULTS)/.$*.papermill.log and $(RESULTS)/.$*.executed.ipynb" >&2; exit 1; }
	$(call finish,$*,executed.ipynb)

# $(call finish,CHAPTER,NAME): after a successful run, check that the chapter published its results
# (no staging folder left; the appendix makes none) and move papermill's notebook in as NAME.
define finish
	@test ! -e $(RESULTS)/.$(1).partial || { echo "chapter $(1) ran but did not publish its results (its last step, Scorecard.save, did not run): they stay in $(RESULTS)/.$(1).partial" >&2; exit 1; }
	$(BIN)/python scripts/collapse_streams.py $(RESULTS)/.$(1).executed.ipynb
	@mkdir -p $(RESULTS)/$(1)
	@if [ -e $(RESULTS)/.$(1).papermill.log ]; then mv $(RESULTS)/.$(1).papermill.log $(RESULTS)/$(1)/papermill.log; fi
	mv $(RESULTS)/.$(1).executed.ipynb $(RESULTS)/$(1)/$(2)
endef

# Which chapters read which: chapter 06's P9 fine-tunes the extended models of chapters 03, 04 and
# 05 that their metrics.json name (lcx.prolong.other_chapters, through lcx.results.load_metrics),
# and the appendix collects every chapter's scorecard and metrics. make runs them first (make book
# and make chapter alike); each chapter's marker records the runs it read, and the appendix calls
# a chapter stale when one of them was replaced since.
READS_06_prolong := 03_together_pi 04_llama2_long_abf 05_llama3_80k_qlora
READS_$(APPENDIX) := $(PAPER_CHAPTERS)
reads = $(foreach r,$(READS_$(1)),$(RESULTS)/$(r)/executed.ipynb)
$(foreach c,$(CHAPTERS),$(eval $(RESULTS)/$(c)/executed.ipynb: $(call reads,$(c))))

# Jupyter Book renders the executed notebooks (no second execution), staged in the source layout.
book: $(EXECUTED) $(MATHJAX)/tex-chtml.js
	@rm -rf _build/src && mkdir -p _build/src/notebooks _build/src/_mathjax
	cp -p _config.yml _toc.yml _build/src/ && cp -rp book _build/src/
	cp -rp $(MATHJAX) _build/src/_mathjax/mathjax
	@for c in $(CHAPTERS); do cp -p $(RESULTS)/$$c/executed.ipynb _build/src/notebooks/$$c.ipynb; done
	$(BIN)/jupyter-book build _build/src --path-output . -W --keep-going
	@echo "book: $(CURDIR)/_build/html/index.html"

$(MATHJAX)/tex-chtml.js:
	@command -v npm >/dev/null || { echo "make book needs npm (Node.js) to fetch MathJax $(MATHJAX_VERSION)" >&2; exit 1; }
	rm -rf $(MATHJAX) $(MATHJAX).tmp && mkdir -p $(MATHJAX).tmp
	cd $(MATHJAX).tmp && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null
	echo "$(MATHJAX_SHA256)  $(MATHJAX).tmp/mathjax-$(MATHJAX_VERSION).tgz" | sha256sum --check --quiet
	tar -xzf $(MATHJAX).tmp/mathjax-$(MATHJAX_VERSION).tgz -C $(MATHJAX).tmp $(addprefix package/es5/,$(MATHJAX_PARTS))
	mv $(MATHJAX).tmp/package/es5 $(MATHJAX) && rm -rf $(MATHJAX).tmp

lint: $(STAMP)
	$(BIN)/ruff check lcx tests notebooks scripts conftest.py
	$(BIN)/ruff format --check lcx tests notebooks scripts conftest.py

# The tests keep their own cache and results, under .cache/test (conftest.py sets LCX_CACHE and
# LCX_RESULTS for every pytest run, nbmake's chapters included): never the book's. Then the
# rehearsal of the gpu profile (below; its own cache under .cache/rehearsal). The tests that reach
# into transformers run on 5.17 too: unsloth pins it, and the GPU machine we check on has it.
test: lint
	LCX_PROFILE=tiny $(BIN)/pytest -n 2 tests --nbmake notebooks
	$(MAKE) test-transformers-5.17
	$(BIN)/python scripts/rehearsal.py

# make chapter always runs the chapter (after what it reads, when that is out of date). With PARAMS
# its notebook is executed-custom.ipynb: make book renders and counts as done only a run with the
# default parameters, and reruns a chapter whose last run had others (that run replaced the
# chapter's folder, executed.ipynb included).
chapter: $(STAMP) $(call reads,$(NB))
	@test -n "$(NB)" || { echo "usage: make chapter NB=01_rope [PROFILE=gpu] [PARAMS='-p name value']" >&2; exit 2; }
	@mkdir -p $(RESULTS)
	$(BIN)/papermill notebooks/$(NB).ipynb $(RESULTS)/.$(NB).executed.ipynb -p profile $(PROFILE) $(PARAMS) --cwd notebooks \
		|| { echo "chapter $(NB) failed: see $(RESULTS)/.$(NB).executed.ipynb" >&2; exit 1; }
	$(call finish,$(NB),$(if $(strip $(PARAMS)),executed-custom.ipynb,executed.ipynb))

lab: $(STAMP)
	$(BIN)/pip install --quiet -e '.[lab]' --constraint $(LOCK)
	$(BIN)/jupyter lab notebooks

bench: $(STAMP)
	$(BIN)/python -m lcx.bench --variants
	$(BIN)/python -m lcx.bench --loss
	$(BIN)/python -m lcx.bench --plan

# The gpu profile's code, every chapter, on this CPU: hub models and datasets stood in for locally,
# windows / 32, two steps a run, multi-GPU runs launched on two gloo ranks (scripts/rehearsal.py;
# its cache and results under .cache/rehearsal). REHEARSE='03_together_pi ...' runs some of them.
rehearsal: $(STAMP)
	$(BIN)/python scripts/rehearsal.py $(REHEARSE)

# On a GPU machine, with whatever Python has torch and transformers there (no venv, no network):
# make gpu-check GPU_PYTHON=python3. It needs none of datasets, pandas, scipy or matplotlib.
GPU_PYTHON ?= python3
gpu-check:
	$(GPU_PYTHON) scripts/gpu_check.py

# The build and the tests' own folders; never anyone's results/ or .cache/lcx.
clean:
	rm -rf _build .cache/test .cache/rehearsal
