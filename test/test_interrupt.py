"""GracefulStop: the first SIGINT / SIGTERM sets a flag the training loop polls, a second Ctrl-C raises."""
from __future__ import annotations

import doctest
import os
import signal

import pytest

import torchrl_dtql.interrupt
from torchrl_dtql.interrupt import GracefulStop


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_first_signal_sets_the_flag_and_handlers_are_restored(sig, capsys):
    before = signal.getsignal(sig)
    with GracefulStop() as stop:
        assert not stop.requested and stop.exit_code == 0
        os.kill(os.getpid(), sig)  # a real signal, delivered to this (main) thread
        assert stop.requested and stop.signal_name == sig.name and stop.exit_code == 128 + sig
    assert signal.getsignal(sig) is before
    assert "writing a checkpoint" in capsys.readouterr().err


def test_second_ctrl_c_raises_keyboard_interrupt():
    with GracefulStop(message="") as stop, pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested
        os.kill(os.getpid(), signal.SIGINT)


def test_docstring_examples():
    assert doctest.testmod(torchrl_dtql.interrupt).failed == 0
