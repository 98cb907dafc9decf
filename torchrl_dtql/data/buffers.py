"""Replay buffers over offline datasets, and the transforms shared with the evaluation env.

:func:`make_offline_replay_buffer` turns any source of :func:`load_offline_dataset` into a
TorchRL :class:`~torchrl.data.TensorDictReplayBuffer` over an immutable in-memory storage.
The same observation statistics can be applied to the evaluation env with
:func:`make_observation_norm`, and :func:`make_env_transforms` builds the whole chain the env
needs to look like the data (dict-observation concatenation, ``DoubleToFloat``, optional
``ObservationNorm``). :func:`check_env_compatibility` fails early when the env and the data
disagree on sizes.
"""
from __future__ import annotations

import os
from typing import Any, Literal

import torch
from tensordict import TensorDict

from .sources import OfflineDatasetError, OfflineDatasetInfo, load_offline_dataset

__all__ = [
    "make_offline_replay_buffer",
    "make_replay_buffer_from_tensordict",
    "observation_stats",
    "make_observation_norm",
    "make_env_transforms",
    "check_env_compatibility",
    "EnvCompatibilityError",
]

#: Floor of the observation std used by the normalisation (constant features stay finite).
OBS_SCALE_EPS = 1e-3


class EnvCompatibilityError(OfflineDatasetError):
    """The environment's observation/action sizes differ from the dataset's."""


