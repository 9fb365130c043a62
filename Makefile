# Two commands for a fresh machine: `make test` and `make demo`; `make docs` builds the documentation site.
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

.PHONY: test demo docs install mediapipe chromium bench fuzz clean

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

# The report tests open index.html in headless Chromium (Debian's chromium package): installed here
# where apt-get is available and we run as root; elsewhere those checks skip, saying why.
chromium:
	@if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; fi

# The MediaPipe tests skip in the main environment (no mediapipe there) and run in .venv-mp,
# where a missing mediapipe is an error rather than a skip.
test: install mediapipe chromium docs
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n 2 --dist loadgroup
	OMP_NUM_THREADS=1 TTAKIT_REQUIRE_MEDIAPIPE=1 $(MP_PY) -m pytest -q -m mediapipe tests/test_mediapipe.py

# The demo's table is one trained model: its weights depend on the thread count and on the
# kernels oneDNN and MKL pick for the CPU (AVX2, AVX-512...), and on the library versions
# (docs/reproducibility.md). Pin the threads, and cap both libraries at AVX2, which every
# x86-64 CPU of the last decade has (DEMO_ISA= for the CPU's best kernels).
DEMO_THREADS ?= 2
DEMO_ISA ?= AVX2
demo: install
	OMP_NUM_THREADS=$(DEMO_THREADS) $(if $(DEMO_ISA),ONEDNN_MAX_CPU_ISA=$(DEMO_ISA) MKL_CBWR=$(DEMO_ISA)) \
		$(PY) -m ttakit demo

# The documentation site (MkDocs, Material theme, API reference from the docstrings) into site/.
# Strict: a broken link, anchor or reference fails the build, and so `make test`.
docs: install
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict --site-dir site

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
	rm -rf $(VENV) $(MP_VENV) build site .pytest_cache
