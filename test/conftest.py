"""Shared pytest setup: a ``slow`` marker, no hub downloads, and no RNG leaks between tests."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

# Any accidental Hugging Face / Minari download fails in a fraction of a second instead of
# retrying for ~20 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run tests marked slow")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: a long test, skipped unless --runslow is given")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: pass --runslow to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


@pytest.fixture(autouse=True)
def prevent_leaking_rng():
    """Restore the torch, numpy and random RNG states after every test."""
    torch_state = torch.get_rng_state()
    np_state = np.random.get_state()
    py_state = random.getstate()
    yield
    torch.set_rng_state(torch_state)
    np.random.set_state(np_state)
    random.setstate(py_state)
