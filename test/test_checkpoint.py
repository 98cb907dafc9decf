"""torchrl_dtql.checkpoint: atomic writes, RNG capture, config checks, and exact resume of DTQL training."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torch.optim.lr_scheduler import CosineAnnealingLR
from torchrl.objectives import SoftUpdate

from torchrl_dtql import DTQLLoss, dtql_update_step, make_dtql_modules, make_dtql_optimizers
from torchrl_dtql.checkpoint import (
    atomic_torch_save,
    capture_rng_state,
    CheckpointError,
    CheckpointMismatchError,
    config_mismatches,
    load_checkpoint,
    read_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from torchrl_dtql.data import make_replay_buffer_from_tensordict

OBS_DIM, ACT_DIM, HIDDEN = 4, 2, 16
CONFIG = {"loss": {"alpha": 1.0, "expectile": 0.7}, "seed": 0, "logger": {"eval_iter": 10}}


def make_transitions(n: int = 64, seed: int = 0) -> TensorDict:
    generator = torch.Generator().manual_seed(seed)
    return TensorDict(
        observation=torch.randn(n, OBS_DIM, generator=generator),
        action=torch.rand(n, ACT_DIM, generator=generator) * 2 - 1,
        next=TensorDict(
            observation=torch.randn(n, OBS_DIM, generator=generator),
            reward=torch.randn(n, 1, generator=generator),
            done=torch.zeros(n, 1, dtype=torch.bool),
            terminated=torch.zeros(n, 1, dtype=torch.bool),
            batch_size=[n],
        ),
        batch_size=[n],
    )


class Trainer:
    """A small DTQL training setup: loss, optimizers, cosine schedulers, target updater, buffer with its own RNG."""

    def __init__(self, seed: int = 0, hidden: int = HIDDEN) -> None:
        torch.manual_seed(seed)
        self.loss = DTQLLoss(**make_dtql_modules(OBS_DIM, ACT_DIM, hidden_dim=hidden), alpha=1.0)
        self.updater = SoftUpdate(self.loss, tau=0.005)
        self.optimizers = make_dtql_optimizers(self.loss, lr=1e-3)
        self.schedulers = [CosineAnnealingLR(opt, T_max=20) for opt in self.optimizers]
        self.buffer = make_replay_buffer_from_tensordict(make_transitions(), 8)
        self.buffer.set_rng(torch.Generator().manual_seed(seed))

    def train(self, steps: int) -> None:
        for _ in range(steps):
            dtql_update_step(self.loss, self.optimizers, self.buffer.sample(), target_updater=self.updater)
            for scheduler in self.schedulers:
                scheduler.step()

    def save(self, path, step: int, config=CONFIG):
        return save_checkpoint(
            path,
            loss=self.loss,
            optimizers=self.optimizers,
            schedulers=self.schedulers,
            step=step,
            config=config,
            replay_buffer=self.buffer,
            extra={"history": [{"step": step, "score": 1.5}]},
        )

    def load(self, path, config=CONFIG, **kwargs):
        return load_checkpoint(
            path,
            loss=self.loss,
            optimizers=self.optimizers,
            schedulers=self.schedulers,
            replay_buffer=self.buffer,
            config=config,
            **kwargs,
        )


def assert_state_dicts_equal(a: dict, b: dict) -> None:
    """Bit-identical on purpose: a resumed run replays the same code path on the same machine, from restored state
    and RNG, so any difference at all is a resume bug (not rounding)."""
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


class TestAtomicSave:
    def test_roundtrip_leaves_no_temporary_file(self, tmp_path):
        path = atomic_torch_save({"x": torch.arange(3)}, tmp_path / "sub" / "ckpt.pt")
        assert torch.equal(torch.load(path)["x"], torch.arange(3))
        assert [p.name for p in path.parent.iterdir()] == ["ckpt.pt"]

    def test_failed_write_keeps_the_previous_file(self, tmp_path):
        path = atomic_torch_save({"step": 1}, tmp_path / "ckpt.pt")
        with pytest.raises(Exception):
            atomic_torch_save({"bad": lambda: None}, path)  # lambdas cannot be pickled
        assert torch.load(path)["step"] == 1
        assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


class TestRNGState:
    def test_restores_torch_numpy_random_and_buffer_generator(self):
        trainer = Trainer()
        state = capture_rng_state(replay_buffer=trainer.buffer)
        first = (torch.rand(3), np.random.rand(3), random.random(), trainer.buffer.sample()["index"])
        restore_rng_state(state, replay_buffer=trainer.buffer)
        second = (torch.rand(3), np.random.rand(3), random.random(), trainer.buffer.sample()["index"])
        # exact on purpose: a restored generator must repeat the very same draws
        assert torch.equal(first[0], second[0])
        np.testing.assert_array_equal(first[1], second[1])
        assert first[2] == second[2]
        assert torch.equal(first[3], second[3])

    def test_buffer_without_generator_is_refused(self):
        trainer = Trainer()
        state = capture_rng_state(replay_buffer=trainer.buffer)
        plain_buffer = make_replay_buffer_from_tensordict(make_transitions(), 8)
        with pytest.raises(CheckpointError, match="own random generator"):
            restore_rng_state(state, replay_buffer=plain_buffer)


class TestConfigMismatches:
    def test_names_each_differing_key_with_both_values(self):
        current = {"loss": {"alpha": 5.0, "expectile": 0.7}, "seed": 1, "logger": {"eval_iter": 99}}
        lines = config_mismatches(CONFIG, current, ignore=["logger"])
        assert lines == ["loss.alpha: checkpoint=1.0, now=5.0", "seed: checkpoint=0, now=1"]

    def test_added_and_removed_keys(self):
        lines = config_mismatches({"a": 1}, {"b": 2})
        assert lines == ["a: checkpoint=1, now=<absent>", "b: checkpoint=<absent>, now=2"]


class TestSaveLoad:
    def test_resumed_training_is_bit_identical(self, tmp_path):
        """Train 6 steps straight vs 3 steps, checkpoint, load into fresh objects (other init), 3 more steps."""
        straight = Trainer(seed=0)
        straight.train(6)

        interrupted = Trainer(seed=0)
        interrupted.train(3)
        path = interrupted.save(tmp_path / "last.pt", step=3)
        torch.rand(100)  # move the global RNG: the checkpoint must put it back

        resumed = Trainer(seed=123)  # different initial weights and buffer generator
        payload = resumed.load(path)
        assert payload["step"] == 3
        assert payload["extra"]["history"] == [{"step": 3, "score": 1.5}]
        resumed.train(3)

        assert_state_dicts_equal(straight.loss.state_dict(), resumed.loss.state_dict())
        for a, b in zip(straight.optimizers, resumed.optimizers):
            assert a.param_groups[0]["lr"] == b.param_groups[0]["lr"]
            for state_a, state_b in zip(a.state.values(), b.state.values()):
                assert torch.equal(state_a["exp_avg"], state_b["exp_avg"])  # bit-identical resume, as above

    def test_target_critic_is_saved(self, tmp_path):
        trainer = Trainer()
        trainer.train(2)
        path = trainer.save(tmp_path / "last.pt", step=2)
        assert any(key.startswith("target_qvalue_network_params") for key in read_checkpoint(path)["loss"])

    def test_mismatched_config_is_refused_with_the_key(self, tmp_path):
        trainer = Trainer()
        path = trainer.save(tmp_path / "last.pt", step=0)
        other = {**CONFIG, "loss": {"alpha": 20.0, "expectile": 0.7}}
        before = {k: v.clone() for k, v in trainer.loss.state_dict().items()}
        with pytest.raises(CheckpointMismatchError, match=r"loss\.alpha: checkpoint=1\.0, now=20\.0"):
            trainer.load(path, config=other)
        assert_state_dicts_equal(before, trainer.loss.state_dict())  # nothing was loaded
        trainer.load(path, config={**CONFIG, "logger": {"eval_iter": 5}}, ignore_config_keys=["logger"])

    def test_corrupt_file_names_the_file(self, tmp_path):
        trainer = Trainer()
        path = trainer.save(tmp_path / "last.pt", step=0)
        path.write_bytes(path.read_bytes()[:200])  # truncated, as by a crash during a non-atomic copy
        with pytest.raises(CheckpointError, match="corrupt or truncated") as info:
            trainer.load(path)
        assert str(path) in str(info.value)

    def test_foreign_file_and_missing_file(self, tmp_path):
        torch.save({"model": torch.zeros(1)}, tmp_path / "other.pt")
        with pytest.raises(CheckpointError, match="not a torchrl_dtql checkpoint"):
            read_checkpoint(tmp_path / "other.pt")
        with pytest.raises(CheckpointError, match="does not exist"):
            read_checkpoint(tmp_path / "missing.pt")

    def test_networks_of_another_size_are_refused(self, tmp_path):
        path = Trainer(hidden=HIDDEN).save(tmp_path / "last.pt", step=0)
        with pytest.raises(CheckpointError, match="does not fit"):
            Trainer(hidden=2 * HIDDEN).load(path)

    def test_scheduler_count_must_match(self, tmp_path):
        trainer = Trainer()
        path = trainer.save(tmp_path / "last.pt", step=0)
        trainer.schedulers = []
        with pytest.raises(CheckpointError, match="3 learning-rate schedulers but the run has 0"):
            trainer.load(path)
