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

Where each thing lives (loading, then making):

* :mod:`.info`: :class:`OfflineDatasetInfo` and the errors; :mod:`.conversion`: the TED layout and its checks;
* one module per format: :mod:`.minari_files` (Minari ids and folders), :mod:`.d4rl_hdf5` (D4RL HDF5 files),
  :mod:`.embedded` (the embedded default dataset); :mod:`.sources`: the dispatch :func:`load_offline_dataset`;
* :mod:`.buffers`: replay buffers; :mod:`.envs`: env ids, specs, sizes and the eval env's transforms;
  :mod:`.d4rl_envs`: the D4RL protocol's evaluation env of an AntMaze, Adroit or Kitchen task;
  :mod:`.scores`: normalized scores; :mod:`.minari_cache`: TorchRL's ``MinariExperienceReplay`` cache;
* :mod:`.maker`: making datasets (the command line, recording, writing Minari datasets);
  :mod:`.local_ids`: the names the maker writes and the loader reads back.
"""
from __future__ import annotations

from .buffers import make_offline_replay_buffer, make_replay_buffer_from_tensordict, observation_stats
from .embedded import DEFAULT_DATASET, ensure_embedded_dataset
from .envs import check_env_compatibility, make_env_transforms, make_observation_norm
from .info import (
    DatasetNotFoundError,
    EnvCompatibilityError,
    NonFiniteDataError,
    OfflineDatasetError,
    OfflineDatasetInfo,
)
from .d4rl_hdf5 import load_d4rl_hdf5
from .minari_cache import make_minari_experience_replay, prefill_minari_experience_replay
from .minari_files import load_minari
from .scores import D4RL_REF_SCORES, get_normalized_score, reference_scores
from .sources import load_offline_dataset

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
