"""Metrics of policy samples on a 2D bandit: best-mode hits, support, mean reward, covered modes.

Examples:
    >>> import torch
    >>> from torchrl_dtql.toy import make_toy_dataset, make_toy_reward
    >>> data = make_toy_dataset("25gaussians", 2500, generator=torch.Generator().manual_seed(0))
    >>> reward = make_toy_reward("near")
    >>> samples = torch.zeros(100, 2)  # all at the origin, the best mode of "near"
    >>> m = toy_policy_metrics(samples, data, reward)
    >>> m["fraction_best_mode"], m["fraction_in_support"], m["modes_covered"]
    (1.0, 1.0, 1)
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from torchrl_dtql.toy.datasets import ToyDataset
from torchrl_dtql.toy.rewards import ToyReward

__all__ = ["best_modes", "nearest_distance", "toy_policy_metrics", "SUPPORT_RADIUS", "MODE_COVER_MIN_FRACTION"]

SUPPORT_RADIUS = 1.0  # a sample "hits" a point when it lies within this distance of it
MODE_COVER_MIN_FRACTION = 0.005  # a mode is covered when at least this fraction of the samples hit it (5 of 1000)
BEST_MODE_RTOL = 1e-3  # centres whose reward is within this relative tolerance of the best are all "best"
_CHUNK = 2048


def nearest_distance(points: Tensor, reference: Tensor) -> Tensor:
    """The distance from each of ``points [N, 2]`` to its nearest row of ``reference [M, 2]``, computed in chunks."""
    reference = reference.to(points)
    return torch.cat([torch.cdist(chunk, reference).amin(-1) for chunk in points.split(_CHUNK)])


def best_modes(data: ToyDataset, reward: ToyReward) -> Tensor:
    """The location(s) of the highest-reward mode, ``[K, 2]``.

    For data with mode centres, every centre whose reward is within ``BEST_MODE_RTOL`` of the best centre's
    (four corners for ``far`` on the 25 Gaussians). Otherwise the single data point of highest reward (for the swiss
    roll: the outer tip for ``far``, the inner tip for ``near``).

    Examples:
        >>> from torchrl_dtql.toy import make_toy_dataset, make_toy_reward
        >>> data = make_toy_dataset("25gaussians", 100)
        >>> best_modes(data, make_toy_reward("far")).abs().tolist()
        [[10.0, 10.0], [10.0, 10.0], [10.0, 10.0], [10.0, 10.0]]
    """
    if data.mode_centres is not None:
        centre_reward = reward(data.mode_centres, data.actions)
        best = centre_reward.max()
        keep = centre_reward >= best - BEST_MODE_RTOL * best.abs().clamp_min(1.0)
        return data.mode_centres[keep]
    data_reward = reward(data.actions, data.actions)
    return data.actions[data_reward.argmax()].unsqueeze(0)


def toy_policy_metrics(
    samples: Tensor,
    data: ToyDataset,
    reward: ToyReward,
    *,
    radius: float = SUPPORT_RADIUS,
    mode_cover_min_fraction: float = MODE_COVER_MIN_FRACTION,
) -> dict[str, Any]:
    """Scores policy samples against the data they were trained on.

    Args:
        samples: policy actions ``[N, 2]``.
        data: the dataset.
        reward: the reward function.

    Keyword Args:
        radius: the hit distance (1.0).
        mode_cover_min_fraction: the fraction of samples a mode needs within ``radius`` to count as covered.

    Returns:
        a JSON-ready dict: ``fraction_best_mode`` (samples within ``radius`` of a best mode, see
        :func:`best_modes`), ``fraction_in_support`` (within ``radius`` of some data point), ``mean_reward``,
        ``modes_covered`` (``None`` for data without mode centres), ``num_modes``, ``num_samples``,
        ``best_modes`` (their coordinates).
    """
    samples = samples.detach().float().cpu()
    if samples.ndim != 2 or samples.shape[-1] != 2:
        raise ValueError(f"toy_policy_metrics needs samples of shape [N, 2], got {tuple(samples.shape)}.")
    best = best_modes(data, reward)
    hits_best = nearest_distance(samples, best) <= radius
    in_support = nearest_distance(samples, data.actions) <= radius
    modes_covered = None
    num_modes = None
    if data.mode_centres is not None:
        num_modes = int(data.mode_centres.shape[0])
        hits_per_mode = (torch.cdist(samples, data.mode_centres) <= radius).sum(0)
        min_hits = max(1, round(mode_cover_min_fraction * samples.shape[0]))
        modes_covered = int((hits_per_mode >= min_hits).sum())
    return {
        "fraction_best_mode": float(hits_best.float().mean()),
        "fraction_in_support": float(in_support.float().mean()),
        "mean_reward": float(reward(samples, data.actions).mean()),
        "modes_covered": modes_covered,
        "num_modes": num_modes,
        "num_samples": int(samples.shape[0]),
        "best_modes": best.tolist(),
    }
