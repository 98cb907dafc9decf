"""Dataset sources -> one TED TensorDict plus :class:`OfflineDatasetInfo`.

Every source ends up in the same layout, float32, with ``[N, 1]`` flags::

    observation            [N, obs]    float32
    action                 [N, act]    float32
    episode                [N]         int64   (0, 1, 2, ... in dataset order)
    next.observation       [N, obs]    float32
    next.reward            [N, 1]      float32 (plus ``reward_shift``)
    next.terminated        [N, 1]      bool    (the only flag that stops bootstrapping)
    next.truncated         [N, 1]      bool    (time limit, or the data stops mid-episode)
    next.done              [N, 1]      bool    (terminated | truncated)

Sources (see :func:`load_offline_dataset`):

* a **Minari dataset id** (``mujoco/hopper/medium-v0``, ``local/hopper/medium-v0``), read from
  ``$MINARI_DATASETS_PATH`` (default ``~/.minari/datasets``), downloaded through Minari only if it
  is not there and the hub can be reached;
* a **Minari dataset folder** (the one holding ``data/main_data.hdf5``);
* a **D4RL-format HDF5 file** (``observations``, ``actions``, ``rewards``, ``terminals``,
  optional ``timeouts`` and ``next_observations``), converted as ``d4rl.qlearning_dataset`` does;
* the **embedded default dataset** :data:`~torchrl_dtql.data.DEFAULT_DATASET`.

Source files are only ever opened read-only.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tensordict import TensorDict

__all__ = [
    "OfflineDatasetInfo",
    "OfflineDatasetError",
    "DatasetNotFoundError",
    "NonFiniteDataError",
    "load_offline_dataset",
    "load_minari",
    "load_d4rl_hdf5",
    "episodes_to_tensordict",
]

D4RL_REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")

# gymnasium env to evaluate D4RL-family HDF5 files in, when the file does not say.
_FAMILY_ENV = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5", "walker2d": "Walker2d-v5", "ant": "Ant-v5"}


class OfflineDatasetError(ValueError):
    """A dataset source is unreadable, incomplete or inconsistent."""


class DatasetNotFoundError(OfflineDatasetError, FileNotFoundError):
    """A dataset id or path could not be found locally (nor downloaded)."""


class NonFiniteDataError(OfflineDatasetError):
    """Observations, actions or rewards hold NaN or inf."""


@dataclass
class OfflineDatasetInfo:
    """What a loaded offline dataset is: its specs, where to evaluate it and how to score it.

    Attributes:
        dataset_id: the Minari id, the HDF5 file name, or :data:`DEFAULT_DATASET`.
        env_id: the gymnasium id to evaluate in (e.g. ``"Hopper-v5"``), or ``None`` if unknown.
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
        from .scores import get_normalized_score

        return get_normalized_score(self, raw_return)

    def replace(self, **changes: Any) -> OfflineDatasetInfo:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


# ---------------------------------------------------------------------------------------------
# Building the TED TensorDict
# ---------------------------------------------------------------------------------------------
def _flag(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=bool).reshape(-1, 1))


def _f32(x: np.ndarray) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))


def _make_ted(obs, act, next_obs, rew, term, trunc, episode) -> TensorDict:
    n = obs.shape[0]
    term_t, trunc_t = _flag(term), _flag(trunc)
    return TensorDict(
        {
            "observation": _f32(obs),
            "action": _f32(act),
            "episode": torch.as_tensor(np.asarray(episode, dtype=np.int64)),
            "next": {
                "observation": _f32(next_obs),
                "reward": _f32(np.asarray(rew).reshape(-1, 1)),
                "terminated": term_t,
                "truncated": trunc_t,
                "done": term_t | trunc_t,
            },
        },
        batch_size=[n],
    )


def _flatten_obs(obs: Any, keys: tuple[str, ...] | None) -> np.ndarray:
    if keys is None:
        return np.asarray(obs)
    parts = [np.asarray(obs[k]).reshape(np.asarray(obs[k]).shape[0], -1) for k in keys]
    return np.concatenate(parts, axis=-1)


def _dict_obs_keys(space: Any) -> tuple[str, ...] | None:
    """Order of concatenation for dict observations: observation, achieved_goal, desired_goal, rest."""
    import gymnasium as gym

    if not isinstance(space, gym.spaces.Dict):
        return None
    keys = list(space.spaces.keys())
    first = [k for k in ("observation", "achieved_goal", "desired_goal") if k in keys]
    return tuple(first + sorted(k for k in keys if k not in first))


