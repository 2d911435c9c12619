"""Repository-wide pytest setup.

* torch runs single-threaded in tests, and so do the processes tests start (`OMP_NUM_THREADS`):
  on the 2-core CI machine two intra-op threads per test process contend with each other and
  with pytest-xdist workers, slowing small kernels by 10-30x. A test module must not raise the
  count at import: every xdist worker imports every module (tests/test_suite_threads.py checks).
* Hypothesis uses a deterministic profile under CI (same examples every run) and a randomized
  one locally; `HYPOTHESIS_PROFILE` overrides.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch loads; inherited by subprocesses

import torch  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402

torch.set_num_threads(1)

settings.register_profile(
    "ci", deadline=None, derandomize=True, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
