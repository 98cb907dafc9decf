"""Offline data for DTQL: one TED TensorDict from any source, TorchRL replay buffers, scores.

Public API:

* :func:`load_offline_dataset` / :class:`OfflineDatasetInfo`: a Minari id or folder, a D4RL
  HDF5 file, or :data:`DEFAULT_DATASET` -> ``(TensorDict, info)``.
* :func:`make_offline_replay_buffer`: the same as a ``TensorDictReplayBuffer`` (``.metadata``
  is the info), with optional ``ObservationNorm`` and reward shift;
  :func:`make_observation_norm` / :func:`make_env_transforms` give the eval env the same view.
* :func:`check_env_compatibility`: fail early when env and data sizes differ.
* :func:`get_normalized_score`: the paper's 0-100 scale (D4RL table, Minari metadata).
* ``python -m torchrl_dtql.data.make_dataset``: D4RL-style datasets from TorchRL's SAC.
* :func:`make_minari_experience_replay`: TorchRL's own class over a correctly filled cache.
"""
from __future__ import annotations

from .buffers import (
    EnvCompatibilityError,
    check_env_compatibility,
    make_env_transforms,
    make_observation_norm,
    make_offline_replay_buffer,
    make_replay_buffer_from_tensordict,
    observation_stats,
)
from .embedded import DEFAULT_DATASET, ensure_embedded_dataset
from .minari_cache import make_minari_experience_replay, prefill_minari_experience_replay
from .scores import D4RL_REF_SCORES, get_normalized_score, reference_scores
from .sources import (
    DatasetNotFoundError,
    NonFiniteDataError,
    OfflineDatasetError,
    OfflineDatasetInfo,
    load_d4rl_hdf5,
    load_minari,
    load_offline_dataset,
)

__all__ = [
    "DEFAULT_DATASET",
    "D4RL_REF_SCORES",
    "DatasetNotFoundError",
    "EnvCompatibilityError",
    "NonFiniteDataError",
    "OfflineDatasetError",
    "OfflineDatasetInfo",
    "check_env_compatibility",
    "ensure_embedded_dataset",
    "get_normalized_score",
    "load_d4rl_hdf5",
    "load_minari",
    "load_offline_dataset",
    "make_env_transforms",
    "make_minari_experience_replay",
    "make_observation_norm",
    "make_offline_replay_buffer",
    "make_replay_buffer_from_tensordict",
    "observation_stats",
    "prefill_minari_experience_replay",
    "reference_scores",
]