def observation_stats(data: TensorDict, eps: float = OBS_SCALE_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and std (floored at ``eps``) of the dataset's ``observation`` column.

    Args:
        data: a TED TensorDict.
        eps: minimum std.

    Examples:
        >>> td = TensorDict({"observation": torch.tensor([[0.0, 1.0], [2.0, 1.0]])}, [2])
        >>> loc, scale = observation_stats(td)
        >>> loc.tolist(), scale.tolist()
        ([1.0, 1.0], [1.0, 0.0010000000474974513])
    """
    obs = data["observation"].double()
    loc = obs.mean(0)
    scale = obs.std(0, unbiased=False).clamp_min(eps)
    return loc.float(), scale.float()


def make_observation_norm(
    info_or_buffer: Any,
    in_keys: list | None = None,
):
    """An :class:`~torchrl.envs.ObservationNorm` with the dataset's statistics.

    Use it on the evaluation env so that it sees observations normalised exactly as the buffer
    returns them (``(obs - loc) / scale``).

    Args:
        info_or_buffer: an :class:`OfflineDatasetInfo` or a buffer from
            :func:`make_offline_replay_buffer`, built with ``observation_norm=True``.
        in_keys: keys to normalise; default ``["observation"]`` (an env transform also handles
            the ``("next", "observation")`` of its steps by itself).

    Raises:
        ValueError: the info carries no statistics.

    Examples:
        >>> rb = make_offline_replay_buffer(DEFAULT_DATASET, 256, observation_norm=True)  # doctest: +SKIP
        >>> env = TransformedEnv(GymEnv("Hopper-v5"), Compose(DoubleToFloat(),
        ...                      make_observation_norm(rb)))  # doctest: +SKIP
    """
    from torchrl.envs import ObservationNorm

    info = getattr(info_or_buffer, "metadata", info_or_buffer)
    if getattr(info, "obs_loc", None) is None or getattr(info, "obs_scale", None) is None:
        raise ValueError(
            "no observation statistics: build the buffer with observation_norm=True, or set "
            "info.obs_loc / info.obs_scale (see observation_stats)."
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


def _env_sizes(env_or_env_id: Any, observation_keys: tuple[str, ...] | None) -> tuple[int, int, str]:
    """(flat observation size, action size, description) of a gymnasium or TorchRL env or id.

    A TorchRL env whose ``"observation"`` already is the concatenation (see
    :func:`make_env_transforms`) is measured by that entry; a raw one with dict observations by
    the sum of ``observation_keys``.
    """
    import math

    if isinstance(env_or_env_id, str):
        import gymnasium as gym

        env = gym.make(env_or_env_id)
        try:
            return _env_sizes(env, observation_keys)[:2] + (env_or_env_id,)
        finally:
            env.close()
    env = env_or_env_id
    if hasattr(env, "observation_spec") and hasattr(env, "action_spec"):  # TorchRL EnvBase
        spec = env.observation_spec

        def size(k: str) -> int:
            return int(math.prod(spec[k].shape[env.batch_dims:]))

        keys = list(observation_keys) if observation_keys else ["observation"]
        from torchrl.envs import CatTensors

        t = getattr(env, "transform", None)
        transforms = list(t.transforms) if hasattr(t, "transforms") else ([t] if t is not None else [])
        transformed = any(isinstance(x, CatTensors) for x in transforms)
        if transformed or not all(k in spec.keys() for k in keys):
            obs = size("observation")
        else:
            obs = sum(size(k) for k in keys)
        act = int(math.prod(env.action_spec.shape[env.batch_dims:]))
        return obs, act, type(env).__name__
    import gymnasium as gym

    space = env.observation_space
    if isinstance(space, gym.spaces.Dict):
        keys = list(observation_keys) if observation_keys else list(space.spaces)
        obs = sum(int(math.prod(space[k].shape)) for k in keys)
    else:
        obs = int(math.prod(space.shape))
    act = int(math.prod(env.action_space.shape))
    return obs, act, getattr(getattr(env, "spec", None), "id", type(env).__name__)


def check_env_compatibility(info: OfflineDatasetInfo | Any, env_or_env_id: Any = None) -> None:
    """Raise :class:`EnvCompatibilityError` if the env's observation/action sizes differ from the data's.

    Args:
        info: an :class:`OfflineDatasetInfo`, or a buffer carrying one as ``.metadata``.
        env_or_env_id: a gymnasium id (made and closed here), a gymnasium env, or a TorchRL env.
            Default: ``info.env_id``.

    Examples:
        >>> td, info = load_offline_dataset(DEFAULT_DATASET)  # doctest: +SKIP
        >>> check_env_compatibility(info, "Hopper-v5")  # doctest: +SKIP
        >>> check_env_compatibility(info, "HalfCheetah-v5")  # doctest: +SKIP
        Traceback (most recent call last):
        EnvCompatibilityError: ...
    """
    info = getattr(info, "metadata", info)
    if env_or_env_id is None:
        env_or_env_id = info.env_id
    if env_or_env_id is None:
        raise EnvCompatibilityError(f"dataset {info.dataset_id!r} names no env; pass the env to check against.")
    obs, act, name = _env_sizes(env_or_env_id, info.observation_keys)
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


def make_replay_buffer_from_tensordict(
    data: TensorDict,
    batch_size: int,
    *,
    sampler: Literal["random", "without_replacement"] = "random",
    drop_last: bool = True,
    prefetch: int | None = None,
    device: torch.device | str | None = None,
):
    """Wrap a TED TensorDict in an immutable :class:`~torchrl.data.TensorDictReplayBuffer`.

    Args:
        data: the transitions (kept as they are, moved to ``device`` if given).
        batch_size: samples per ``rb.sample()``.
        sampler: ``"random"`` (uniform with replacement, as the DTQL reference) or
            ``"without_replacement"`` (epochs; iterating over the buffer ends after one pass).
        drop_last: with ``"without_replacement"``, skip the last incomplete batch.
        prefetch: number of batches prefetched in a background thread.
        device: where the storage (hence every sample) lives.

    Examples:
        >>> td = TensorDict({"observation": torch.arange(10.0)[:, None]}, [10])
        >>> rb = make_replay_buffer_from_tensordict(td, 4, sampler="without_replacement")
        >>> sum(b.shape[0] for b in rb)
        8
    """
    from torchrl.data import TensorDictReplayBuffer, TensorStorage
    from torchrl.data.replay_buffers import ImmutableDatasetWriter, RandomSampler, SamplerWithoutReplacement

    if sampler == "random":
        smp = RandomSampler()
    elif sampler == "without_replacement":
        smp = SamplerWithoutReplacement(drop_last=drop_last)
    else:
        raise ValueError(f"sampler must be 'random' or 'without_replacement', got {sampler!r}.")
    if device is not None:
        data = data.to(device)
    return TensorDictReplayBuffer(
        storage=TensorStorage(data, device=data.device if data.device is not None else "cpu"),
        sampler=smp,
        writer=ImmutableDatasetWriter(),
        batch_size=batch_size,
        prefetch=prefetch,
    )


def make_offline_replay_buffer(
    source: str | os.PathLike,
    batch_size: int,
    *,
    sampler: Literal["random", "without_replacement"] = "random",
    drop_last: bool = True,
    prefetch: int | None = None,
    device: torch.device | str | None = None,
    observation_norm: bool = False,
    reward_shift: float = 0.0,
    drop_nonfinite: bool = False,
):
    """A TorchRL replay buffer over a whole offline dataset, in the TED layout.

    Samples are TensorDicts of ``batch_size`` transitions holding ``observation``, ``action``,
    ``episode``, ``index`` and ``("next", "observation" | "reward" | "terminated" | "truncated"
    | "done")``, float32, flags ``[B, 1]``.

    Args:
        source: anything :func:`load_offline_dataset` accepts (a Minari id, a D4RL HDF5 path, a
            Minari folder, :data:`DEFAULT_DATASET`).
        batch_size: samples per ``rb.sample()`` / per iteration.

    Keyword Args:
        sampler: ``"random"`` (with replacement, as the DTQL reference) or
            ``"without_replacement"`` (``SamplerWithoutReplacement(drop_last=drop_last)``).
        drop_last: see ``sampler``.
        prefetch: batches prefetched in a background thread (``None``: none).
        device: device of the storage and of the samples.
        observation_norm: append an :class:`~torchrl.envs.ObservationNorm` (dataset mean/std, std
            floored at ``1e-3``) on ``observation`` and ``("next", "observation")``. Off by
            default, as in the reference. The statistics are kept in ``rb.metadata.obs_loc`` /
            ``obs_scale``; apply them to the eval env with :func:`make_observation_norm`.
        reward_shift: added to every reward (``-1.0`` for AntMaze).
        drop_nonfinite: drop transitions holding NaN/inf instead of raising.

    Returns:
        A :class:`~torchrl.data.TensorDictReplayBuffer` whose ``.metadata`` is the
        :class:`OfflineDatasetInfo`.

    Examples:
        >>> from torchrl_dtql.data import DEFAULT_DATASET, make_offline_replay_buffer
        >>> rb = make_offline_replay_buffer(DEFAULT_DATASET, 256)  # doctest: +SKIP
        >>> batch = rb.sample()  # doctest: +SKIP
        >>> batch["next", "terminated"].shape, rb.metadata.env_id  # doctest: +SKIP
        (torch.Size([256, 1]), 'Hopper-v5')
    """
    data, info = load_offline_dataset(source, drop_nonfinite=drop_nonfinite, reward_shift=reward_shift)
    rb = make_replay_buffer_from_tensordict(
        data, batch_size, sampler=sampler, drop_last=drop_last, prefetch=prefetch, device=device
    )
    if observation_norm:
        loc, scale = observation_stats(data)
        info = info.replace(obs_loc=loc, obs_scale=scale)
        norm = make_observation_norm(info, in_keys=["observation", ("next", "observation")])
        if device is not None:
            norm = norm.to(device)
        rb.append_transform(norm)
    rb.metadata = info
    return rb