def episodes_to_tensordict(episodes: Any, observation_keys: tuple[str, ...] | None = None) -> TensorDict:
    """Concatenate Minari-style episodes into one TED TensorDict.

    Each episode provides ``observations`` (``T + 1`` rows: the last one is the final next
    observation, or a dict of such arrays), ``actions``, ``rewards``, ``terminations`` and
    ``truncations`` (``T`` rows each). Episodes are numbered 0, 1, ... in the order given.

    Args:
        episodes: an iterable of objects with those attributes (``minari.EpisodeData`` or
            ``EpisodeBuffer``).
        observation_keys: keys to concatenate for dict observations.

    Examples:
        >>> from types import SimpleNamespace as E
        >>> ep = E(observations=np.arange(4.0)[:, None], actions=np.zeros((3, 1)),
        ...        rewards=np.ones(3), terminations=np.array([0, 0, 1]), truncations=np.zeros(3))
        >>> td = episodes_to_tensordict([ep, ep])
        >>> td["next", "observation"][:3, 0].tolist(), td["episode"].tolist()
        ([1.0, 2.0, 3.0], [0, 0, 0, 1, 1, 1])
    """
    cols: dict[str, list] = {k: [] for k in ("obs", "act", "next", "rew", "term", "trunc", "ep")}
    for i, ep in enumerate(episodes):
        o = _flatten_obs(ep.observations, observation_keys)
        t = len(ep.rewards)
        if o.shape[0] != t + 1:
            raise OfflineDatasetError(
                f"episode {i}: {o.shape[0]} observations for {t} steps (expected steps + 1)."
            )
        a = np.asarray(ep.actions)
        cols["obs"].append(o[:-1])
        cols["next"].append(o[1:])
        cols["act"].append(a.reshape(t, -1))
        cols["rew"].append(np.asarray(ep.rewards, dtype=np.float64).reshape(t))
        cols["term"].append(np.asarray(ep.terminations, dtype=bool).reshape(t))
        cols["trunc"].append(np.asarray(ep.truncations, dtype=bool).reshape(t))
        cols["ep"].append(np.full(t, i, dtype=np.int64))
    if not cols["obs"]:
        raise OfflineDatasetError("the dataset holds no episodes.")
    cat = {k: np.concatenate(v, axis=0) for k, v in cols.items()}
    # An episode that stops with neither flag (data cut mid-episode) is a truncation for us.
    ends = np.cumsum([len(x) for x in cols["rew"]]) - 1
    open_end = ~(cat["term"][ends] | cat["trunc"][ends])
    cat["trunc"][ends[open_end]] = True
    return _make_ted(cat["obs"], cat["act"], cat["next"], cat["rew"], cat["term"], cat["trunc"], cat["ep"])


# ---------------------------------------------------------------------------------------------
# Validation: non-finite values
# ---------------------------------------------------------------------------------------------
def _check_finite(td: TensorDict, drop: bool, source: str) -> tuple[TensorDict, int]:
    """Raise (or drop rows) when observations, actions or rewards hold NaN/inf."""
    parts = {
        "observations": torch.isfinite(td["observation"]).all(-1) & torch.isfinite(td["next", "observation"]).all(-1),
        "actions": torch.isfinite(td["action"]).all(-1),
        "rewards": torch.isfinite(td["next", "reward"]).all(-1),
    }
    good = parts["observations"] & parts["actions"] & parts["rewards"]
    n_bad = int((~good).sum())
    if n_bad == 0:
        return td, 0
    if not drop:
        first = int((~good).nonzero()[0, 0])
        detail = ", ".join(f"{k}: {int((~v).sum())}" for k, v in parts.items())
        raise NonFiniteDataError(
            f"{source}: {n_bad} transition(s) hold NaN or inf ({detail}); the first is transition "
            f"{first} (episode {int(td['episode'][first])}). Fix the data, or pass drop_nonfinite=True "
            "to drop those transitions."
        )
    # Dropping a row inside an episode breaks it in two: the kept row before the gap becomes a
    # truncation and the rows after the gap get a new episode id, so next_obs[t] == obs[t+1]
    # still holds inside every episode.
    idx = torch.arange(td.shape[0])
    before_gap = torch.zeros_like(good)
    before_gap[:-1] = good[:-1] & ~good[1:] & (td["episode"][:-1] == td["episode"][1:])
    td = td.clone()
    trunc = td["next", "truncated"]
    trunc[before_gap] = True
    td["next", "done"] = td["next", "terminated"] | trunc
    # New episode id after every dropped row or episode change.
    new_ep = torch.ones_like(good)
    new_ep[1:] = (td["episode"][1:] != td["episode"][:-1]) | ~good[:-1]
    td["episode"] = torch.cumsum(new_ep.long(), 0) - 1
    td = td[idx[good]]
    # Renumber densely.
    _, td["episode"] = torch.unique_consecutive(td["episode"], return_inverse=True)
    return td, n_bad


