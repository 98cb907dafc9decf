"""The reference's three optimizers (critic, diffusion, actor) over a :class:`~torchrl_dtql.DTQLLoss`'s parameters.

Both update steps take them: :func:`~torchrl_dtql.dtql_update_step` (:mod:`torchrl_dtql.objectives.update`) and
:class:`~torchrl_dtql.DTQLUpdater` (:mod:`torchrl_dtql.objectives.fast_update`).

Examples:
    >>> from torchrl_dtql import DTQLLoss, make_dtql_modules
    >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=16), alpha=1.0)
    >>> sorted(make_dtql_optimizers(loss)._asdict())
    ['actor', 'critic', 'diffusion']
"""
from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import ClassVar

import torch
from tensordict import TensorDictBase
from torch import Tensor

from torchrl_dtql.objectives.dtql import DTQLLoss

__all__ = [
    "ALPHA_LR",
    "CRITIC_LR",
    "DTQLOptimizers",
    "adam_options",
    "alpha_step",
    "check_alpha_optimizer",
    "make_dtql_optimizers",
    "trainable_parameters",
]

CRITIC_LR = 3e-4  # the reference's critic learning rate, whatever the task's lr
#: Learning rate of ``log_alpha`` (``alpha="auto"``): Adam moves it by about this much per step, so alpha can change
#: by a factor of 20 in a thousand steps (SAC's 3e-4 would need ten thousand).
ALPHA_LR = 3e-3


@dataclasses.dataclass(frozen=True)
class DTQLOptimizers:
    """The reference's three optimizers: critic (Q ensemble + V), diffusion (BC model) and actor (one-step policy),
    plus the trust-region multiplier's (``log_alpha``) when the loss learns alpha (``alpha="auto"``), else ``None``.

    Iterating (and ``len``) gives the optimizers there are: the three, or four with a learnt alpha. ``_fields``,
    ``_asdict`` and ``_replace`` work as on a named tuple.
    """

    critic: torch.optim.Optimizer
    diffusion: torch.optim.Optimizer
    actor: torch.optim.Optimizer
    alpha: torch.optim.Optimizer | None = None

    _fields: ClassVar[tuple[str, ...]] = ("critic", "diffusion", "actor", "alpha")

    def __iter__(self) -> Iterator[torch.optim.Optimizer]:
        return iter(self.present().values())

    def __len__(self) -> int:
        return len(self.present())

    def _asdict(self) -> dict[str, torch.optim.Optimizer]:
        """The optimizers there are, by name (as :meth:`present`)."""
        return self.present()

    def _replace(self, **changes: torch.optim.Optimizer | None) -> DTQLOptimizers:
        return dataclasses.replace(self, **changes)

    def network_optimizers(self) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer, torch.optim.Optimizer]:
        """The three that step networks (critic, diffusion, actor): what a learning-rate schedule decays."""
        return self.critic, self.diffusion, self.actor

    def present(self) -> dict[str, torch.optim.Optimizer]:
        """``{name: optimizer}`` of the optimizers there are (``alpha`` only when the loss learns it)."""
        return {name: getattr(self, name) for name in self._fields if getattr(self, name) is not None}

    def state_dict(self) -> dict[str, dict]:
        """The optimizer states, for checkpoints."""
        return {name: optimizer.state_dict() for name, optimizer in self.present().items()}

    def load_state_dict(self, state_dict: dict[str, dict]) -> None:
        """Restores the states written by :meth:`state_dict`."""
        missing = sorted(set(self.present()) - set(state_dict))
        if missing:
            raise KeyError(
                f"The saved optimizer states have no {missing} entry: they were saved for a loss with a fixed alpha. "
                "Resume with the alpha setting the run was started with."
            )
        for name, optimizer in self.present().items():
            optimizer.load_state_dict(state_dict[name])


def check_alpha_optimizer(loss: DTQLLoss, optimizers: DTQLOptimizers) -> None:
    """Raises when the optimizers do not fit the loss's alpha: a learnt alpha needs ``optimizers.alpha``, a fixed one
    has none (both are what :func:`make_dtql_optimizers` builds)."""
    if loss.learns_log_alpha and optimizers.alpha is None:
        raise ValueError(
            "This DTQLLoss learns alpha as a multiplier (alpha='auto') but the optimizers have no 'alpha' optimizer: "
            "build them with make_dtql_optimizers(loss), which adds it."
        )
    if not loss.learns_log_alpha and optimizers.alpha is not None:
        raise ValueError("The optimizers step a learnt log_alpha, but this DTQLLoss has none (a fixed alpha, or "
                         "auto_alpha='q_scale').")


def alpha_step(
    loss: DTQLLoss, optimizer: torch.optim.Optimizer, trust_region: Tensor, loss_diffusion: Tensor, min_q: Tensor
) -> dict[str, Tensor]:
    """The multiplier's update (``alpha="auto"``), run by both update paths right after the actor's step.

    :meth:`~torchrl_dtql.DTQLLoss.initialize_alpha_` (the first time only, with ``alpha_init=None``), one step of
    ``optimizer`` on :meth:`~torchrl_dtql.DTQLLoss.alpha_loss`, then :meth:`~torchrl_dtql.DTQLLoss.refresh_alpha_`. Returns the detached diagnostics: ``alpha`` (the weight this step's
    actor objective used), ``trust_region_target`` and ``loss_alpha``.

    Examples:
        >>> from torchrl_dtql import DTQLLoss, make_dtql_modules
        >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=16), alpha="auto", alpha_init=1.0)
        >>> optimizers = make_dtql_optimizers(loss)
        >>> out = alpha_step(loss, optimizers.alpha, torch.tensor(2.0), torch.tensor(1.0), torch.tensor(5.0))
        >>> float(out["alpha"]), float(loss.alpha) > 1.0
        (1.0, True)
    """
    used = loss.alpha.detach().clone()
    loss.initialize_alpha_(min_q, trust_region)
    loss_alpha = loss.alpha_loss(trust_region, loss_diffusion)
    optimizer.zero_grad(set_to_none=True)
    loss_alpha.backward()
    optimizer.step()
    loss.refresh_alpha_()
    return {
        "loss_alpha": loss_alpha.detach(),
        "alpha": used,
        "trust_region_target": loss.trust_region_target(loss_diffusion),
    }


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
    alpha_lr: float = ALPHA_LR,
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
        alpha_lr: learning rate of ``log_alpha`` when the loss learns alpha as a multiplier (``alpha="auto"``,
            ``auto_alpha="multiplier"``; :data:`ALPHA_LR`).
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
        alpha=torch.optim.Adam([loss.log_alpha], lr=alpha_lr, **adam_kwargs) if loss.learns_log_alpha else None,
    )
