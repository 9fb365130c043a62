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

.PHONY: test demo install mediapipe bench fuzz clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

# MediaPipe 0.10.14 (its models, experiments and tests: ttakit.zoo.mediapipe) pins protobuf < 5,
# and BlazePose's graph setup does fail on the protobuf 7 of the main environment, so it gets an
# environment of its own, .venv-mp, with ttakit installed editable. mediapipe itself installs
# without its declared dependencies (they pull jax, jaxlib, sounddevice and opencv-contrib,
# none of which mp.solutions uses); the extra [mediapipe] lists the light ones it needs.
MP_VENV ?= .venv-mp
MP_PY   := $(MP_VENV)/bin/python
MEDIAPIPE_SPEC ?= mediapipe==0.10.14

$(MP_VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(MP_VENV)
	$(MP_PY) -m pip install -q --upgrade pip
	$(MP_PY) -c "import torch" 2>/dev/null || $(MP_PY) -m pip install -q "$(TORCH_SPEC)"
	$(MP_PY) -m pip install -q -e ".[mediapipe]" pytest pytest-xdist hypothesis
	$(MP_PY) -m pip install -q --no-deps "$(MEDIAPIPE_SPEC)"
	touch $@

mediapipe: $(MP_VENV)/.installed

# The MediaPipe tests skip in the main environment (no mediapipe there) and run in .venv-mp,
# where a missing mediapipe is an error rather than a skip.
test: install mediapipe
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadgroup
	OMP_NUM_THREADS=1 TTAKIT_REQUIRE_MEDIAPIPE=1 $(MP_PY) -m pytest -q -m mediapipe tests/test_mediapipe.py

demo: install
	$(PY) -m ttakit demo

bench: install
	$(PY) bench/run_all.py

# The fuzz suites in rounds with fresh seeds for FUZZ_MINUTES (30 by default),
# counting the examples tried (bench/fuzz_long.py): tests/test_fuzz_*.py and the
# HTTP fuzz of ttakit serve (tests/test_serve_fuzz.py, a real server on 127.0.0.1).
# Examples per test and round: FUZZ_EXAMPLES (500 by default).
FUZZ_MINUTES ?= 30
FUZZ_EXAMPLES ?= 500
fuzz: install
	$(PY) bench/fuzz_long.py --minutes $(FUZZ_MINUTES) --examples $(FUZZ_EXAMPLES)

clean:
	rm -rf $(VENV) $(MP_VENV) build .pytest_cache
