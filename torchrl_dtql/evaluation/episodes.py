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

if TYPE_CHECKING:
    from torchrl_dtql.data import OfflineDatasetInfo

__all__ = [
    "EpisodeResults",
    "evaluate",
    "evaluate_policies",
    "evaluation_env_steps",
    "first_episode_returns",
    "normalized_returns",
    "return_statistics",
    "run_episodes",
]

#: ``(mode, total env steps) -> a progress bar`` (a context manager with ``update(n)``), e.g. a ``tqdm`` factory.
ProgressFactory = Callable[[str, int], Any]


class EpisodeResults(NamedTuple):
    """Per-episode return (float64) and length (int64) of :func:`run_episodes`, on the CPU."""

    returns: torch.Tensor
    lengths: torch.Tensor


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
    returns, lengths = [], []
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
            episode_return, episode_length = first_episode_returns(rollout if env.batch_size else rollout[None])
            returns.append(episode_return)
            lengths.append(episode_length)
    return EpisodeResults(torch.cat(returns)[:episodes], torch.cat(lengths)[:episodes])


def normalized_returns(info: OfflineDatasetInfo | None, returns: np.ndarray) -> np.ndarray | None:
    """The dataset's 0-100 normalized scores of raw returns, or ``None`` when no reference scores are known."""
    if info is None:
        return None
    try:
        return np.asarray(info.normalized_score(returns), dtype=np.float64).reshape(-1)
    except KeyError:  # no reference scores known for this dataset / env
        return None


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
) -> dict[str, Any]:
    """Runs ``episodes`` evaluation episodes (:func:`run_episodes`) and returns raw and normalized statistics.

    The env is reseeded with ``seed`` (plus the episode offset) every time and the policy draws from a private torch
    generator state seeded with ``seed``, so every evaluation sees the same initial states and the caller's random
    stream is left untouched (a training run evaluates identically whatever its evaluation interval).

    Keyword Args:
        episodes, max_steps, seed, device, progress: as :func:`run_episodes`.
        info: the dataset's metadata, for normalized scores (``None``, or no reference scores: those are ``None``).

    Returns:
        ``{"return": stats, "normalized_score": stats, "episode_length": mean length, "episodes": count}``, where
        ``stats`` is :func:`return_statistics`'s ``mean`` / ``std`` / ``stderr`` over the episodes.

    Examples:
        >>> from torchrl.envs import DoubleToFloat, GymEnv, TransformedEnv
        >>> env = TransformedEnv(GymEnv("Pendulum-v1"), DoubleToFloat())
        >>> result = evaluate(env, None, episodes=2, max_steps=5, seed=0)
        >>> result["episodes"], result["episode_length"], result["normalized_score"]["mean"]
        (2, 5.0, None)
    """
    results = run_episodes(
        env, policy, episodes=episodes, max_steps=max_steps, seed=seed, device=device, progress=progress
    )
    raw = results.returns.numpy()
    return {
        "return": return_statistics(raw),
        "normalized_score": return_statistics(normalized_returns(info, raw)),
        "episode_length": float(results.lengths.numpy().mean()),
        "episodes": int(len(raw)),
    }


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
