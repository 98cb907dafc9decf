"""2D action datasets of the DTQL trust-region study (``dtql_spec.md`` section 7), with a registry to add more.

Each dataset is a cloud of 2D actions; the toy problem is a contextual bandit with a single context (the state is
a constant 0). A dataset may name its *mode centres* (the 25 Gaussians do; the swiss roll does not): the metrics
use them to count covered modes and to locate the best mode of a reward.

Examples:
    >>> import torch
    >>> data = make_toy_dataset("25gaussians", 1000, generator=torch.Generator().manual_seed(0))
    >>> data.actions.shape, data.mode_centres.shape
    (torch.Size([1000, 2]), torch.Size([25, 2]))
    >>> "swissroll" in toy_dataset_names()
    True
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "ToyDataset",
    "ToyDatasetSpec",
    "make_toy_dataset",
    "register_toy_dataset",
    "toy_dataset_from_actions",
    "toy_dataset_names",
    "sample_25_gaussians",
    "sample_ring",
    "sample_swiss_roll",
    "GRID_CENTRES_25",
    "RING_CENTRES_8",
]

GAUSSIAN_GRID_STD = 0.3
SWISS_ROLL_NOISE = 0.1

# the 5 x 5 grid of means at {-10, -5, 0, 5, 10}^2
_GRID_AXIS = torch.linspace(-10.0, 10.0, 5)
GRID_CENTRES_25 = torch.cartesian_prod(_GRID_AXIS, _GRID_AXIS)
RING_STD = 0.05
# 8 modes on the unit circle, mode k at angle 2 pi k / 8 (mode 0 at (1, 0))
RING_CENTRES_8 = torch.tensor([[math.cos(math.pi * k / 4), math.sin(math.pi * k / 4)] for k in range(8)])


@dataclass(frozen=True)
class ToyDataset:
    """A sampled 2D dataset.

    Attributes:
        name: the registry name.
        actions: the data points, ``[N, 2]`` float32.
        mode_centres: ``[K, 2]`` centres of the data's modes, or ``None`` for a continuous manifold.
    """

    name: str
    actions: Tensor
    mode_centres: Tensor | None

    @property
    def action_bound(self) -> float:
        """``max |a|`` over the data: the toy policy's symmetric action bound."""
        return float(self.actions.abs().max())


@dataclass(frozen=True)
class ToyDatasetSpec:
    """How to draw a registered dataset.

    Attributes:
        sample: ``sample(num_points, generator) -> [num_points, 2]`` float32 actions.
        mode_centres: the centres of its modes, or ``None``.
    """

    sample: Callable[[int, torch.Generator | None], Tensor]
    mode_centres: Tensor | None = None


_REGISTRY: dict[str, ToyDatasetSpec] = {}


def register_toy_dataset(
    name: str,
    sample: Callable[[int, torch.Generator | None], Tensor],
    *,
    mode_centres: Tensor | None = None,
    overwrite: bool = False,
) -> None:
    """Adds a 2D dataset to the registry used by :func:`make_toy_dataset` and ``examples/toy_2d.py``.

    Args:
        name: the name to register under (used by ``dataset=<name>`` in the example).
        sample: ``sample(num_points, generator) -> Tensor[num_points, 2]``.

    Keyword Args:
        mode_centres: ``[K, 2]`` centres of the modes, if the data has discrete modes.
        overwrite: replace an existing entry instead of raising.

    Examples:
        >>> import torch
        >>> def ring(n, generator=None):
        ...     angle = torch.rand(n, generator=generator) * 2 * torch.pi
        ...     return 5 * torch.stack([angle.cos(), angle.sin()], -1)
        >>> register_toy_dataset("ring", ring, overwrite=True)
        >>> make_toy_dataset("ring", 10).actions.shape
        torch.Size([10, 2])
    """
    if name in _REGISTRY and not overwrite:
        raise ValueError(f"A toy dataset named {name!r} is already registered (pass overwrite=True to replace it).")
    centres = None if mode_centres is None else torch.as_tensor(mode_centres, dtype=torch.float32).reshape(-1, 2)
    _REGISTRY[name] = ToyDatasetSpec(sample=sample, mode_centres=centres)


