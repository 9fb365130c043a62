"""Test-wide settings: one torch thread per test process. `make test` runs
two processes on two cores; more threads than cores makes torch's worker
threads spin against each other and tiny operations take milliseconds."""

import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import torch  # noqa: E402

torch.set_num_threads(1)
