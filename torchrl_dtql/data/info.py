"""What a loaded offline dataset is (:class:`OfflineDatasetInfo`), and the errors the data layer raises.

Every loader returns its TED TensorDict together with an :class:`OfflineDatasetInfo`; a replay buffer from
:func:`~torchrl_dtql.data.make_offline_replay_buffer` carries it as ``.metadata``. The errors form one tree, so a
caller can catch :class:`OfflineDatasetError` for any data problem::

    OfflineDatasetError (ValueError)
    |- DatasetNotFoundError (also FileNotFoundError)
    |- NonFiniteDataError
    `- EnvCompatibilityError
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from .scores import get_normalized_score

__all__ = [
    "OfflineDatasetInfo",
    "OfflineDatasetError",
    "DatasetNotFoundError",
    "NonFiniteDataError",
    "EnvCompatibilityError",
]


class OfflineDatasetError(ValueError):
    """A dataset source is unreadable, incomplete or inconsistent."""


class DatasetNotFoundError(OfflineDatasetError, FileNotFoundError):
    """A dataset id or path could not be found locally (nor downloaded)."""


class NonFiniteDataError(OfflineDatasetError):
    """Observations, actions or rewards hold NaN or inf."""


class EnvCompatibilityError(OfflineDatasetError):
    """The environment's observation/action sizes differ from the dataset's."""


@dataclass
class OfflineDatasetInfo:
    """What a loaded offline dataset is: its specs, where to evaluate it and how to score it.

    Attributes:
        dataset_id: the Minari id, the HDF5 file name, or :data:`~torchrl_dtql.data.DEFAULT_DATASET`.
        env_id: the gymnasium id to evaluate in (e.g. ``"Hopper-v5"``), or ``None`` if unknown.
        env_kwargs: the ``gymnasium.make`` keyword arguments of that env (a plain dict, JSON-like values):
            a Minari dataset's evaluation env spec (maze map, tasks to complete, ``max_episode_steps``, ...),
            or the D4RL protocol's env of a D4RL file's task; ``{}`` when the source records none.
        env_source: where ``env_id`` and ``env_kwargs`` come from (e.g. ``"minari eval_env_spec"``,
            ``"d4rl protocol (antmaze-umaze-v0)"``, ``"env_id argument"``), or ``None``.
        observation_spec: an ``Unbounded`` float32 spec of the (flat) observation.
        action_spec: a ``Bounded`` float32 spec of the action.
        ref_min_score: return of a random policy (normalized score 0), or ``None``.
        ref_max_score: return of an expert (normalized score 100), or ``None``.
        num_transitions: number of transitions (rows) loaded.
        num_episodes: number of episodes (distinct ``episode`` ids).
        source_path: the file or folder read.
        source_kind: ``"minari"``, ``"hdf5"`` or ``"embedded"``.
        reward_shift: constant added to every reward at load time.
        observation_keys: for dict observations, the keys concatenated (in order) into
            ``observation``; ``None`` for flat observations.
        obs_loc: observation mean, set when the buffer was built with ``observation_norm=True``.
        obs_scale: observation std (floored), idem.
        episode_returns: undiscounted return of each episode (reward shift excluded).
        num_dropped_nonfinite: transitions dropped by ``drop_nonfinite=True``.
        extra: free-form metadata; ``extra["maker"]`` holds, for datasets made by
            :mod:`~torchrl_dtql.data.make_dataset` (and the embedded one), the behaviour policy,
            its mean return and normalized score, and the command that made it.

    Examples:
        >>> from torchrl.data import Bounded, Unbounded
        >>> info = OfflineDatasetInfo(
        ...     dataset_id="hopper-medium-v2.hdf5", env_id="Hopper-v5",
        ...     observation_spec=Unbounded(shape=(11,)), action_spec=Bounded(-1.0, 1.0, shape=(3,)),
        ...     ref_min_score=-20.272305, ref_max_score=3234.3, num_transitions=10, num_episodes=1,
        ...     source_path=None, source_kind="hdf5")
        >>> info.observation_size, info.action_size, round(info.normalized_score(3234.3), 6)
        (11, 3, 100.0)
        >>> info.env_kwargs  # the source recorded no evaluation env kwargs
        {}
    """

    dataset_id: str
    env_id: str | None
    observation_spec: Any
    action_spec: Any
    ref_min_score: float | None
    ref_max_score: float | None
    num_transitions: int
    num_episodes: int
    source_path: str | None
    source_kind: str = "minari"
    reward_shift: float = 0.0
    observation_keys: tuple[str, ...] | None = None
    obs_loc: torch.Tensor | None = None
    obs_scale: torch.Tensor | None = None
    episode_returns: np.ndarray | None = field(default=None, repr=False)
    num_dropped_nonfinite: int = 0
    extra: dict = field(default_factory=dict, repr=False)
    env_kwargs: dict = field(default_factory=dict)
    env_source: str | None = None

    @property
    def observation_size(self) -> int:
        """Size of the flat observation."""
        return int(self.observation_spec.shape[-1])

    @property
    def action_size(self) -> int:
        """Size of the action."""
        return int(self.action_spec.shape[-1])

    def normalized_score(self, raw_return: Any) -> Any:
        """``get_normalized_score(self, raw_return)``: the 0-100 score of a raw return."""
        return get_normalized_score(self, raw_return)

    def replace(self, **changes: Any) -> OfflineDatasetInfo:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)
