"""``DTQLOptimizationStepper``: DTQL's pretraining and three-optimizer update as a TorchRL ``OptimizationStepper``."""
from __future__ import annotations

from typing import Any, TYPE_CHECKING

import torch
from tensordict import TensorDictBase
from torch.optim.lr_scheduler import CosineAnnealingLR
from torchrl.trainers import OptimizationStepper

from torchrl_dtql.objectives.update import dtql_update_step, DTQLOptimizers

if TYPE_CHECKING:
    from torchrl.trainers import Trainer

__all__ = ["DTQLOptimizationStepper", "MAIN_PHASE_ONLY_KEYS"]

#: Entries of :func:`~torchrl_dtql.dtql_update_step`'s output that only the main phase produces. The stepper reports
#: them as zeros while pretraining, because the Trainer averages its steps' outputs key by key and needs the same keys
#: at every step.
MAIN_PHASE_ONLY_KEYS = ("loss_actor", "trust_region", "min_q_actor", "nll_data", "policy_std")


class DTQLOptimizationStepper(OptimizationStepper):
    """One DTQL gradient step per call: pretraining first, then the reference's critic/diffusion/actor update.

    The first ``pretrain_steps`` calls update the diffusion model and the critic only (the reference's pretraining
    phase; no actor step, no target update). Every later call runs the main phase of
    :func:`~torchrl_dtql.dtql_update_step`: critic step, diffusion step, actor step (with the critic and diffusion
    model just updated), then ``trainer.target_net_updater.step()`` and, with ``lr_decay_steps``, one step of the
    cosine learning-rate decay of all three optimizers (the reference's ``lr_decay``, which starts with the main
    phase). The stepper owns the optimizers, the schedulers and its step counter, so all are saved with the trainer's
    checkpoints and a resumed run continues in the right phase.

    Args:
        optimizers: the three optimizers (:func:`~torchrl_dtql.make_dtql_optimizers`).

    Keyword Args:
        pretrain_steps: number of diffusion + critic steps before the first actor step (reference: 50_000).
        lr_decay_steps: if given, the learning rates of the three optimizers follow a cosine from their initial
            value to 0 over this many main-phase steps (reference: the number of main-phase steps, on the tasks
            whose preset has ``lr_decay``). ``None``: constant learning rates.

    Examples:
        >>> from torchrl_dtql import DTQLLoss, make_dtql_modules, make_dtql_optimizers
        >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=16), alpha=1.0)
        >>> stepper = DTQLOptimizationStepper(make_dtql_optimizers(loss), pretrain_steps=2)
        >>> stepper.in_pretraining
        True
    """

    def __init__(
        self, optimizers: DTQLOptimizers, *, pretrain_steps: int = 0, lr_decay_steps: int | None = None
    ) -> None:
        if not isinstance(optimizers, DTQLOptimizers):
            raise TypeError(
                "DTQLOptimizationStepper needs a DTQLOptimizers (critic, diffusion, actor), e.g. from "
                f"make_dtql_optimizers(loss); got {type(optimizers).__name__}."
            )
        if pretrain_steps < 0:
            raise ValueError(f"pretrain_steps must be >= 0, got {pretrain_steps}.")
        if lr_decay_steps is not None and lr_decay_steps < 1:
            raise ValueError(f"lr_decay_steps must be >= 1 or None, got {lr_decay_steps}.")
        self.optimizers = optimizers
        self.pretrain_steps = int(pretrain_steps)
        self.lr_decay_steps = lr_decay_steps
        self.lr_schedulers = (
            None
            if lr_decay_steps is None
            else [
                CosineAnnealingLR(optimizer, T_max=lr_decay_steps, eta_min=0.0)
                for optimizer in optimizers.network_optimizers()
            ]
        )
        self.update_count = 0

    @property
    def in_pretraining(self) -> bool:
        """Whether the next step is a pretraining (diffusion + critic only) step."""
        return self.update_count < self.pretrain_steps

    def step(self, trainer: Trainer, sub_batch: TensorDictBase) -> TensorDictBase:
        """Runs one pretraining or main-phase step on ``sub_batch`` and returns its detached losses.

        The output always holds the same keys: the main-phase-only ones are zeros during pretraining, and
        ``pretraining`` is 1.0 for a pretraining step and 0.0 otherwise (its average over a logging window is the
        fraction of pretraining steps in it).
        """
        pretrain = self.in_pretraining
        target_updater = None if pretrain else trainer.target_net_updater
        out = dtql_update_step(
            trainer.loss_module, self.optimizers, sub_batch, pretrain=pretrain, target_updater=target_updater
        )
        self.update_count += 1
        if not pretrain and self.lr_schedulers is not None:
            for scheduler in self.lr_schedulers:
                scheduler.step()
        zero = out["loss_qvalue"].new_zeros(())
        if pretrain:
            for key in MAIN_PHASE_ONLY_KEYS:
                out.set(key, zero)
        out.set("pretraining", zero + float(pretrain))
        return out

    def state_dict(self) -> dict[str, Any]:
        state = {"update_count": self.update_count, "optimizers": self.optimizers.state_dict()}
        if self.lr_schedulers is not None:
            state["lr_schedulers"] = [scheduler.state_dict() for scheduler in self.lr_schedulers]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.update_count = int(state_dict["update_count"])
        self.optimizers.load_state_dict(state_dict["optimizers"])
        if self.lr_schedulers is not None:
            for scheduler, scheduler_state in zip(self.lr_schedulers, state_dict["lr_schedulers"]):
                scheduler.load_state_dict(scheduler_state)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(pretrain_steps={self.pretrain_steps}, lr_decay_steps={self.lr_decay_steps}, "
            f"update_count={self.update_count}, "
            f"lr=(critic={self._lr(self.optimizers.critic)}, diffusion={self._lr(self.optimizers.diffusion)}, "
            f"actor={self._lr(self.optimizers.actor)}))"
        )

    @staticmethod
    def _lr(optimizer: torch.optim.Optimizer) -> float:
        return optimizer.param_groups[0]["lr"]
