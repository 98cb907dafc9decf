"""``OfflineReplayBufferConfig``: a whole offline dataset as a replay buffer, chosen by name in the config."""
from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from omegaconf import ListConfig, MISSING
from torchrl.data import TensorDictReplayBuffer
from torchrl.trainers.algorithms.configs.data import ReplayBufferBaseConfig

from torchrl_dtql.data import load_offline_dataset, make_offline_replay_buffer

__all__ = ["OfflineReplayBufferConfig", "dataset_sizes", "offline_replay_buffer"]

#: The fields of :func:`dataset_sizes`, which the recipe reads with ``${dtql_dataset:<dataset>,<field>}``.
DATASET_SIZE_FIELDS = ("observation_dim", "action_dim", "action_low", "action_high")


@dataclass
class OfflineReplayBufferConfig(ReplayBufferBaseConfig):
    """Hydra configuration for :func:`~torchrl_dtql.data.make_offline_replay_buffer`.

    Its keys are named as in the example's ``replay_buffer`` section (``dataset``, ``reward_shift``, ...).

    TorchRL's ``MinariExperienceReplay`` returns all-zero data in torchrl 0.11-0.14 (see the project's data notes);
    this buffer reads Minari ids and folders, D4RL HDF5 files and the embedded default dataset with the project's
    own loader, into an immutable ``TensorDictReplayBuffer``.

    Examples:
        >>> from hydra.utils import instantiate
        >>> cfg = OfflineReplayBufferConfig(dataset="local/pendulum/random-v0", batch_size=256)
        >>> rb = instantiate(cfg)  # doctest: +SKIP
    """

    dataset: str = MISSING  # a Minari id or folder, a D4RL HDF5 path, or the embedded "embedded/hopper/medium-v0"
    batch_size: int = 256  # transitions per sample (reference: 256 for locomotion)
    sampler: str = "random"  # "random" (with replacement, as the reference) or "without_replacement"
    drop_last: bool = True  # with "without_replacement": skip the last incomplete batch
    prefetch: int | None = None  # batches prefetched in a background thread
    device: Any = None  # device of the storage and of the samples
    observation_norm: bool = False  # normalise observations with the dataset's mean/std (reference: off)
    reward_shift: float = 0.0  # added to every reward (reference: -1 on AntMaze)
    drop_nonfinite: bool = False  # drop transitions holding NaN/inf instead of raising
    goal_terminals: bool = False  # sparse goal rewards (1) end bootstrapping, as D4RL's AntMaze files (reference)
    _target_: str = "torchrl_dtql.trainers.configs.data.offline_replay_buffer"

    def __post_init__(self) -> None:
        super().__post_init__()


def offline_replay_buffer(dataset: str, **kwargs: Any) -> TensorDictReplayBuffer:
    """:func:`~torchrl_dtql.data.make_offline_replay_buffer` with the dataset named ``dataset``, the example's key."""
    return make_offline_replay_buffer(dataset, **kwargs)


@functools.lru_cache(maxsize=8)
def _sizes(dataset: str) -> tuple[tuple[str, Any], ...]:
    info = load_offline_dataset(dataset)[1]
    low, high = info.action_spec.space.low, info.action_spec.space.high
    return (
        ("observation_dim", int(info.observation_spec.shape[-1])),
        ("action_dim", int(info.action_spec.shape[-1])),
        ("action_low", [float(value) for value in low.reshape(-1)]),
        ("action_high", [float(value) for value in high.reshape(-1)]),
    )


def dataset_sizes(dataset: str, field: str) -> Any:
    """What the networks need to know about a dataset, from its own metadata (never typed into a config).

    ``field`` is one of ``observation_dim``, ``action_dim``, ``action_low``, ``action_high`` (lists, one bound per
    action dimension). The recipe reads it as ``${dtql_dataset:${replay_buffer.dataset},observation_dim}``; the
    dataset is loaded once per process for its sizes (then again by the replay buffer).

    Examples:
        >>> dataset_sizes("embedded/hopper/medium-v0", "observation_dim")  # doctest: +SKIP
        11
    """
    if field not in DATASET_SIZE_FIELDS:
        raise ValueError(f"dtql_dataset: unknown field {field!r}; choose among {list(DATASET_SIZE_FIELDS)}.")
    value = dict(_sizes(str(dataset)))[field]
    return ListConfig(value) if isinstance(value, list) else value  # OmegaConf takes lists as ListConfig
