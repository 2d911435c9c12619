"""The test suite's own setup: torch stays single-threaded in every test process after collection.

Each pytest-xdist worker imports every test module, so one module that calls
`torch.set_num_threads(n)` at import time sets the count for the whole worker; on the 2-core CI
machine two workers with two threads each slowed the time-budgeted demo tests several-fold.
"""

from __future__ import annotations

import os

import torch


def test_torch_runs_one_intra_op_thread_after_every_module_was_imported():
    assert torch.get_num_threads() == 1


def test_processes_started_by_tests_inherit_one_thread():
    assert os.environ["OMP_NUM_THREADS"] == "1"
