"""Evaluation episodes: seeded rollouts of a policy in (batched) envs, and their return statistics.

:func:`evaluate` is the evaluation of this project: every episode of one call starts from env seeds fixed by
``seed`` and the policy draws from a private torch generator state seeded with ``seed``, so two evaluations of the
same policy see the same episodes and an evaluation never moves the caller's random stream. :func:`run_episodes`
is the same rollout loop returning the per-episode returns and lengths; :func:`evaluate_policies` evaluates several
acting modes on the same episodes.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple, TYPE_CHECKING

import numpy as np
import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.envs import EnvBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_dtql.evaluation.protocols import EvaluationProtocol, protocol_for, RETURN

if TYPE_CHECKING:
    from torchrl_dtql.data import OfflineDatasetInfo

__all__ = [
    "EpisodeResults",
    "evaluate",
    "evaluate_policies",
    "evaluation_env_steps",
    "first_episode_maxima",
    "first_episode_returns",
    "normalized_returns",
    "return_statistics",
    "run_episodes",
]

#: ``(mode, total env steps) -> a progress bar`` (a context manager with ``update(n)``), e.g. a ``tqdm`` factory.
ProgressFactory = Callable[[str, int], Any]


class EpisodeResults(NamedTuple):
    """Per-episode return (float64) and length (int64) of :func:`run_episodes`, on the CPU, and the largest value
    of each recorded info entry over the episode (``info_keys``: a success, a count of completed subtasks)."""

    returns: torch.Tensor
    lengths: torch.Tensor
    info: dict[str, torch.Tensor] = {}


def first_episode_returns(rollout: TensorDictBase) -> tuple[torch.Tensor, torch.Tensor]:
    """Return and length of each env's first episode in a ``[num_envs, time]`` rollout.

    Steps after an env's first ``done`` (repeated or reset data of a batched rollout) are ignored; an episode still
    running at the last step counts as it is.

    Examples:
        >>> from tensordict import TensorDict
        >>> done = torch.tensor([[False, True, False], [False, False, False]]).unsqueeze(-1)
        >>> rollout = TensorDict({"next": {"done": done, "reward": torch.ones(2, 3, 1)}}, batch_size=[2, 3])
        >>> first_episode_returns(rollout)
        (tensor([2., 3.], dtype=torch.float64), tensor([2, 3]))
    """
    done = rollout.get(("next", "done")).reshape(rollout.shape)
    reward = rollout.get(("next", "reward")).reshape(rollout.shape)
    horizon = done.shape[-1]
    never_done = torch.full_like(done[..., 0], horizon - 1, dtype=torch.long)
    first_done = torch.where(done.any(-1), done.int().argmax(-1), never_done)
    in_episode = torch.arange(horizon, device=done.device) <= first_done.unsqueeze(-1)
    return (reward * in_episode).sum(-1).double().cpu(), in_episode.sum(-1).cpu()


def first_episode_maxima(rollout: TensorDictBase, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The largest value of each ``("next", key)`` entry over each env's first episode of a ``[num_envs, time]``
    rollout (the reset's value included when the rollout holds it).

    Examples:
        >>> from tensordict import TensorDict
        >>> done = torch.tensor([[False, True, False], [False, False, False]])
        >>> success = torch.tensor([[False, False, True], [False, True, False]])
        >>> rollout = TensorDict({"next": {"done": done, "success": success}}, batch_size=[2, 3])
        >>> first_episode_maxima(rollout, ("success",))["success"].tolist()  # env 0 succeeded after its episode
        [0, 1]
    """
    done = rollout.get(("next", "done")).reshape(rollout.shape)
    horizon = done.shape[-1]
    never_done = torch.full_like(done[..., 0], horizon - 1, dtype=torch.long)
    first_done = torch.where(done.any(-1), done.int().argmax(-1), never_done)
    in_episode = torch.arange(horizon, device=done.device) <= first_done.unsqueeze(-1)
    maxima = {}
    for key in keys:
        value = rollout.get(("next", key)).reshape(rollout.shape).long()
        value = torch.where(in_episode, value, torch.full_like(value, torch.iinfo(torch.long).min))
        if key in rollout.keys():  # the value at reset
            value = torch.cat([rollout.get(key).reshape(rollout.shape)[..., :1].long(), value], -1)
        maxima[key] = value.max(-1).values.cpu()
    return maxima


