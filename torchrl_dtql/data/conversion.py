"""Transitions -> one TED TensorDict, the checks every loaded dataset goes through, and per-episode returns.

Every source ends up in the same layout, float32, with ``[N, 1]`` flags::

    observation            [N, obs]    float32
    action                 [N, act]    float32
    episode                [N]         int64   (0, 1, 2, ... in dataset order)
    next.observation       [N, obs]    float32
    next.reward            [N, 1]      float32 (plus ``reward_shift``)
    next.terminated        [N, 1]      bool    (the only flag that stops bootstrapping)
    next.truncated         [N, 1]      bool    (time limit, or the data stops mid-episode)
    next.done              [N, 1]      bool    (terminated | truncated)

The format loaders build it with :func:`ted_tensordict` (flat arrays) or :func:`episodes_to_tensordict`
(Minari-style episodes); :func:`check_finite` and :func:`episode_returns` run on every dataset loaded.
"""
from __future__ import annotations

from typing import Any, Iterable

import numpy as np
import torch
from tensordict import TensorDict

from .envs import observation_leaf
from .info import NonFiniteDataError, OfflineDatasetError

__all__ = [
    "ted_tensordict",
    "episodes_to_tensordict",
    "check_finite",
    "renumber_episodes",
    "count_episodes",
    "episode_returns",
    "mark_goal_terminals",
]


def _as_flag(x: Any) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=bool).reshape(-1, 1))


def _as_float32(x: Any) -> torch.Tensor:
    return torch.as_tensor(np.ascontiguousarray(x, dtype=np.float32))


def ted_tensordict(
    observation: Any,
    action: Any,
    next_observation: Any,
    reward: Any,
    terminated: Any,
    truncated: Any,
    episode: Any,
) -> TensorDict:
    """One TED TensorDict (the layout above) from ``N``-row arrays; ``done = terminated | truncated``.

    Args:
        observation: ``[N, obs]``.
        action: ``[N, act]``.
        next_observation: ``[N, obs]``.
        reward: ``N`` rewards (any shape with ``N`` elements).
        terminated: ``N`` flags.
        truncated: ``N`` flags.
        episode: ``N`` episode ids.

    Examples:
        >>> td = ted_tensordict(np.zeros((2, 3)), np.zeros((2, 1)), np.ones((2, 3)), [1.0, 2.0],
        ...                     [False, True], [False, False], [0, 0])
        >>> td["next", "reward"].shape, td["next", "done"][:, 0].tolist(), td["observation"].dtype
        (torch.Size([2, 1]), [False, True], torch.float32)
    """
    terminated_t, truncated_t = _as_flag(terminated), _as_flag(truncated)
    return TensorDict(
        {
            "observation": _as_float32(observation),
            "action": _as_float32(action),
            "episode": torch.as_tensor(np.asarray(episode, dtype=np.int64)),
            "next": {
                "observation": _as_float32(next_observation),
                "reward": _as_float32(np.asarray(reward).reshape(-1, 1)),
                "terminated": terminated_t,
                "truncated": truncated_t,
                "done": terminated_t | truncated_t,
            },
        },
        batch_size=[np.asarray(observation).shape[0]],
    )


def _flatten_observation(observation: Any, keys: tuple[str | tuple[str, ...], ...] | None) -> np.ndarray:
    """The observation array, or the concatenation of a dict observation's ``keys`` (names or paths of nested
    names, each entry flattened per row)."""
    if keys is None:
        return np.asarray(observation)
    parts = [np.asarray(observation_leaf(observation, k)) for k in keys]
    return np.concatenate([part.reshape(part.shape[0], -1) for part in parts], axis=-1)


def episodes_to_tensordict(
    episodes: Iterable[Any], observation_keys: tuple[str | tuple[str, ...], ...] | None = None
) -> TensorDict:
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
        o = _flatten_observation(ep.observations, observation_keys)
        t = len(ep.rewards)
        if o.shape[0] != t + 1:
            raise OfflineDatasetError(
                f"episode {i}: {o.shape[0]} observations for {t} steps (expected steps + 1)."
            )
        cols["obs"].append(o[:-1])
        cols["next"].append(o[1:])
        cols["act"].append(np.asarray(ep.actions).reshape(t, -1))
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
    return ted_tensordict(cat["obs"], cat["act"], cat["next"], cat["rew"], cat["term"], cat["trunc"], cat["ep"])


def renumber_episodes(td: TensorDict) -> TensorDict:
    """Renumber the (grouped) ``episode`` ids densely, 0, 1, 2, ..., in place; returns ``td``.

    Examples:
        >>> td = TensorDict({"episode": torch.tensor([3, 3, 7, 9])}, [4])
        >>> renumber_episodes(td)["episode"].tolist()
        [0, 0, 1, 2]
    """
    _, td["episode"] = torch.unique_consecutive(td["episode"], return_inverse=True)
    return td


