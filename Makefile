# kdnotes: two commands set everything up on a fresh machine and run it.
#   make fidelity   the main job (Stanton et al.'s fidelity experiment on MNIST-5k, CPU, a few minutes)
#   make test       the whole test suite (export check, notebooks, pytest, docs build, browser checks)
# Both create the virtual environment .venv and install what is missing first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT ?= results

.PHONY: fidelity test install docs serve-docs lab clean-venv help
help:
	@sed -n '2,4p' Makefile

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel

# Reinstall when the requirements change.
$(VENV)/.installed: $(BIN)/python settings.ini setup.py
	$(BIN)/python -m pip install -q -e '.[dev]'
	bash tools/install_chromium.sh
	touch $@

install: $(VENV)/.installed

fidelity: install
	$(BIN)/kdnotes fidelity --out $(OUT)

test: install
	$(BIN)/python tools/run_tests.py

docs: install
	$(BIN)/python tools/build_docs.py

serve-docs: docs
	@echo "Serving docs/ at http://127.0.0.1:8000 (Ctrl-C to stop)"
	$(BIN)/python -m http.server 8000 --bind 127.0.0.1 --directory docs

lab: install
	$(BIN)/jupyter lab nbs/

clean-venv:
	rm -rf $(VENV)
