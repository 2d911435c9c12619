"""Repository-wide pytest setup.

* torch runs single-threaded in tests: on the 2-core CI machine two intra-op threads per test
  process contend with each other and with pytest-xdist workers, slowing small kernels by 10-30x.
* Hypothesis uses a deterministic profile under CI (same examples every run) and a randomized
  one locally; `HYPOTHESIS_PROFILE` overrides.
"""

from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, settings

torch.set_num_threads(1)

settings.register_profile(
    "ci", deadline=None, derandomize=True, print_blob=True, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("dev", deadline=None, print_blob=True, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci" if os.environ.get("CI") else "dev"))
