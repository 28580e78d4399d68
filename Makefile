# Two commands a newcomer needs: `make demo` and `make test`. Both build .venv on first use.
VENV := .venv
STAMP := $(VENV)/.installed
export PATH := $(abspath $(VENV))/bin:$(PATH)
CORES ?= all

.PHONY: venv demo test bench clean-demo

$(STAMP): pyproject.toml requirements.lock
	test -x $(VENV)/bin/python || python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet -c requirements.lock -e '.[test]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	snakemake --cores $(CORES) --profile profiles/default

test: $(STAMP)
	python -m pytest

bench: $(STAMP)
	python bench/ingest.py --source sources/demo-ct/dicom
	python bench/preprocess.py
	python bench/train.py

clean-demo:
	rm -rf results/demo-ct sources/demo-ct private/demo-ct