def _episode_returns(td: TensorDict) -> np.ndarray:
    """Undiscounted return of every episode, in episode-id order."""
    ep = td["episode"].numpy()
    rew = td["next", "reward"].reshape(-1).double().numpy()
    if ep.size == 0:
        return np.zeros(0)
    sums = np.bincount(ep, weights=rew)
    return sums[np.unique(ep)]


# ---------------------------------------------------------------------------------------------
# Minari
# ---------------------------------------------------------------------------------------------
def _minari_root() -> Path:
    env = os.environ.get("MINARI_DATASETS_PATH")
    return Path(env).expanduser() if env else Path.home() / ".minari" / "datasets"


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether huggingface.co:443 accepts a TCP connection within ``timeout`` seconds."""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(("huggingface.co", 443), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)  # DNS resolution may ignore the socket timeout
    return bool(result and result[0])


def _not_found_message(dataset_id: str, looked_in: list[str], why: str) -> str:
    paths = "\n".join(f"  - {p}" for p in looked_in)
    return (
        f"Offline dataset {dataset_id!r} was not found.\nLooked in:\n{paths}\n{why}\n"
        "To provide it locally, either:\n"
        f"  * copy the Minari dataset folder to $MINARI_DATASETS_PATH/{dataset_id}/ "
        "(it holds data/main_data.hdf5), or run `minari download "
        f"{dataset_id}` on a machine with network access and copy ~/.minari/datasets over;\n"
        "  * pass the path of a D4RL-format HDF5 file (observations, actions, rewards, terminals, "
        "timeouts) or of a Minari dataset folder instead of an id;\n"
        "  * make a D4RL-style dataset here with `python -m torchrl_dtql.data.make_dataset --env "
        "Hopper-v5 --kinds medium` (ids local/<env>/<kind>-v0), or use "
        "torchrl_dtql.data.DEFAULT_DATASET."
    )


def _offline_mode() -> bool:
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TORCHRL_DTQL_OFFLINE", ""))
    return any(f.strip().lower() in ("1", "true", "yes", "on") for f in flags)


def _locate_minari(dataset_id: str, download: bool) -> Path:
    """Return the ``<id>/data`` folder of a Minari dataset, downloading it if allowed and possible."""
    root = _minari_root()
    data_dir = root / dataset_id / "data"
    looked_in = [str(data_dir)]
    if (data_dir / "metadata.json").is_file():
        return data_dir
    if not download:
        raise DatasetNotFoundError(_not_found_message(dataset_id, looked_in, "Downloading was disabled."))
    if _offline_mode():
        raise DatasetNotFoundError(
            _not_found_message(dataset_id, looked_in, "Not downloading: HF_HUB_OFFLINE / TORCHRL_DTQL_OFFLINE is set.")
        )
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise DatasetNotFoundError(
            _not_found_message(
                dataset_id, looked_in, 'Cannot download: huggingface_hub is missing (pip install "minari[hf]").'
            )
        ) from None
    if not _hub_reachable():
        raise DatasetNotFoundError(
            _not_found_message(dataset_id, looked_in, "Cannot download: the Hugging Face hub is unreachable.")
        )
    import minari

    try:
        minari.download_dataset(dataset_id)
    except Exception as err:  # noqa: BLE001 - any hub failure becomes one clear error
        raise DatasetNotFoundError(
            _not_found_message(dataset_id, looked_in, f"Download failed: {type(err).__name__}: {err}")
        ) from err
    if not (data_dir / "metadata.json").is_file():  # pragma: no cover - minari wrote elsewhere
        raise DatasetNotFoundError(_not_found_message(dataset_id, looked_in, "Download left no data."))
    return data_dir


def _space_to_specs(obs_space: Any, act_space: Any, obs_size: int):
    import gymnasium as gym
    from torchrl.data import Bounded, Unbounded

    if not isinstance(act_space, gym.spaces.Box):
        raise OfflineDatasetError(f"only continuous (Box) action spaces are supported, got {act_space}.")
    low = torch.as_tensor(np.asarray(act_space.low, dtype=np.float32)).reshape(-1)
    high = torch.as_tensor(np.asarray(act_space.high, dtype=np.float32)).reshape(-1)
    action_spec = Bounded(low=low, high=high, shape=(low.numel(),), dtype=torch.float32)
    observation_spec = Unbounded(shape=(obs_size,), dtype=torch.float32)
    return observation_spec, action_spec


def load_minari(dataset_id_or_path: str | os.PathLike, *, download: bool = True) -> tuple[TensorDict, OfflineDatasetInfo]:
    """Load a Minari dataset (by id or by folder) as a TED TensorDict.

    Args:
        dataset_id_or_path: a Minari id, or a dataset folder (``<id>/`` or ``<id>/data/``).
        download: allow a download through Minari when the id is not local.

    Returns:
        ``(data, info)``; ``info.source_kind == "minari"``.

    Examples:
        >>> td, info = load_minari("local/hopper/medium-v0")  # doctest: +SKIP
    """
    from minari import MinariDataset

    path = Path(dataset_id_or_path)
    if path.is_dir():
        data_dir = path / "data" if (path / "data").is_dir() else path
        if not (data_dir / "metadata.json").is_file():
            raise DatasetNotFoundError(f"{path} is not a Minari dataset folder (no data/metadata.json).")
    else:
        data_dir = _locate_minari(str(dataset_id_or_path), download)
    try:
        ds = MinariDataset(data_dir)
    except Exception as err:  # noqa: BLE001 - corrupt metadata, unreadable HDF5, ...
        raise OfflineDatasetError(f"could not read the Minari dataset at {data_dir}: {err}") from err
    keys = _dict_obs_keys(ds.observation_space)
    try:
        td = episodes_to_tensordict(ds.iterate_episodes(), keys)
    except OfflineDatasetError:
        raise
    except Exception as err:  # noqa: BLE001
        raise OfflineDatasetError(f"could not read the episodes of {data_dir}: {err}") from err
    env_spec = ds._eval_env_spec or ds.spec.env_spec  # no public getter for the eval spec in 0.5
    meta = ds.storage.metadata
    obs_spec, act_spec = _space_to_specs(ds.observation_space, ds.action_space, td["observation"].shape[-1])
    info = OfflineDatasetInfo(
        dataset_id=str(meta.get("dataset_id", dataset_id_or_path)),
        env_id=env_spec.id if env_spec is not None else None,
        observation_spec=obs_spec,
        action_spec=act_spec,
        ref_min_score=_opt_float(meta.get("ref_min_score")),
        ref_max_score=_opt_float(meta.get("ref_max_score")),
        num_transitions=td.shape[0],
        num_episodes=int(ds.total_episodes),
        source_path=str(data_dir.parent),
        source_kind="minari",
        observation_keys=keys,
        extra={k: meta[k] for k in ("algorithm_name", "description", "author") if meta.get(k) is not None},
    )
    sidecar = data_dir.parent / "torchrl_dtql.json"  # written by the dataset maker
    if sidecar.is_file():
        import json

        info.extra["maker"] = json.loads(sidecar.read_text())
    return td, info


def _opt_float(x: Any) -> float | None:
    return None if x is None else float(x)


# ---------------------------------------------------------------------------------------------
# D4RL HDF5
# ---------------------------------------------------------------------------------------------
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
            attribute if any, else ``<Family>-v5`` guessed from the file name (hopper,
            halfcheetah, walker2d, ant), else ``None``.

    Returns:
        ``(data, info)``; the action spec is ``[-1, 1]`` when all actions lie there (D4RL MuJoCo),
        else the data's min/max. Reference scores come from the D4RL table by file name.

    Raises:
        OfflineDatasetError: unreadable/truncated file, a missing key, or inconsistent lengths.

    Examples:
        >>> td, info = load_d4rl_hdf5("hopper-medium-v2.hdf5")  # doctest: +SKIP
    """
    import h5py

    from .scores import task_family

    path = Path(path)
    if not path.is_file():
        raise DatasetNotFoundError(f"D4RL HDF5 file {str(path)!r} does not exist.")
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
        attrs = {k: f.attrs[k] for k in f.attrs}
    finally:
        f.close()

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

    if "next_observations" in arrays:
        next_obs = np.asarray(arrays["next_observations"]).reshape(obs.shape)
        keep = ~timeouts
    else:
        next_obs = np.concatenate([obs[1:], obs[-1:]], axis=0)
        keep = ~timeouts
        keep[-1] = False
    # Episode ends: a terminal, a kept row followed by a timeout row, or the last kept row.
    next_is_timeout = np.zeros(n, dtype=bool)
    next_is_timeout[:-1] = timeouts[1:]
    trunc = keep & ~term & next_is_timeout
    kept_idx = np.flatnonzero(keep)
    if kept_idx.size == 0:
        raise OfflineDatasetError(f"{path}: no transition left after removing timeout rows.")
    if not term[kept_idx[-1]]:
        trunc[kept_idx[-1]] = True
    # Dropped timeout rows also split episodes when they are not preceded by a kept row.
    end = term | trunc | ~keep
    episode = np.concatenate([[0], np.cumsum(end[:-1])])
    sel = kept_idx
    td = _make_ted(obs[sel], act[sel], next_obs[sel], rew[sel], term[sel], trunc[sel], episode[sel])
    _, td["episode"] = torch.unique_consecutive(td["episode"], return_inverse=True)

    def _attr(name: str) -> str | None:
        v = attrs.get(name)
        if v is None:
            return None
        return v.decode() if isinstance(v, bytes) else str(v)

    family = task_family(path.name)
    env_id = env_id or _attr("env_id") or _attr("env_name") or _FAMILY_ENV.get(family or "")
    refs = None
    try:
        from .scores import reference_scores

        refs = reference_scores(path.stem) if family else None
    except KeyError:  # pragma: no cover
        refs = None
    a = td["action"]
    if a.numel() and float(a.abs().max()) <= 1.0:
        low, high = -torch.ones(a.shape[-1]), torch.ones(a.shape[-1])
    else:
        low, high = (a.min(0).values, a.max(0).values) if a.numel() else (-torch.ones(a.shape[-1]),) * 2
    from torchrl.data import Bounded, Unbounded

    info = OfflineDatasetInfo(
        dataset_id=path.name,
        env_id=env_id,
        observation_spec=Unbounded(shape=(obs.shape[-1],), dtype=torch.float32),
        action_spec=Bounded(low=low, high=high, shape=(a.shape[-1],), dtype=torch.float32),
        ref_min_score=refs[0] if refs else None,
        ref_max_score=refs[1] if refs else None,
        num_transitions=td.shape[0],
        num_episodes=int(td["episode"].max()) + 1 if td.shape[0] else 0,
        source_path=str(path),
        source_kind="hdf5",
    )
    return td, info


