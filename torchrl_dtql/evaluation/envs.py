"""Evaluation envs for an offline dataset: checked against the data, batched, observing what the dataset recorded."""
from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from torchrl.envs import EnvBase, EnvCreator, GymEnv, ParallelEnv, SerialEnv, TransformedEnv
from torchrl.envs.libs.gym import set_gym_backend

from torchrl_dtql.data import check_env_compatibility, make_env_transforms, OfflineDatasetError, OfflineDatasetInfo

__all__ = ["EvaluationEnvError", "make_eval_env", "make_single_eval_env", "register_robotics_envs"]


class EvaluationEnvError(ValueError):
    """The evaluation env cannot be named or built (the message says which and why)."""


def register_robotics_envs() -> bool:
    """Registers gymnasium-robotics' envs (AntMaze, Adroit, Kitchen) with gymnasium; ``False`` if not installed.

    Examples:
        >>> register_robotics_envs() in (True, False)
        True
    """
    return not robotics_install_hint()


def robotics_install_hint() -> str:
    """``""`` once gymnasium-robotics' envs are registered; else the hint that names the package extra to install."""
    try:
        import gymnasium
        import gymnasium_robotics
    except ImportError:
        return ' (AntMaze, Adroit and Kitchen envs need gymnasium-robotics: pip install "torchrl-dtql[robotics]")'
    gymnasium.register_envs(gymnasium_robotics)
    return ""


def make_single_eval_env(
    env_id: str, env_kwargs: Mapping[str, Any], backend: str, info: OfflineDatasetInfo, observation_norm: bool
) -> TransformedEnv:
    """One evaluation env: ``GymEnv(env_id)`` with the dataset's observation transforms (also run in the workers
    of a ``ParallelEnv``, hence a module-level function that registers the robotics envs itself).

    Examples:
        >>> env = make_single_eval_env("Hopper-v5", {}, "gymnasium", info, False)  # doctest: +SKIP
    """
    register_robotics_envs()
    with set_gym_backend(backend):
        env = GymEnv(env_id, **dict(env_kwargs))
    return TransformedEnv(env, make_env_transforms(info, observation_norm=observation_norm))


def make_eval_env(
    info: OfflineDatasetInfo,
    *,
    env_id: str | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    num_envs: int,
    parallel: bool = False,
    backend: str = "gymnasium",
    observation_norm: bool = False,
) -> EnvBase:
    """``num_envs`` evaluation envs stepped together, checked against the dataset before any is built.

    The env's observation and action sizes must match the dataset's
    (:func:`~torchrl_dtql.data.check_env_compatibility`). Each env applies the dataset's observation transforms
    (:func:`~torchrl_dtql.data.make_env_transforms`: dict concatenation, float32, optional normalisation), so
    policies trained on the data act on its observations.

    Args:
        info: the dataset's metadata (a replay buffer's ``.metadata``).

    Keyword Args:
        env_id: the gymnasium id; ``None``: the env recorded with the dataset (``info.env_id``).
        env_kwargs: extra ``gymnasium.make`` keyword arguments.
        num_envs: how many envs (a ``[num_envs]`` batch).
        parallel: a ``ParallelEnv`` (one process per env) instead of a ``SerialEnv``; the latter is faster on few
            cores.
        backend: the gym backend (``set_gym_backend``).
        observation_norm: normalise observations by the dataset's statistics (``info`` must carry them).

    Raises:
        EvaluationEnvError: no env id is known, or the env cannot be built (an unknown id, a missing package).
        EnvCompatibilityError: the env's sizes differ from the dataset's (a
            :class:`~torchrl_dtql.data.OfflineDatasetError`).

    Examples:
        >>> from torchrl_dtql.data import make_offline_replay_buffer, DEFAULT_DATASET
        >>> info = make_offline_replay_buffer(DEFAULT_DATASET, 256).metadata  # doctest: +SKIP
        >>> make_eval_env(info, num_envs=4).batch_size  # doctest: +SKIP
        torch.Size([4])
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}.")
    env_id = env_id or info.env_id
    if env_id is None:
        raise EvaluationEnvError(
            f"dataset {info.dataset_id!r} does not name the env it was recorded in; set env.name=<gymnasium id>."
        )
    install_hint = robotics_install_hint()
    try:
        check_env_compatibility(info, env_id)
    except OfflineDatasetError:
        raise
    except Exception as err:  # gymnasium raises its own error types for unknown or unbuildable envs
        raise EvaluationEnvError(
            f"env.name={env_id!r} cannot be built: {type(err).__name__}: {err}{install_hint}"
        ) from err
    make_env = functools.partial(make_single_eval_env, env_id, dict(env_kwargs or {}), backend, info, observation_norm)
    if parallel:
        return ParallelEnv(num_envs, EnvCreator(make_env), serial_for_single=True)
    return SerialEnv(num_envs, make_env)
