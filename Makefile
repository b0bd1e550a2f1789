# kdnotes: these commands set everything up on a fresh machine and run it.
#   make fidelity   the main job (Stanton et al.'s fidelity experiment on MNIST-5k, CPU, a few minutes)
#   make test       the whole test suite (export, notebooks, pytest, GPU-task dry run, docs, browser checks)
#   make export     notebooks -> kdnotes/ (nbdev_export, with its generated parts wrapped at 110 columns)
#   make gpu-dry-run  the lent-GPU command (tools/gpu_task.sh: probe + every unit) on the CPU, tiny, ~1 min
# Each creates the virtual environment .venv and installs what is missing first.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
OUT ?= results

.PHONY: fidelity test export install chromium docs serve-docs lab clean-venv help gpu-dry-run gpu-prepare
help:
	@sed -n '2,6p' Makefile

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel

# Reinstall when the requirements change.
$(VENV)/.installed: $(BIN)/python settings.ini setup.py
	$(BIN)/python -m pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.installed

# Only the browser checks of `make test` need Chromium; the main job does not.
chromium:
	bash tools/install_chromium.sh

# Two worker processes of one thread each: on 2 cores, twice one thread beats two threads per run
# (small convolutions gain nothing from a second thread, and oversubscribed threads stall).
WORKERS ?= 2
fidelity: install
	$(BIN)/kdnotes fidelity --out $(OUT) --launcher local --workers $(WORKERS) --threads 1

export: install
	$(BIN)/python tools/export.py

test: install chromium
	$(BIN)/python tools/run_tests.py

# The GPU command on the CPU at tiny size (random images, every unit), with the carried diffusers wheel.
gpu-dry-run: install
	$(BIN)/python tools/pack_diffusers.py
	rm -rf runs/gpu-dry-run
	OMP_NUM_THREADS=1 PYTHON=$(BIN)/python OUT=$(CURDIR)/runs/gpu-dry-run \
	  bash tools/gpu_task.sh --dry-run --unit all

# gzip CIFAR-10 and pack diffusers into the carried (ignored) folders, check the 64 MiB limit, print the call.
# LEFT=<seconds>: device time left (the status tool's budget_left_s), so that the printed budget fits it.
gpu-prepare: install
	PYTHON=$(BIN)/python bash tools/prepare_gpu_task.sh $(if $(LEFT),--left $(LEFT))

# The SLURM launcher against a real SLURM on this machine (root: installs slurm-wlm and munge with apt, starts a
# one-node cluster, compares a --launcher slurm sweep with the serial one, scancels a task and reruns), ~2 min.
.PHONY: slurm-test
slurm-test: install
	PYTHON=$(BIN)/python bash tools/slurm_test.sh

docs: install
	$(BIN)/python tools/build_docs.py

serve-docs: docs
	@echo "Serving docs/ at http://127.0.0.1:8000 (Ctrl-C to stop)"
	$(BIN)/python -m http.server 8000 --bind 127.0.0.1 --directory docs

lab: install
	$(BIN)/jupyter lab nbs/

clean-venv:
	rm -rf $(VENV)
