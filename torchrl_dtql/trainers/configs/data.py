"""``OfflineReplayBufferConfig``: a whole offline dataset as a replay buffer, chosen by name in the config."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import MISSING
from torchrl.trainers.algorithms.configs.data import ReplayBufferBaseConfig

__all__ = ["OfflineReplayBufferConfig"]


@dataclass
class OfflineReplayBufferConfig(ReplayBufferBaseConfig):
    """Hydra configuration for :func:`~torchrl_dtql.data.make_offline_replay_buffer`.

    TorchRL's ``MinariExperienceReplay`` returns all-zero data in torchrl 0.11-0.14 (see the project's data notes);
    this buffer reads Minari ids and folders, D4RL HDF5 files and the embedded default dataset with the project's
    own loader, into an immutable ``TensorDictReplayBuffer``.

    Examples:
        >>> from hydra.utils import instantiate
        >>> cfg = OfflineReplayBufferConfig(source="local/pendulum/random-v0", batch_size=256)
        >>> rb = instantiate(cfg)  # doctest: +SKIP
    """

    source: str = MISSING  # a Minari id or folder, a D4RL HDF5 path, or the embedded "embedded/hopper/medium-v0"
    batch_size: int = 256  # transitions per sample (reference: 256 for locomotion)
    sampler: str = "random"  # "random" (with replacement, as the reference) or "without_replacement"
    drop_last: bool = True  # with "without_replacement": skip the last incomplete batch
    prefetch: int | None = None  # batches prefetched in a background thread
    device: Any = None  # device of the storage and of the samples
    observation_norm: bool = False  # normalise observations with the dataset's mean/std (reference: off)
    reward_shift: float = 0.0  # added to every reward (reference: -1 on AntMaze)
    drop_nonfinite: bool = False  # drop transitions holding NaN/inf instead of raising
    _target_: str = "torchrl_dtql.data.make_offline_replay_buffer"

    def __post_init__(self) -> None:
        super().__post_init__()