# ---------------------------------------------------------------------------------------------
# The entry point
# ---------------------------------------------------------------------------------------------
def load_offline_dataset(
    source: str | os.PathLike,
    *,
    drop_nonfinite: bool = False,
    reward_shift: float = 0.0,
    download: bool = True,
    env_id: str | None = None,
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
        env_id: override the gymnasium env id recorded in the metadata.

    Returns:
        ``(data, info)``: see the module docstring for the layout, and :class:`OfflineDatasetInfo`.

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
    from .embedded import is_embedded_id, load_embedded

    src = os.fspath(source)
    path = Path(src).expanduser()
    if is_embedded_id(src):
        td, info = load_embedded(src)
    elif path.is_file():
        if path.suffix.lower() not in (".hdf5", ".h5", ".hdf"):
            raise OfflineDatasetError(f"{path}: expected a D4RL-format .hdf5/.h5 file.")
        td, info = load_d4rl_hdf5(path, env_id=env_id)
    elif path.is_dir():
        td, info = load_minari(path, download=False)
    elif path.suffix.lower() in (".hdf5", ".h5", ".hdf") or src.startswith((".", "~", os.sep)):
        raise DatasetNotFoundError(f"dataset file {src!r} does not exist.")
    else:
        td, info = load_minari(src, download=download)
    if env_id is not None:
        info = info.replace(env_id=env_id)

    td, n_dropped = _check_finite(td, drop_nonfinite, info.dataset_id)
    returns = _episode_returns(td)
    if reward_shift:
        td["next", "reward"] = td["next", "reward"] + float(reward_shift)
    info = info.replace(
        num_transitions=td.shape[0],
        num_episodes=int(td["episode"].max()) + 1 if td.shape[0] else 0,
        reward_shift=float(reward_shift),
        episode_returns=returns,
        num_dropped_nonfinite=n_dropped,
    )
    return td, info