def toy_dataset_names() -> list[str]:
    """The names of the registered datasets."""
    return list(_REGISTRY)


def make_toy_dataset(name: str, num_points: int = 10_000, *, generator: torch.Generator | None = None) -> ToyDataset:
    """Draws ``num_points`` actions of a registered dataset.

    Args:
        name: a registered name (``"25gaussians"``, ``"swissroll"`` or one added by :func:`register_toy_dataset`).
        num_points: how many points (the reference uses 10,000).

    Keyword Args:
        generator: the RNG (``None``: torch's global RNG).
    """
    if name not in _REGISTRY:
        raise KeyError(f"Unknown toy dataset {name!r}; registered: {toy_dataset_names()}.")
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}.")
    spec = _REGISTRY[name]
    actions = torch.as_tensor(spec.sample(num_points, generator), dtype=torch.float32)
    if actions.shape != (num_points, 2):
        raise ValueError(f"Toy dataset {name!r} returned shape {tuple(actions.shape)}, expected ({num_points}, 2).")
    return ToyDataset(name=name, actions=actions, mode_centres=spec.mode_centres)


def toy_dataset_from_actions(name: str, actions: Tensor) -> ToyDataset:
    """A :class:`ToyDataset` of a registered kind from saved actions (e.g. to score samples written by the example).

    Examples:
        >>> import torch
        >>> toy_dataset_from_actions("25gaussians", torch.zeros(3, 2)).mode_centres.shape
        torch.Size([25, 2])
    """
    if name not in _REGISTRY:
        raise KeyError(f"Unknown toy dataset {name!r}; registered: {toy_dataset_names()}.")
    actions = torch.as_tensor(actions, dtype=torch.float32)
    if actions.ndim != 2 or actions.shape[-1] != 2:
        raise ValueError(f"Toy datasets hold [N, 2] actions, got shape {tuple(actions.shape)}.")
    return ToyDataset(name=name, actions=actions, mode_centres=_REGISTRY[name].mode_centres)


def sample_25_gaussians(num_points: int, generator: torch.Generator | None = None) -> Tensor:
    """Equal-weight isotropic Gaussians (std 0.3) on the 5 x 5 grid ``{-10, -5, 0, 5, 10}^2``.

    Points are assigned to modes in turn, so every mode gets ``num_points // 25`` or one more.
    """
    mode = torch.arange(num_points) % GRID_CENTRES_25.shape[0]
    noise = torch.randn(num_points, 2, generator=generator)
    return GRID_CENTRES_25[mode] + GAUSSIAN_GRID_STD * noise


def sample_ring(num_points: int, generator: torch.Generator | None = None) -> Tensor:
    """Equal-weight isotropic Gaussians (std 0.05) at the 8 points of the unit circle :data:`RING_CENTRES_8`: the
    bandit of the self-tuning trust-region weight's tests (with the ``angle`` reward)."""
    mode = torch.arange(num_points) % RING_CENTRES_8.shape[0]
    return RING_CENTRES_8[mode] + RING_STD * torch.randn(num_points, 2, generator=generator)


def sample_swiss_roll(num_points: int, generator: torch.Generator | None = None) -> Tensor:
    """scikit-learn's ``make_swiss_roll(n, noise=0.1)`` projected on its ``(x, z)`` columns.

    ``t = 1.5 pi (1 + 2u)`` with ``u ~ U(0, 1)``, the point is ``(t cos t, t sin t)`` plus N(0, 0.1^2) noise: a
    spiral from radius ``1.5 pi`` (about 4.7, the inner tip) to ``4.5 pi`` (about 14.1, the outer tip).
    """
    t = 1.5 * math.pi * (1 + 2 * torch.rand(num_points, generator=generator))
    points = torch.stack([t * torch.cos(t), t * torch.sin(t)], dim=-1)
    return points + SWISS_ROLL_NOISE * torch.randn(num_points, 2, generator=generator)


register_toy_dataset("25gaussians", sample_25_gaussians, mode_centres=GRID_CENTRES_25)
register_toy_dataset("swissroll", sample_swiss_roll)
register_toy_dataset("ring", sample_ring, mode_centres=RING_CENTRES_8)
