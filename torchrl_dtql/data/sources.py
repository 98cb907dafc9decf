"""One entry point for every dataset source: :func:`load_offline_dataset` -> ``(TED TensorDict, OfflineDatasetInfo)``.

Sources, and the module that reads each:

* the **embedded default dataset** :data:`~torchrl_dtql.data.DEFAULT_DATASET` (:mod:`.embedded`);
* a **D4RL-format HDF5 file** (``observations``, ``actions``, ``rewards``, ``terminals``,
  optional ``timeouts`` and ``next_observations``), converted as ``d4rl.qlearning_dataset`` does (:mod:`.d4rl_hdf5`);
* a **Minari dataset folder** (the one holding ``data/main_data.hdf5``) (:mod:`.minari_files`);
* a **Minari dataset id** (``mujoco/hopper/medium-v0``, ``local/hopper/medium-v0``), read from
  ``$MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``), downloaded through Minari only if it
  is not there and the hub can be reached (:mod:`.minari_files`).

Each format loader returns the TED layout of :mod:`.conversion`; this module then checks the values
(:func:`~torchrl_dtql.data.conversion.check_finite`), shifts the rewards and records the episode returns.
Source files are only ever opened read-only.
"""
from __future__ import annotations

import os
from pathlib import Path

from tensordict import TensorDict

from .conversion import check_finite, count_episodes, episode_returns, episodes_to_tensordict, mark_goal_terminals
from .d4rl_hdf5 import HDF5_SUFFIXES, load_d4rl_hdf5
from .embedded import is_embedded_id, load_embedded
from .info import DatasetNotFoundError, NonFiniteDataError, OfflineDatasetError, OfflineDatasetInfo
from .minari_files import load_minari

__all__ = [
    "load_offline_dataset",
    # Importable from here as before the split; each lives in the module named above.
    "OfflineDatasetInfo",
    "OfflineDatasetError",
    "DatasetNotFoundError",
    "NonFiniteDataError",
    "load_minari",
    "load_d4rl_hdf5",
    "episodes_to_tensordict",
]


def _read_source(source: str, *, download: bool, env_id: str | None) -> tuple[TensorDict, OfflineDatasetInfo]:
    """Dispatch ``source`` to the loader of its format."""
    path = Path(source).expanduser()
    if is_embedded_id(source):
        return load_embedded(source)
    if path.is_file():
        if path.suffix.lower() not in HDF5_SUFFIXES:
            raise OfflineDatasetError(f"{path}: expected a D4RL-format .hdf5/.h5 file.")
        return load_d4rl_hdf5(path, env_id=env_id)
    if path.is_dir():
        return load_minari(path, download=False)
    if path.suffix.lower() in HDF5_SUFFIXES or source.startswith((".", "~", os.sep)):
        raise DatasetNotFoundError(f"dataset file {source!r} does not exist.")
    return load_minari(source, download=download)


def load_offline_dataset(
    source: str | os.PathLike,
    *,
    drop_nonfinite: bool = False,
    reward_shift: float = 0.0,
    download: bool = True,
    env_id: str | None = None,
    goal_terminals: bool = False,
) -> tuple[TensorDict, OfflineDatasetInfo]:
    """Load a whole offline dataset as one TED TensorDict (float32) and its metadata.

    Args:
        source: :data:`~torchrl_dtql.data.DEFAULT_DATASET` (regenerated on first use, then
            cached), a path to a D4RL-format ``.hdf5``/``.h5`` file, a path to a Minari dataset
            folder, or a Minari dataset id (``mujoco/hopper/medium-v0``, ``local/hopper/medium-v0``).

    Keyword Args:
        drop_nonfinite: drop the transitions whose observation, next observation, action or
            reward holds NaN/inf (default: raise :class:`NonFiniteDataError` with the count and the
            first index).
        reward_shift: constant added to every reward (``-1.0`` for AntMaze, as the reference does).
        download: allow Minari to download an id that is not local (only tried when
            ``huggingface_hub`` is installed, ``HF_HUB_OFFLINE`` is unset and the hub answers).
        env_id: override the gymnasium env id recorded in the metadata (the recorded env kwargs are then dropped,
            unless it is the recorded id).
        goal_terminals: mark the transitions whose (sparse, unshifted) reward is 1 terminated, as D4RL's AntMaze
            files do (:func:`~torchrl_dtql.data.conversion.mark_goal_terminals`); the count is
            ``info.extra["goal_terminals"]``.

    Returns:
        ``(data, info)``: see :mod:`torchrl_dtql.data.conversion` for the layout, and :class:`OfflineDatasetInfo`.

    Raises:
        DatasetNotFoundError: the id/path does not exist locally and cannot be downloaded; the
            message lists the paths looked in and how to provide the data.
        OfflineDatasetError: a corrupt, truncated or incomplete file.
        NonFiniteDataError: NaN/inf in the data and ``drop_nonfinite=False``.

    Examples:
        >>> from torchrl_dtql.data import DEFAULT_DATASET
        >>> td, info = load_offline_dataset(DEFAULT_DATASET)  # doctest: +SKIP
        >>> info.env_id, td["next", "reward"].shape  # doctest: +SKIP
        ('Hopper-v5', torch.Size([100000, 1]))
    """
    td, info = _read_source(os.fspath(source), download=download, env_id=env_id)
    if env_id is not None and env_id != info.env_id:
        info = info.replace(env_id=env_id, env_kwargs={}, env_source="env_id argument")
    td, num_dropped = check_finite(td, drop=drop_nonfinite, source=info.dataset_id)
    returns = episode_returns(td)
    if goal_terminals:
        info.extra["goal_terminals"] = mark_goal_terminals(td)
    if reward_shift:
        td["next", "reward"] = td["next", "reward"] + float(reward_shift)
    return td, info.replace(
        num_transitions=td.shape[0],
        num_episodes=count_episodes(td),
        reward_shift=float(reward_shift),
        episode_returns=returns,
        num_dropped_nonfinite=num_dropped,
    )
