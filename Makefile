# Set-up and everyday targets. Each target works on a fresh clone.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The CPU build of torch lies on the development machines' disk; a bare `torch>=2.2`
# would make pip fetch a multi-GB CUDA build. Real users with a GPU install their own.
TORCH_CPU := torch==2.13.0

.PHONY: venv dev demo test test-slow lint gpu-stage clean

$(VENV)/.created:
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	touch $@

# The base install: segment and evaluate, no torch (what `make demo` needs).
$(VENV)/.base: $(VENV)/.created pyproject.toml
	$(PIP) install -q -e .
	touch $@

# Every extra on top; torch only if it is not there yet.
$(VENV)/.installed: $(VENV)/.base
	$(PY) -c "import torch" 2>/dev/null || $(PIP) install -q $(TORCH_CPU)
	$(PIP) install -q -e '.[train,dev]'
	touch $@

dev: $(VENV)/.installed

demo: $(VENV)/.base
	$(PY) examples/demo.py

test: dev
	$(PY) -m pytest -q

test-slow: dev
	$(PY) -m pytest -q -m slow

lint: dev
	$(PY) -m ruff check .

# The training images of a GPU session (benchmarks/gpu_session.sh): the device machine sees only
# this checkout, so they travel in .gpu/ (ignored by git, named in the device tool's carry).
SHARED ?= ../shared
gpu-stage:
	rm -rf .gpu/data && mkdir -p .gpu/data
	cp -r $(SHARED)/data/bsds500/images/train .gpu/data/train
	cp -r $(SHARED)/data/photos .gpu/data/photos
	du -sh .gpu

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache examples/out
