"""D4RL-format HDF5 files (flat ``observations``/``actions``/``rewards``/``terminals`` arrays) as TED.

Converted as ``d4rl.qlearning_dataset`` does (see :func:`load_d4rl_hdf5`); the file is only ever opened read-only.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict

from .conversion import count_episodes, renumber_episodes, ted_tensordict
from .d4rl_envs import d4rl_eval_env
from .envs import D4RL_FAMILY_ENV
from .info import DatasetNotFoundError, OfflineDatasetError, OfflineDatasetInfo
from .scores import D4RL_REF_SCORES, task_family

__all__ = ["D4RL_REQUIRED_KEYS", "HDF5_SUFFIXES", "load_d4rl_hdf5"]

#: The arrays every D4RL-format file holds (``timeouts`` and ``next_observations`` are optional).
D4RL_REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")

#: File name endings read as D4RL-format HDF5.
HDF5_SUFFIXES = (".hdf5", ".h5", ".hdf")


def _read_arrays(path: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """``(arrays, attributes)`` of a D4RL-format file, with one clear error for each way it can be broken."""
    import h5py

    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise OfflineDatasetError(
            f"could not open {path} as an HDF5 file ({err}). The file is truncated or corrupt "
            "(e.g. an interrupted download): download or copy it again."
        ) from err
    try:
        missing = [k for k in D4RL_REQUIRED_KEYS if k not in f]
        if missing:
            raise OfflineDatasetError(
                f"{path} is missing the D4RL key(s) {missing}; a D4RL-format file needs "
                f"{list(D4RL_REQUIRED_KEYS)} (+ optional 'timeouts', 'next_observations'). "
                f"Top-level keys found: {sorted(f.keys())}."
            )
        try:
            arrays = {k: f[k][()] for k in (*D4RL_REQUIRED_KEYS, "timeouts", "next_observations") if k in f}
        except (OSError, KeyError, TypeError, ValueError) as err:
            raise OfflineDatasetError(
                f"could not read the arrays of {path} ({err}): the file is truncated or corrupt."
            ) from err
        attributes = {k: f.attrs[k] for k in f.attrs}
    finally:
        f.close()
    return arrays, attributes


def _text_attribute(attributes: dict[str, Any], name: str) -> str | None:
    value = attributes.get(name)
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def load_d4rl_hdf5(path: str | os.PathLike, *, env_id: str | None = None) -> tuple[TensorDict, OfflineDatasetInfo]:
    """Load a D4RL-format HDF5 file the way ``d4rl.qlearning_dataset`` does.

    The file holds flat arrays of ``N`` rows: ``observations [N, obs]``, ``actions [N, act]``,
    ``rewards [N]``, ``terminals [N]``, and optionally ``timeouts [N]`` and
    ``next_observations [N, obs]``. The conventions of ``qlearning_dataset`` are kept:

    * row ``i`` becomes the transition ``(obs[i], act[i], rew[i], next_obs[i])`` with
      ``next_obs[i] = next_observations[i]`` if the file has them, else ``observations[i + 1]``;
    * rows where ``timeouts[i]`` is set are **dropped** (``observations[i + 1]`` already belongs to
      the next episode), and so is the last row when the file has no ``next_observations``;
    * ``terminated = terminals[i]``: **bootstrapping stops on terminals only, never on timeouts**
      (``not_done = 1 - terminals``, as the DTQL reference does);
    * ``truncated`` marks the kept row just before a timeout and the last kept row (it only tells
      where an episode ends; it never masks bootstrapping); episodes are numbered after each
      terminal or truncation.

    Args:
        path: the HDF5 file (opened read-only).
        env_id: the gymnasium id to evaluate in. Default: the file's ``env_id``/``env_name``
            attribute if any, else the D4RL protocol's env of the task in the file name: AntMaze, Adroit and
            Kitchen tasks get their gymnasium-robotics env with D4RL's evaluation kwargs
            (:func:`~torchrl_dtql.data.d4rl_envs.d4rl_eval_env`, in ``info.env_kwargs``), locomotion
            ``<Family>-v5`` (hopper, halfcheetah, walker2d, ant); else ``None``.

    Returns:
        ``(data, info)``; the action spec is ``[-1, 1]`` when all actions lie there (D4RL MuJoCo),
        else the data's min/max. Reference scores come from the D4RL table by file name.

    Raises:
        OfflineDatasetError: unreadable/truncated file, a missing key, or inconsistent lengths.

    Examples:
        >>> td, info = load_d4rl_hdf5("hopper-medium-v2.hdf5")  # doctest: +SKIP
    """
    from torchrl.data import Bounded, Unbounded

    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"D4RL HDF5 file {str(path)!r} does not exist.")
    arrays, attributes = _read_arrays(path)

    obs = np.asarray(arrays["observations"])
    n = obs.shape[0]
    for k, v in arrays.items():
        if np.asarray(v).shape[0] != n:
            raise OfflineDatasetError(f"{path}: {k!r} has {np.asarray(v).shape[0]} rows, observations have {n}.")
    if obs.ndim != 2:
        raise OfflineDatasetError(f"{path}: observations must be [N, obs_dim], got shape {obs.shape}.")
    act = np.asarray(arrays["actions"]).reshape(n, -1)
    rew = np.asarray(arrays["rewards"], dtype=np.float64).reshape(n)
    term = np.asarray(arrays["terminals"]).astype(bool).reshape(n)
    timeouts = np.asarray(arrays.get("timeouts", np.zeros(n))).astype(bool).reshape(n)

    keep = ~timeouts
    if "next_observations" in arrays:
        next_obs = np.asarray(arrays["next_observations"]).reshape(obs.shape)
    else:
        next_obs = np.concatenate([obs[1:], obs[-1:]], axis=0)
        keep[-1] = False
    # Episode ends: a terminal, a kept row followed by a timeout row, or the last kept row.
    next_is_timeout = np.zeros(n, dtype=bool)
    next_is_timeout[:-1] = timeouts[1:]
    trunc = keep & ~term & next_is_timeout
    kept = np.flatnonzero(keep)
    if kept.size == 0:
        raise OfflineDatasetError(f"{path}: no transition left after removing timeout rows.")
    if not term[kept[-1]]:
        trunc[kept[-1]] = True
    # Dropped timeout rows also split episodes when they are not preceded by a kept row.
    end = term | trunc | ~keep
    episode = np.concatenate([[0], np.cumsum(end[:-1])])
    td = ted_tensordict(obs[kept], act[kept], next_obs[kept], rew[kept], term[kept], trunc[kept], episode[kept])
    renumber_episodes(td)

    family = task_family(path.name)
    protocol_env = d4rl_eval_env(path.name)
    env_kwargs: dict[str, Any] = {}
    observation_keys = None
    if env_id is not None:
        env_source = "env_id argument"
    elif (recorded := _text_attribute(attributes, "env_id") or _text_attribute(attributes, "env_name")) is not None:
        env_id, env_source = recorded, "hdf5 attribute"
    elif protocol_env is not None:
        env_id, env_kwargs = protocol_env.env_id, dict(protocol_env.kwargs)
        env_source = f"d4rl protocol ({protocol_env.task})"
        observation_keys = protocol_env.observation_keys
    else:
        env_id = D4RL_FAMILY_ENV.get(family or "")
        env_source = f"d4rl family ({family})" if env_id else None
    refs = D4RL_REF_SCORES.get(family) if family else None
    a = td["action"]
    if a.numel() and float(a.abs().max()) <= 1.0:
        low, high = -torch.ones(a.shape[-1]), torch.ones(a.shape[-1])
    else:
        low, high = (a.min(0).values, a.max(0).values) if a.numel() else (-torch.ones(a.shape[-1]),) * 2
    info = OfflineDatasetInfo(
        dataset_id=path.name,
        env_id=env_id,
        observation_spec=Unbounded(shape=(obs.shape[-1],), dtype=torch.float32),
        action_spec=Bounded(low=low, high=high, shape=(a.shape[-1],), dtype=torch.float32),
        ref_min_score=refs[0] if refs else None,
        ref_max_score=refs[1] if refs else None,
        num_transitions=td.shape[0],
        num_episodes=count_episodes(td),
        source_path=str(path),
        source_kind="hdf5",
        observation_keys=observation_keys,
        env_kwargs=env_kwargs,
        env_source=env_source,
    )
    return td, info
