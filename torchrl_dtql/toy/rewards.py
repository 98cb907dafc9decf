"""Rewards of the 2D bandit (``dtql_spec.md`` section 7.1), with a registry to add more.

A reward is a function ``reward(actions, data) -> Tensor[N]`` of the actions ``[N, 2]`` to score and the dataset's
actions ``[M, 2]`` (``near`` needs the data's largest norm). With ``n = ||a||_2``:

- ``far``: ``r = n``: the further from the origin, the better (four equally good corners on the 25 Gaussians).
- ``near``: ``r = max_data(n) - n``: the origin is best.
- ``hard``: ``r = n``, doubled where ``a_x < -7.5`` and ``a_y > 7.5``: only the top-left corner is best.
- ``same``: ``r = 0``.

Examples:
    >>> import torch
    >>> data = torch.tensor([[0.0, 0.0], [-10.0, 10.0], [10.0, 10.0]])
    >>> make_toy_reward("hard")(data, data)
    tensor([ 0.0000, 28.2843, 14.1421])
    >>> make_toy_reward("near")(data, data)
    tensor([14.1421,  0.0000,  0.0000])
"""
from __future__ import annotations

import math

from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["ToyReward", "make_toy_reward", "register_toy_reward", "toy_reward_names"]

ToyReward = Callable[[Tensor, Tensor], Tensor]

HARD_CORNER_X_MAX = -7.5  # the "hard" bonus region: a_x < -7.5 and a_y > 7.5 (the top-left mode)
HARD_CORNER_Y_MIN = 7.5
HARD_CORNER_FACTOR = 2.0

_REGISTRY: dict[str, ToyReward] = {}


def register_toy_reward(name: str, reward: ToyReward, *, overwrite: bool = False) -> None:
    """Adds a reward ``reward(actions [N, 2], data [M, 2]) -> [N]`` to the registry.

    Examples:
        >>> register_toy_reward("right", lambda actions, data: actions[:, 0], overwrite=True)
        >>> make_toy_reward("right")(torch.tensor([[3.0, 1.0]]), torch.zeros(1, 2))
        tensor([3.])
    """
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"A toy reward named {name!r} is already registered (pass overwrite=True to replace it).")
    _REGISTRY[name] = reward


def toy_reward_names() -> list[str]:
    """The names of the registered rewards."""
    return list(_REGISTRY)


def make_toy_reward(name: str) -> ToyReward:
    """The registered reward function ``reward(actions, data) -> Tensor[N]``."""
    if name not in _REGISTRY:
        raise KeyError(f"Unknown toy reward {name!r}; registered: {toy_reward_names()}.")
    return _REGISTRY[name]


def far_reward(actions: Tensor, data: Tensor) -> Tensor:
    """``r = ||a||``."""
    return actions.norm(dim=-1)


def near_reward(actions: Tensor, data: Tensor) -> Tensor:
    """``r = max_data ||a'|| - ||a||``."""
    return data.norm(dim=-1).max() - actions.norm(dim=-1)


def hard_reward(actions: Tensor, data: Tensor) -> Tensor:
    """``r = ||a||``, doubled in the top-left corner ``a_x < -7.5, a_y > 7.5``."""
    in_corner = (actions[..., 0] < HARD_CORNER_X_MAX) & (actions[..., 1] > HARD_CORNER_Y_MIN)
    norm = actions.norm(dim=-1)
    return torch.where(in_corner, HARD_CORNER_FACTOR * norm, norm)


def angle_reward(actions: Tensor, data: Tensor) -> Tensor:
    """``r = -2 |angle(a)| / pi``: 0 along the positive x axis (mode 0 of the ring), -2 opposite it, -0.5 at the ring's
    neighbouring modes; the radius does not count."""
    return -2.0 * torch.atan2(actions[..., 1], actions[..., 0]).abs() / math.pi


def same_reward(actions: Tensor, data: Tensor) -> Tensor:
    """``r = 0``: pure behaviour cloning."""
    return actions.new_zeros(actions.shape[:-1])


register_toy_reward("far", far_reward)
register_toy_reward("near", near_reward)
register_toy_reward("hard", hard_reward)
register_toy_reward("same", same_reward)
register_toy_reward("angle", angle_reward)