def count_episodes(td: TensorDict) -> int:
    """Number of episodes of a densely numbered TED TensorDict (0 when it is empty).

    Examples:
        >>> count_episodes(TensorDict({"episode": torch.tensor([0, 0, 1])}, [3]))
        2
    """
    return int(td["episode"].max()) + 1 if td.shape[0] else 0


def check_finite(td: TensorDict, *, drop: bool, source: str) -> tuple[TensorDict, int]:
    """Raise (or drop the rows) when observations, actions or rewards hold NaN/inf.

    Dropping a row inside an episode breaks it in two: the kept row before the gap becomes a
    truncation and the rows after it get a new episode id, so ``next_obs[t] == obs[t + 1]`` still
    holds inside every episode.

    Args:
        td: a TED TensorDict.
        drop: drop the bad transitions instead of raising.
        source: the dataset's name, for the error message.

    Returns:
        ``(data, num_dropped)``; ``data`` is ``td`` itself when every value is finite.

    Raises:
        NonFiniteDataError: a value is NaN/inf and ``drop`` is false (the message counts them and names the first).

    Examples:
        >>> td = ted_tensordict(np.zeros((3, 1)), np.zeros((3, 1)), np.zeros((3, 1)), [0.0, float("nan"), 1.0],
        ...                     [False, False, True], [False] * 3, [0, 0, 0])
        >>> kept, n = check_finite(td, drop=True, source="demo")
        >>> n, kept["episode"].tolist(), kept["next", "truncated"][:, 0].tolist()
        (1, [0, 1], [True, False])
    """
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
    before_gap = torch.zeros_like(good)
    before_gap[:-1] = good[:-1] & ~good[1:] & (td["episode"][:-1] == td["episode"][1:])
    td = td.clone()
    truncated = td["next", "truncated"]
    truncated[before_gap] = True
    td["next", "done"] = td["next", "terminated"] | truncated
    # A new episode id after every dropped row or episode change.
    new_episode = torch.ones_like(good)
    new_episode[1:] = (td["episode"][1:] != td["episode"][:-1]) | ~good[:-1]
    td["episode"] = torch.cumsum(new_episode.long(), 0) - 1
    return renumber_episodes(td[good.nonzero().squeeze(-1)]), n_bad


def episode_returns(td: TensorDict) -> np.ndarray:
    """Undiscounted return of every episode, in episode-id order.

    Examples:
        >>> td = ted_tensordict(np.zeros((3, 1)), np.zeros((3, 1)), np.zeros((3, 1)), [1.0, 2.0, 5.0],
        ...                     [False, True, True], [False] * 3, [0, 0, 1])
        >>> episode_returns(td).tolist()
        [3.0, 5.0]
    """
    episode = td["episode"].numpy()
    reward = td["next", "reward"].reshape(-1).double().numpy()
    if episode.size == 0:
        return np.zeros(0)
    sums = np.bincount(episode, weights=reward)
    return sums[np.unique(episode)]


def mark_goal_terminals(td: TensorDict, *, goal_reward: float = 1.0) -> int:
    """Mark every transition rewarded ``goal_reward`` (a sparse goal reward) terminated, in place, as D4RL does.

    D4RL's AntMaze files set ``terminals`` on every step whose sparse reward is 1 (the ant within the goal radius),
    so the reference's critic (``not_done = 1 - terminals``) never bootstraps from a goal state. Minari's
    ``D4RL/antmaze`` files were recorded as a continuing task: the sparse reward is there, ``terminations`` never
    are. This restores the reference's semantics; episode ids and truncations are kept (a terminal masks
    bootstrapping, it does not cut the data), and ``done`` is recomputed.

    Args:
        td: a TED TensorDict with the raw (unshifted) rewards.

    Keyword Args:
        goal_reward: the reward of a goal step; every reward must be 0 or this value.

    Returns:
        How many transitions became terminated.

    Raises:
        OfflineDatasetError: the rewards are not sparse (some are neither 0 nor ``goal_reward``).

    Examples:
        >>> td = ted_tensordict(np.zeros((3, 1)), np.zeros((3, 1)), np.zeros((3, 1)), [0.0, 1.0, 1.0],
        ...                     [False] * 3, [False, False, True], [0, 0, 0])
        >>> mark_goal_terminals(td), td["next", "terminated"][:, 0].tolist(), td["next", "done"][:, 0].tolist()
        (2, [False, True, True], [False, True, True])
    """
    reward = td["next", "reward"]
    goal = reward == goal_reward  # exact: sparse rewards are stored as exactly 0.0 or 1.0
    other = ~goal & (reward != 0)
    if bool(other.any()):
        values = torch.unique(reward[other])[:5].tolist()
        raise OfflineDatasetError(
            f"goal terminals need sparse rewards (0 or {goal_reward}), found others such as {values}; "
            "set replay_buffer.goal_terminals=false for this dataset."
        )
    newly = goal & ~td["next", "terminated"]
    td["next", "terminated"] = td["next", "terminated"] | goal
    td["next", "done"] = td["next", "terminated"] | td["next", "truncated"]
    return int(newly.sum())
