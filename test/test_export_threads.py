"""The loaded policy acts on one intra-op thread by default (no pool stalls on busy cores) and restores the count."""
from __future__ import annotations

import doctest

import pytest
import torch
from torch import nn

import torchrl_dtql.export
from torchrl_dtql.export import intra_op_threads, LoadedPolicy


class ThreadCountProbe(nn.Module):
    """Returns zeros and records the intra-op thread count it ran under."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[int] = []

    def forward(self, observation: torch.Tensor) -> torch.Tensor:
        self.seen.append(torch.get_num_threads())
        return torch.zeros(observation.shape[0], 2)


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("num_threads, expected", [(1, 1), (None, 2)])
def test_each_call_runs_on_the_requested_threads(two_threads, num_threads, expected):
    probe = ThreadCountProbe()
    act = LoadedPolicy(probe, {"observation_dim": 3}, num_threads=num_threads)
    assert act(torch.zeros(3)).shape == (2,)
    assert probe.seen == [expected] and torch.get_num_threads() == 2  # the process's setting is left as it was


def test_threads_are_restored_when_the_call_fails(two_threads):
    with pytest.raises(RuntimeError, match="boom"), intra_op_threads(1):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == 2


def test_bad_thread_count_is_refused():
    with pytest.raises(ValueError, match="num_threads"):
        LoadedPolicy(ThreadCountProbe(), {"observation_dim": 3}, num_threads=0)


def test_docstring_examples():
    assert doctest.testmod(torchrl_dtql.export).failed == 0