def evaluation_env_steps(env: EnvBase, episodes: int, max_steps: int) -> int:
    """The env steps a ``progress`` bar of :func:`evaluate` reaches: ``max_steps`` per batch of envs.

    Examples:
        >>> from torchrl.envs import GymEnv, SerialEnv
        >>> evaluation_env_steps(SerialEnv(2, lambda: GymEnv("Pendulum-v1")), episodes=3, max_steps=10)
        20
    """
    return -(-episodes // _num_envs(env)) * max_steps


def run_episodes(
    env: EnvBase,
    policy: TensorDictModuleBase | None,
    *,
    episodes: int,
    max_steps: int,
    seed: int | None,
    device: torch.device | str | None = None,
    progress: Any = None,
    info_keys: tuple[str, ...] = (),
) -> EpisodeResults:
    """Rolls out ``episodes`` episodes of at most ``max_steps`` steps, under ``DETERMINISTIC`` and ``no_grad``.

    A batched env (``batch_size [num_envs]``) runs ``num_envs`` episodes per rollout, one per env (an env that is
    done waits for the others); an unbatched env runs one. With an int ``seed`` the env is reseeded with
    ``seed + first_episode`` before each rollout and the policy draws from torch's generator forked and seeded with
    ``seed`` (on the CPU, and on ``device`` when it is a CUDA device), restored afterwards. With ``seed=None`` the env
    and torch's generator simply continue their streams.

    Args:
        env: the evaluation env (e.g. :func:`~torchrl_dtql.evaluation.make_eval_env`), unbatched or ``[num_envs]``.
        policy: reads the env's observations, writes its action (``None``: random actions, as ``env.rollout``).

    Keyword Args:
        episodes: how many episodes.
        max_steps: the most steps of one episode.
        seed: the evaluation seed, or ``None`` (no reseeding, no private generator).
        device: the policy's device, whose CUDA generator is forked too (``None``: the CPU only).
        progress: a ``tqdm`` bar (optional), advanced by one per env step of each rollout, up to ``max_steps`` per
            rollout (:func:`evaluation_env_steps` in total).
        info_keys: integer or boolean entries each step records (a protocol's ``info_entries``, see
            :func:`~torchrl_dtql.evaluation.make_eval_env`); their per-episode maxima are in ``.info``.

    Examples:
        >>> from torchrl.envs import DoubleToFloat, GymEnv, TransformedEnv
        >>> env = TransformedEnv(GymEnv("Pendulum-v1"), DoubleToFloat())
        >>> results = run_episodes(env, None, episodes=2, max_steps=5, seed=0)  # None: random actions
        >>> results.lengths
        tensor([5, 5])
    """
    num_envs = _num_envs(env)
    device = torch.device("cpu") if device is None else torch.device(device)
    on_step = None if progress is None else (lambda env, tensordict: progress.update(1))
    returns, lengths, info = [], [], {key: [] for key in info_keys}
    seeded = seed is not None
    private_rng = torch.random.fork_rng(devices=[device.index or 0] if device.type == "cuda" else [], enabled=seeded)
    with private_rng, torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        if seeded:
            torch.manual_seed(seed)
        for first_episode in range(0, episodes, num_envs):
            if seeded:
                env.set_seed(seed + first_episode)
            rollout = env.rollout(
                max_steps,
                policy,
                auto_cast_to_device=True,
                break_when_any_done=False,
                break_when_all_done=True,
                callback=on_step,
            )
            if progress is not None:  # rollout calls back after each step but its last; add that one and any skipped
                progress.update(max_steps - rollout.shape[-1] + 1)
            batched = rollout if env.batch_size else rollout[None]
            episode_return, episode_length = first_episode_returns(batched)
            returns.append(episode_return)
            lengths.append(episode_length)
            missing = [key for key in info_keys if ("next", key) not in batched.keys(True)]
            if missing:
                raise ValueError(
                    f"the evaluation env records no {missing} (the protocol's info entries): build it with "
                    "torchrl_dtql.evaluation.make_eval_env, or pass a protocol that needs none."
                )
            for key, value in first_episode_maxima(batched, info_keys).items():
                info[key].append(value)
    return EpisodeResults(
        torch.cat(returns)[:episodes],
        torch.cat(lengths)[:episodes],
        {key: torch.cat(values)[:episodes] for key, values in info.items()},
    )


def normalized_returns(info: OfflineDatasetInfo | None, returns: np.ndarray) -> np.ndarray | None:
    """The dataset's 0-100 normalized scores of raw returns, or ``None`` when no reference scores are known."""
    return RETURN.score(returns, {}, info)


def return_statistics(values: np.ndarray | None) -> dict[str, float | None]:
    """``mean``, ``std`` (ddof 1; 0 for one value) and ``stderr`` of per-episode values (all ``None`` for ``None``).

    Examples:
        >>> return_statistics(np.array([1.0, 3.0]))
        {'mean': 2.0, 'std': 1.4142135623730951, 'stderr': 1.0}
    """
    if values is None:
        return {"mean": None, "std": None, "stderr": None}
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return {"mean": float(values.mean()), "std": std, "stderr": std / math.sqrt(len(values))}


def evaluate(
    env: EnvBase,
    policy: TensorDictModuleBase | None,
    *,
    episodes: int,
    max_steps: int,
    seed: int,
    info: OfflineDatasetInfo | None = None,
    device: torch.device | str | None = None,
    progress: Any = None,
    protocol: EvaluationProtocol | None = None,
) -> dict[str, Any]:
    """Runs ``episodes`` evaluation episodes (:func:`run_episodes`) and returns raw and normalized statistics.

    The env is reseeded with ``seed`` (plus the episode offset) every time and the policy draws from a private torch
    generator state seeded with ``seed``, so every evaluation sees the same initial states and the caller's random
    stream is left untouched (a training run evaluates identically whatever its evaluation interval).

    Keyword Args:
        episodes, max_steps, seed, device, progress: as :func:`run_episodes`.
        info: the dataset's metadata, for normalized scores (``None``, or no reference scores: those are ``None``).
        protocol: how an episode is scored (default: :func:`~torchrl_dtql.evaluation.protocols.protocol_for` the
            dataset): the normalized return, D4RL's AntMaze success rate, Kitchen's subtask count, ...

    Returns:
        ``{"return": stats, "normalized_score": stats, "episode_length": mean length, "episodes": count,
        "protocol": name}``, where ``stats`` is :func:`return_statistics`'s ``mean`` / ``std`` / ``stderr`` over the
        episodes, plus the stats of the protocol's metrics (``"success"``, ``"tasks_completed"``).

    Examples:
        >>> from torchrl.envs import DoubleToFloat, GymEnv, TransformedEnv
        >>> env = TransformedEnv(GymEnv("Pendulum-v1"), DoubleToFloat())
        >>> result = evaluate(env, None, episodes=2, max_steps=5, seed=0)
        >>> result["episodes"], result["episode_length"], result["normalized_score"]["mean"]
        (2, 5.0, None)
    """
    protocol = protocol if protocol is not None else protocol_for(info)
    results = run_episodes(
        env, policy, episodes=episodes, max_steps=max_steps, seed=seed, device=device, progress=progress,
        info_keys=tuple(protocol.info_entries),
    )  # fmt: skip
    raw = results.returns.numpy()
    values = {key: value.numpy() for key, value in results.info.items()}
    result = {
        "return": return_statistics(raw),
        "normalized_score": return_statistics(protocol.score(raw, values, info)),
        "episode_length": float(results.lengths.numpy().mean()),
        "episodes": int(len(raw)),
        "protocol": protocol.name,
    }
    for key in protocol.metrics:
        result[key] = return_statistics(values[key].astype(np.float64))
    return result


def evaluate_policies(
    env: EnvBase,
    policies: Mapping[str, TensorDictModuleBase | None],
    *,
    progress: ProgressFactory | None = None,
    **kwargs: Any,
) -> dict[str, dict[str, Any]]:
    """``{mode: evaluate(env, policy, ...)}`` for several acting modes, each on the same seeded episodes.

    Keyword Args:
        progress: ``progress(mode, total_env_steps)`` makes one bar per mode (e.g. ``tqdm`` with a label), used as a
            context manager and passed to :func:`evaluate`.
        **kwargs: the keyword arguments of :func:`evaluate` (``episodes``, ``max_steps``, ``seed``, ...).

    Examples:
        >>> from torchrl.envs import DoubleToFloat, GymEnv, TransformedEnv
        >>> env = TransformedEnv(GymEnv("Pendulum-v1"), DoubleToFloat())
        >>> results = evaluate_policies(env, {"random": None}, episodes=1, max_steps=3, seed=0)
        >>> results["random"]["episode_length"]
        3.0
    """
    results = {}
    total = evaluation_env_steps(env, kwargs["episodes"], kwargs["max_steps"])
    for mode, policy in policies.items():
        with progress(mode, total) if progress is not None else contextlib.nullcontext() as bar:
            results[mode] = evaluate(env, policy, progress=bar, **kwargs)
    return results


def _num_envs(env: EnvBase) -> int:
    if len(env.batch_size) > 1:
        raise ValueError(f"evaluation envs are unbatched or [num_envs], got batch_size {tuple(env.batch_size)}.")
    return env.batch_size[0] if env.batch_size else 1
