# Two commands for a fresh machine: `make test` and `make demo`.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# torch is pinned to the CPU build that installs from local disk; an unpinned
# torch would pull a multi-GB CUDA build. An already-installed torch is kept.
TORCH_SPEC ?= torch==2.13.0
# glibc returns big tensors to the OS after every batch unless told not to;
# this makes large batches ~2.5x slower on CPU (see BENCHMARKS.md).
export MALLOC_MMAP_THRESHOLD_ ?= 4294967296
export MALLOC_TRIM_THRESHOLD_ ?= 68719476736
export KERAS_BACKEND ?= torch
# Use the CIFAR-10 copy and the pretrained ResNets beside the checkout when present.
ifneq ($(wildcard ../shared/data/cifar10/cifar-10-batches-bin),)
export TTAKIT_DATA ?= $(abspath ../shared/data/cifar10)
endif
ifneq ($(wildcard ../shared/models/cifar10-resnet),)
export TTAKIT_MODELS ?= $(abspath ../shared/models/cifar10-resnet)
endif

.PHONY: test demo install bench fuzz clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

test: install
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadgroup

demo: install
	$(PY) -m ttakit demo

bench: install
	$(PY) bench/run_all.py

# The fuzz suites in rounds with fresh seeds for FUZZ_MINUTES (30 by default),
# counting the examples tried (bench/fuzz_long.py).
FUZZ_MINUTES ?= 30
fuzz: install
	$(PY) bench/fuzz_long.py --minutes $(FUZZ_MINUTES)

clean:
	rm -rf $(VENV) build .pytest_cache
