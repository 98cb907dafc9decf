"""The 2D bandit as offline-RL data: a TED TensorDict with a constant zero state, and the toy action spec.

As in the reference toy: ``observation = next_observation = 0`` (1-dim), the reward of each data action, and no
terminations (``not_done = 1``), so the TD target bootstraps onto ``V(0)``; that only adds a constant to Q, whose
ranking stays that of the reward.

Examples:
    >>> import torch
    >>> actions = torch.randn(5, 2)
    >>> batch = make_bandit_batch(actions, actions.norm(dim=-1))
    >>> batch["observation"].shape, batch["next", "reward"].shape, bool(batch["next", "terminated"].any())
    (torch.Size([5, 1]), torch.Size([5, 1]), False)
    >>> toy_action_spec(actions).shape
    torch.Size([2])
"""
from __future__ import annotations

import torch
from tensordict import TensorDict
from torch import Tensor
from torchrl.data import Bounded

__all__ = ["make_bandit_batch", "toy_action_spec", "TOY_OBSERVATION_DIM"]

TOY_OBSERVATION_DIM = 1


def make_bandit_batch(actions: Tensor, rewards: Tensor) -> TensorDict:
    """The whole dataset as one TED batch: zero observations, the actions, ``("next", "reward")``, no done flags.

    Args:
        actions: ``[N, action_dim]`` data actions.
        rewards: ``[N]`` or ``[N, 1]`` rewards.
    """
    num_points = actions.shape[0]
    observation = actions.new_zeros(num_points, TOY_OBSERVATION_DIM)
    flags = torch.zeros(num_points, 1, dtype=torch.bool, device=actions.device)
    return TensorDict(
        observation=observation,
        action=actions,
        next=TensorDict(
            observation=observation.clone(),
            reward=rewards.reshape(num_points, 1).to(actions),
            done=flags,
            terminated=flags.clone(),
            truncated=flags.clone(),
            batch_size=[num_points],
        ),
        batch_size=[num_points],
    )


def toy_action_spec(actions: Tensor) -> Bounded:
    """``Bounded(-b, b)`` with ``b = max |a|`` over the data, the reference toy policy's ``max_action``."""
    bound = float(actions.abs().max())
    return Bounded(-bound, bound, shape=(actions.shape[-1],), dtype=torch.float32)
