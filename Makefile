# Set-up and the two everyday commands. Each target installs what it needs first.
#   make demo   run the main job offline: a small study of MiniLM on BBC News, with a report
#   make test   run the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
SHARED ?= ../shared

.PHONY: demo test install clean

$(BIN)/headcount: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	# CPU build of torch first: a bare torch requirement would pull several GB of CUDA packages.
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test]"
	touch $@

install: $(BIN)/headcount

test: install
	$(BIN)/python -m pytest -q

demo: install
	HF_HUB_OFFLINE=1 $(BIN)/headcount demo --out runs/demo

clean:
	rm -rf $(VENV) runs
