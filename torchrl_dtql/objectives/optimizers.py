"""The reference's three optimizers (critic, diffusion, actor) over a :class:`~torchrl_dtql.DTQLLoss`'s parameters.

Both update steps take them: :func:`~torchrl_dtql.dtql_update_step` (:mod:`torchrl_dtql.objectives.update`) and
:class:`~torchrl_dtql.DTQLUpdater` (:mod:`torchrl_dtql.objectives.fast_update`).

Examples:
    >>> from torchrl_dtql import DTQLLoss, make_dtql_modules
    >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=16), alpha=1.0)
    >>> sorted(make_dtql_optimizers(loss)._fields)
    ['actor', 'critic', 'diffusion']
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from tensordict import TensorDictBase

from torchrl_dtql.objectives.dtql import DTQLLoss

__all__ = ["CRITIC_LR", "DTQLOptimizers", "adam_options", "make_dtql_optimizers", "trainable_parameters"]

CRITIC_LR = 3e-4  # the reference's critic learning rate, whatever the task's lr


class DTQLOptimizers(NamedTuple):
    """The reference's three optimizers: critic (Q ensemble + V), diffusion (BC model) and actor (one-step policy)."""

    critic: torch.optim.Optimizer
    diffusion: torch.optim.Optimizer
    actor: torch.optim.Optimizer

    def state_dict(self) -> dict[str, dict]:
        """All three optimizer states, for checkpoints."""
        return {name: optimizer.state_dict() for name, optimizer in self._asdict().items()}

    def load_state_dict(self, state_dict: dict[str, dict]) -> None:
        """Restores the states written by :meth:`state_dict`."""
        for name, optimizer in self._asdict().items():
            optimizer.load_state_dict(state_dict[name])


def trainable_parameters(params: TensorDictBase) -> list[torch.Tensor]:
    """The leaves of a loss's parameter TensorDict that an optimizer should step (buffers left out).

    Examples:
        >>> from tensordict import TensorDict
        >>> params = TensorDict.from_module(torch.nn.BatchNorm1d(2))  # weight, bias and three buffers
        >>> len(trainable_parameters(params))
        2
    """
    return [p for p in params.values(True, True) if p.requires_grad]


def adam_options(params: list[torch.Tensor], adam_kwargs: dict) -> dict:
    """``adam_kwargs`` with the package's default implementation: ``fused=True`` when every parameter is on CPU or
    CUDA and neither ``fused`` nor ``foreach`` was chosen (one kernel per step; the same update as the for-loop Adam
    up to float rounding, and faster: ``benchmarks/bench_update.py``).

    Examples:
        >>> adam_options([torch.zeros(2, requires_grad=True)], {"eps": 1e-8})
        {'eps': 1e-08, 'fused': True}
    """
    if "fused" in adam_kwargs or "foreach" in adam_kwargs:
        return dict(adam_kwargs)
    return {**adam_kwargs, "fused": {p.device.type for p in params} <= {"cpu", "cuda"}}


def make_dtql_optimizers(
    loss: DTQLLoss,
    *,
    lr: float = 3e-4,
    actor_lr: float | None = None,
    diffusion_lr: float | None = None,
    critic_lr: float = CRITIC_LR,
    **adam_kwargs,
) -> DTQLOptimizers:
    """One Adam optimizer per DTQL part, over the loss's (functional) parameters.

    The reference uses the per-task ``lr`` for the actor and the diffusion model and a fixed ``3e-4`` for the critic.

    Args:
        loss: the :class:`~torchrl_dtql.DTQLLoss` whose parameters are optimised.

    Keyword Args:
        lr: learning rate of the actor and the diffusion model (the reference's per-task ``lr``).
        actor_lr: overrides ``lr`` for the actor.
        diffusion_lr: overrides ``lr`` for the diffusion model.
        critic_lr: learning rate of the Q ensemble and V (reference: 3e-4 whatever the task).
        **adam_kwargs: passed to every :class:`torch.optim.Adam`, fused unless ``fused`` or ``foreach`` is given
            (:func:`adam_options`).

    Examples:
        >>> from torchrl_dtql import DTQLLoss, make_dtql_modules
        >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=16), alpha=1.0)
        >>> optimizers = make_dtql_optimizers(loss, lr=1e-4)
        >>> optimizers.actor.param_groups[0]["lr"], optimizers.critic.param_groups[0]["lr"]
        (0.0001, 0.0003)
    """
    critic_params = trainable_parameters(loss.qvalue_network_params) + trainable_parameters(loss.value_network_params)
    diffusion_params = trainable_parameters(loss.diffusion_network_params)
    actor_params = trainable_parameters(loss.actor_network_params)
    adam_kwargs = adam_options(critic_params + diffusion_params + actor_params, adam_kwargs)
    return DTQLOptimizers(
        critic=torch.optim.Adam(critic_params, lr=critic_lr, **adam_kwargs),
        diffusion=torch.optim.Adam(diffusion_params, lr=lr if diffusion_lr is None else diffusion_lr, **adam_kwargs),
        actor=torch.optim.Adam(actor_params, lr=lr if actor_lr is None else actor_lr, **adam_kwargs),
    )
