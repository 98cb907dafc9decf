"""Hydra YAML -> TensorDict keys, with the same reading as TorchRL's trainer configs."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from omegaconf import ListConfig
from tensordict.utils import NestedKey

__all__ = ["hydra_keys"]


def _hydra_key(key: Any) -> NestedKey:
    if isinstance(key, (list, tuple, ListConfig)):
        key = tuple(key)
        return key[0] if len(key) == 1 else key
    return key


def hydra_keys(keys: Sequence[Any] | None) -> list[NestedKey] | None:
    """A YAML list of keys as TensorDict keys: ``[observation]`` -> ``["observation"]``, ``[[next, obs]]`` -> ``[("next", "obs")]``.

    Examples:
        >>> hydra_keys(["observation", ["next", "observation"]])
        ['observation', ('next', 'observation')]
    """
    return None if keys is None else [_hydra_key(key) for key in keys]
