"""``OfflineSchedule``: what a TorchRL ``Trainer`` iterates over when there is no environment to collect from."""
from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from tensordict import TensorDict

__all__ = ["OfflineSchedule"]


class OfflineSchedule:
    """Takes the collector's place in a TorchRL ``Trainer`` for offline training, so that frames count gradient steps.

    A :class:`~torchrl.trainers.Trainer` loops over its collector: for each batch it runs ``optim_steps_per_batch``
    gradient steps on samples from the replay buffer, adds the batch's size to ``collected_frames``, and stops at
    ``total_frames``. Offline, nothing is collected; this schedule yields empty TensorDicts of batch size
    ``optim_steps_per_batch``, so ``collected_frames`` counts gradient steps and ``total_frames``,
    ``log_interval`` and ``save_trainer_interval`` are all in gradient steps.

    It implements the part of the collector interface the Trainer uses (iteration, ``set_seed``, ``state_dict``,
    ``shutdown``, ``init_random_frames``); the state dict holds the number of batches already yielded, so a trainer
    restored from a checkpoint resumes the schedule where it stopped.

    Args:
        total_steps: gradient steps in the whole run (pretraining included); a multiple of ``steps_per_batch``.
        steps_per_batch: gradient steps per yielded batch (the Trainer's ``optim_steps_per_batch``).

    Examples:
        >>> schedule = OfflineSchedule(total_steps=6, steps_per_batch=2)
        >>> [batch.batch_size for batch in schedule]
        [torch.Size([2]), torch.Size([2]), torch.Size([2])]
    """

    init_random_frames = 0

    def __init__(self, total_steps: int, steps_per_batch: int) -> None:
        if steps_per_batch < 1:
            raise ValueError(f"steps_per_batch (optim_steps_per_batch) must be >= 1, got {steps_per_batch}.")
        if total_steps < 1 or total_steps % steps_per_batch:
            raise ValueError(
                f"Offline, total_frames counts gradient steps and must be a positive multiple of "
                f"optim_steps_per_batch: got total_frames={total_steps}, optim_steps_per_batch={steps_per_batch}."
            )
        self.total_steps = int(total_steps)
        self.steps_per_batch = int(steps_per_batch)
        self.batches_yielded = 0

    @property
    def total_frames(self) -> int:
        """The run's length in gradient steps (named as a collector's)."""
        return self.total_steps

    def __len__(self) -> int:
        return self.total_steps // self.steps_per_batch

    def __iter__(self) -> Iterator[TensorDict]:
        while self.batches_yielded < len(self):
            self.batches_yielded += 1
            yield TensorDict(batch_size=[self.steps_per_batch])

    def set_seed(self, seed: int, static_seed: bool = False) -> int:
        """Nothing to seed (no environment); returns ``seed`` for the Trainer to seed torch and numpy with."""
        return seed

    def state_dict(self) -> dict[str, Any]:
        return {"batches_yielded": self.batches_yielded}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.batches_yielded = int(state_dict["batches_yielded"])

    def shutdown(self, *args, **kwargs) -> None:
        """Nothing to shut down."""

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(total_steps={self.total_steps}, steps_per_batch={self.steps_per_batch}, "
            f"batches_yielded={self.batches_yielded})"
        )

