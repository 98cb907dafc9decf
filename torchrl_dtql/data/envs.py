"""Gymnasium and TorchRL envs as the data sees them: env ids, spaces -> specs, sizes, and the eval transforms.

The loaders use it to name the env a dataset is evaluated in (:func:`env_id_for_name`, :data:`D4RL_FAMILY_ENV`)
and to turn its spaces into TorchRL specs (:func:`make_specs`, :func:`dict_observation_keys`). The
evaluation side uses :func:`check_env_compatibility` (fail early when the env and the data disagree on sizes) and
:func:`make_env_transforms` (dict-observation concatenation, ``DoubleToFloat``, optional ``ObservationNorm``), so
that the env produces observations exactly like the replay buffer's.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch

from .info import EnvCompatibilityError, OfflineDatasetError, OfflineDatasetInfo

__all__ = [
    "D4RL_FAMILY_ENV",
    "env_id_for_name",
    "dict_observation_keys",
    "observation_leaf",
    "make_specs",
    "env_sizes",
    "check_env_compatibility",
    "make_observation_norm",
    "make_env_transforms",
]

#: The gymnasium env to evaluate D4RL-family data in, when the data does not say.
D4RL_FAMILY_ENV = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5", "walker2d": "Walker2d-v5", "ant": "Ant-v5"}


def env_id_for_name(name: str) -> str | None:
    """The gymnasium env id whose lower-cased name (without version) is ``name``, newest version first.

    The inverse of :func:`~torchrl_dtql.data.local_ids.dataset_id_for`'s naming; ``None`` when no env matches.

    Examples:
        >>> env_id_for_name("hopper"), env_id_for_name("no-such-env")
        ('Hopper-v5', None)
    """
    if name in D4RL_FAMILY_ENV:
        return D4RL_FAMILY_ENV[name]
    import gymnasium as gym

    matches = []
    for env_id in gym.envs.registry:
        base, _, version = env_id.split("/")[-1].rpartition("-v")
        if base.lower() == name and version.isdigit():
            matches.append((int(version), env_id))
    return max(matches)[1] if matches else None


def dict_observation_keys(space: Any) -> tuple[str | tuple[str, ...], ...] | None:
    """Order of concatenation for dict observations: observation, achieved_goal, desired_goal, then the rest sorted.

    A nested ``Dict`` (FrankaKitchen-v1's per-task goals) contributes its leaves, each as the tuple path of its keys,
    sorted by name inside its parent; ``None`` for a space that is not a ``gymnasium.spaces.Dict``.

    Examples:
        >>> import gymnasium as gym
        >>> box = gym.spaces.Box(-1.0, 1.0, (2,))
        >>> dict_observation_keys(gym.spaces.Dict({"z": box, "desired_goal": box, "observation": box}))
        ('observation', 'desired_goal', 'z')
        >>> goals = gym.spaces.Dict({"kettle": box, "microwave": box})
        >>> dict_observation_keys(gym.spaces.Dict({"observation": box, "achieved_goal": goals}))
        ('observation', ('achieved_goal', 'kettle'), ('achieved_goal', 'microwave'))
        >>> dict_observation_keys(box) is None
        True
    """
    import gymnasium as gym

    if not isinstance(space, gym.spaces.Dict):
        return None
    keys = list(space.spaces.keys())
    first = [k for k in ("observation", "achieved_goal", "desired_goal") if k in keys]
    ordered = first + sorted(k for k in keys if k not in first)
    leaves: list[str | tuple[str, ...]] = []
    for key in ordered:
        sub = space.spaces[key]
        if isinstance(sub, gym.spaces.Dict):
            nested = dict_observation_keys(gym.spaces.Dict(dict(sorted(sub.spaces.items()))))
            leaves += [(key, *(k if isinstance(k, tuple) else (k,))) for k in nested]
        else:
            leaves.append(key)
    return tuple(leaves)


def observation_leaf(observation: Any, key: str | tuple[str, ...] | list[str]) -> Any:
    """The entry of a (nested) dict observation at ``key``, a name or a path of names.

    Examples:
        >>> observation_leaf({"achieved_goal": {"kettle": [1.0]}}, ("achieved_goal", "kettle"))
        [1.0]
    """
    if isinstance(key, str):
        return observation[key]
    for part in key:
        observation = observation[part]
    return observation


def make_specs(observation_size: int, action_space: Any) -> tuple[Any, Any]:
    """``(Unbounded observation spec, Bounded action spec)``, float32: a flat observation and a ``Box`` action.

    Args:
        observation_size: size of the flat (concatenated) observation.
        action_space: a gymnasium ``Box``; its bounds become the action spec's.

    Raises:
        OfflineDatasetError: the action space is not continuous (``Box``).

    Examples:
        >>> import gymnasium as gym
        >>> observation_spec, action_spec = make_specs(11, gym.spaces.Box(-2.0, 2.0, (3,)))
        >>> observation_spec.shape, action_spec.space.high.tolist()
        (torch.Size([11]), [2.0, 2.0, 2.0])
    """
    import gymnasium as gym
    from torchrl.data import Bounded, Unbounded

    if not isinstance(action_space, gym.spaces.Box):
        raise OfflineDatasetError(f"only continuous (Box) action spaces are supported, got {action_space}.")
    low = torch.as_tensor(np.asarray(action_space.low, dtype=np.float32)).reshape(-1)
    high = torch.as_tensor(np.asarray(action_space.high, dtype=np.float32)).reshape(-1)
    action_spec = Bounded(low=low, high=high, shape=(low.numel(),), dtype=torch.float32)
    observation_spec = Unbounded(shape=(observation_size,), dtype=torch.float32)
    return observation_spec, action_spec


def env_sizes(
    env_or_env_id: Any,
    observation_keys: tuple[str | tuple[str, ...], ...] | None = None,
    env_kwargs: dict[str, Any] | None = None,
) -> tuple[int, int, str]:
    """``(flat observation size, action size, description)`` of a gymnasium or TorchRL env, or of a gymnasium id.

    A TorchRL env whose ``"observation"`` already is the concatenation (see :func:`make_env_transforms`) is
    measured by that entry; a raw one with dict observations by the sum of ``observation_keys``.

    Args:
        env_or_env_id: a gymnasium id (made, with ``env_kwargs``, and closed here), a gymnasium env, or a TorchRL env.
        observation_keys: for dict observations, the keys the data concatenates.
        env_kwargs: ``gymnasium.make`` keyword arguments for an id (they can change the observation: a kitchen's
            ``tasks_to_complete``).

    Raises:
        EnvCompatibilityError: the env's observation lacks one of ``observation_keys``.

    Examples:
        >>> env_sizes("Hopper-v5")
        (11, 3, 'Hopper-v5')
    """
    if isinstance(env_or_env_id, str):
        import gymnasium as gym

        env = gym.make(env_or_env_id, **dict(env_kwargs or {}))
        try:
            return env_sizes(env, observation_keys)[:2] + (env_or_env_id,)
        finally:
            env.close()
    env = env_or_env_id
    if hasattr(env, "observation_spec") and hasattr(env, "action_spec"):  # TorchRL EnvBase
        from torchrl.envs import CatTensors

        spec = env.observation_spec

        def size(key: str) -> int:
            return int(math.prod(spec[key].shape[env.batch_dims:]))

        keys = list(observation_keys) if observation_keys else ["observation"]
        t = getattr(env, "transform", None)
        transforms = list(t.transforms) if hasattr(t, "transforms") else ([t] if t is not None else [])
        concatenated = any(isinstance(x, CatTensors) for x in transforms)
        if concatenated or not all(k in spec.keys(True) for k in keys):
            obs = size("observation")
        else:
            obs = sum(size(k) for k in keys)
        act = int(math.prod(env.action_spec.shape[env.batch_dims:]))
        return obs, act, type(env).__name__
    import gymnasium as gym

    space = env.observation_space
    if isinstance(space, gym.spaces.Dict):
        keys = list(observation_keys) if observation_keys else list(dict_observation_keys(space))
        try:
            obs = sum(int(math.prod(observation_leaf(space, k).shape)) for k in keys)
        except KeyError as err:
            raise EnvCompatibilityError(
                f"the env's observation has no entry {err.args[0]!r} of the dataset's observation keys {keys}; "
                f"its keys are {list(dict_observation_keys(space))}."
            ) from None
    else:
        obs = int(math.prod(space.shape))
    act = int(math.prod(env.action_space.shape))
    return obs, act, getattr(getattr(env, "spec", None), "id", type(env).__name__)


def check_env_compatibility(
    info: OfflineDatasetInfo | Any, env_or_env_id: Any = None, env_kwargs: dict[str, Any] | None = None
) -> None:
    """Raise :class:`~torchrl_dtql.data.EnvCompatibilityError` if the env's observation/action sizes differ from the data's.

    Args:
        info: an :class:`~torchrl_dtql.data.OfflineDatasetInfo`, or a buffer carrying one as ``.metadata``.
        env_or_env_id: a gymnasium id (made and closed here), a gymnasium env, or a TorchRL env.
            Default: ``info.env_id``, made with ``info.env_kwargs``.
        env_kwargs: ``gymnasium.make`` keyword arguments for an id given here.

    Examples:
        >>> from torchrl_dtql.data import DEFAULT_DATASET, load_offline_dataset
        >>> td, info = load_offline_dataset(DEFAULT_DATASET)  # doctest: +SKIP
        >>> check_env_compatibility(info, "Hopper-v5")  # doctest: +SKIP
        >>> check_env_compatibility(info, "HalfCheetah-v5")  # doctest: +SKIP
        Traceback (most recent call last):
        EnvCompatibilityError: ...
    """
    info = getattr(info, "metadata", info)
    if env_or_env_id is None:
        env_or_env_id, env_kwargs = info.env_id, getattr(info, "env_kwargs", None)
    if env_or_env_id is None:
        raise EnvCompatibilityError(f"dataset {info.dataset_id!r} names no env; pass the env to check against.")
    obs, act, name = env_sizes(env_or_env_id, info.observation_keys, env_kwargs)
    problems = []
    if obs != info.observation_size:
        problems.append(f"observation size {obs} in the env vs {info.observation_size} in the data")
    if act != info.action_size:
        problems.append(f"action size {act} in the env vs {info.action_size} in the data")
    if problems:
        raise EnvCompatibilityError(
            f"env {name} does not match dataset {info.dataset_id!r}: " + "; ".join(problems)
            + f". The dataset was recorded in {info.env_id!r}."
        )


def make_observation_norm(info_or_buffer: Any, in_keys: list | None = None):
    """An :class:`~torchrl.envs.ObservationNorm` with the dataset's statistics.

    Use it on the evaluation env so that it sees observations normalised exactly as the buffer
    returns them (``(obs - loc) / scale``).

    Args:
        info_or_buffer: an :class:`~torchrl_dtql.data.OfflineDatasetInfo` or a buffer from
            :func:`~torchrl_dtql.data.make_offline_replay_buffer`, built with ``observation_norm=True``.
        in_keys: keys to normalise; default ``["observation"]`` (an env transform also handles
            the ``("next", "observation")`` of its steps by itself).

    Raises:
        ValueError: the info carries no statistics.

    Examples:
        >>> from torchrl_dtql.data import DEFAULT_DATASET, make_offline_replay_buffer
        >>> rb = make_offline_replay_buffer(DEFAULT_DATASET, 256, observation_norm=True)  # doctest: +SKIP
        >>> env = TransformedEnv(GymEnv("Hopper-v5"), Compose(DoubleToFloat(),
        ...                      make_observation_norm(rb)))  # doctest: +SKIP
    """
    from torchrl.envs import ObservationNorm

    info = getattr(info_or_buffer, "metadata", info_or_buffer)
    if getattr(info, "obs_loc", None) is None or getattr(info, "obs_scale", None) is None:
        raise ValueError(
            "no observation statistics: build the buffer with observation_norm=True, or set "
            "info.obs_loc / info.obs_scale (see torchrl_dtql.data.observation_stats)."
        )
    return ObservationNorm(
        loc=info.obs_loc.clone(),
        scale=info.obs_scale.clone(),
        in_keys=list(in_keys) if in_keys is not None else ["observation"],
        standard_normal=True,
    )


def make_env_transforms(info: OfflineDatasetInfo, *, observation_norm: bool = False):
    """The transforms an evaluation env needs to produce observations like the dataset's.

    ``CatTensors`` for dict observations (in ``info.observation_keys`` order, into
    ``"observation"``), then ``DoubleToFloat``, then (if asked) the dataset's ``ObservationNorm``.

    Args:
        info: the dataset metadata.
        observation_norm: append :func:`make_observation_norm` (``info`` must carry statistics).

    Returns:
        A :class:`~torchrl.envs.Compose`.

    Examples:
        >>> from torchrl_dtql.data import DEFAULT_DATASET, make_offline_replay_buffer
        >>> rb = make_offline_replay_buffer(DEFAULT_DATASET, 256)  # doctest: +SKIP
        >>> env = TransformedEnv(GymEnv(rb.metadata.env_id), make_env_transforms(rb.metadata))  # doctest: +SKIP
    """
    from torchrl.envs import CatTensors, Compose, DoubleToFloat

    transforms = []
    if info.observation_keys is not None:
        transforms.append(
            CatTensors(in_keys=list(info.observation_keys), out_key="observation", del_keys=False, sort=False)
        )
    transforms.append(DoubleToFloat())
    if observation_norm:
        transforms.append(make_observation_norm(info))
    return Compose(*transforms)
