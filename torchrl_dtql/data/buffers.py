"""Replay buffers over offline datasets.

:func:`make_offline_replay_buffer` turns any source of :func:`~torchrl_dtql.data.load_offline_dataset` into a
TorchRL :class:`~torchrl.data.TensorDictReplayBuffer` over an immutable in-memory storage, optionally normalising
observations with the dataset's statistics (:func:`observation_stats`). The evaluation env gets the same view from
:func:`~torchrl_dtql.data.make_env_transforms` (:mod:`torchrl_dtql.data.envs`).
"""
from __future__ import annotations

import os
from typing import Literal

import torch
from tensordict import TensorDict

from .envs import make_observation_norm
from .sources import load_offline_dataset

__all__ = ["make_offline_replay_buffer", "make_replay_buffer_from_tensordict", "observation_stats", "OBS_SCALE_EPS"]

#: Floor of the observation std used by the normalisation (constant features stay finite).
OBS_SCALE_EPS = 1e-3


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
    goal_terminals: bool = False,
):
    """A TorchRL replay buffer over a whole offline dataset, in the TED layout.

    Samples are TensorDicts of ``batch_size`` transitions holding ``observation``, ``action``,
    ``episode``, ``index`` and ``("next", "observation" | "reward" | "terminated" | "truncated"
    | "done")``, float32, flags ``[B, 1]``.

    Args:
        source: anything :func:`~torchrl_dtql.data.load_offline_dataset` accepts (a Minari id, a D4RL HDF5 path, a
            Minari folder, :data:`~torchrl_dtql.data.DEFAULT_DATASET`).
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
            ``obs_scale``; apply them to the eval env with :func:`~torchrl_dtql.data.make_observation_norm`.
        reward_shift: added to every reward (``-1.0`` for AntMaze).
        drop_nonfinite: drop transitions holding NaN/inf instead of raising.
        goal_terminals: mark sparse goal rewards terminated, as D4RL's AntMaze files do
            (:func:`~torchrl_dtql.data.load_offline_dataset`).

    Returns:
        A :class:`~torchrl.data.TensorDictReplayBuffer` whose ``.metadata`` is the
        :class:`~torchrl_dtql.data.OfflineDatasetInfo`.

    Examples:
        >>> from torchrl_dtql.data import DEFAULT_DATASET, make_offline_replay_buffer
        >>> rb = make_offline_replay_buffer(DEFAULT_DATASET, 256)  # doctest: +SKIP
        >>> batch = rb.sample()  # doctest: +SKIP
        >>> batch["next", "terminated"].shape, rb.metadata.env_id  # doctest: +SKIP
        (torch.Size([256, 1]), 'Hopper-v5')
    """
    data, info = load_offline_dataset(
        source, drop_nonfinite=drop_nonfinite, reward_shift=reward_shift, goal_terminals=goal_terminals
    )
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
