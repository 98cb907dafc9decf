"""The DTQL update step of the reference: three Adam optimizers stepped in the order critic, diffusion, actor."""
from __future__ import annotations

import warnings
from typing import NamedTuple, TYPE_CHECKING

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.objectives import SoftUpdate
from torchrl.objectives.value import TD0Estimator

from torchrl_dtql.objectives.dtql import DTQLLoss

if TYPE_CHECKING:
    from torchrl_dtql.objectives.fast_update import DTQLUpdater

__all__ = ["DTQLOptimizers", "cached_updater", "dtql_update_step", "make_dtql_optimizers"]

CRITIC_LR = 3e-4


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


def _trainable(params: TensorDictBase) -> list[torch.Tensor]:
    return [p for p in params.values(True, True) if p.requires_grad]


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
        **adam_kwargs: passed to every :class:`torch.optim.Adam`. Unless ``fused`` or ``foreach`` is given, the
            optimizers are ``fused=True`` (one kernel per step, on CPU and CUDA; the same update as the default
            implementation up to float rounding, and faster: ``benchmarks/bench_update.py``).

    Examples:
        >>> from torchrl_dtql import DTQLLoss, make_dtql_modules
        >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=16), alpha=1.0)
        >>> optimizers = make_dtql_optimizers(loss, lr=1e-4)
        >>> optimizers.actor.param_groups[0]["lr"], optimizers.critic.param_groups[0]["lr"]
        (0.0001, 0.0003)
    """
    critic_params = _trainable(loss.qvalue_network_params) + _trainable(loss.value_network_params)
    diffusion_params = _trainable(loss.diffusion_network_params)
    actor_params = _trainable(loss.actor_network_params)
    if "fused" not in adam_kwargs and "foreach" not in adam_kwargs:
        devices = {p.device.type for p in critic_params + diffusion_params + actor_params}
        adam_kwargs["fused"] = devices <= {"cpu", "cuda"}  # one kernel per step; same update as the for-loop Adam
    return DTQLOptimizers(
        critic=torch.optim.Adam(critic_params, lr=critic_lr, **adam_kwargs),
        diffusion=torch.optim.Adam(diffusion_params, lr=lr if diffusion_lr is None else diffusion_lr, **adam_kwargs),
        actor=torch.optim.Adam(actor_params, lr=lr if actor_lr is None else actor_lr, **adam_kwargs),
    )


def _step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


_LOSS_METHODS = ("qvalue_loss", "value_loss", "diffusion_loss", "actor_loss", "_check_inputs")


def _fast_path_reason(loss: DTQLLoss) -> str | None:
    """Why :class:`DTQLUpdater` cannot stand in for the plain step on ``loss`` (``None``: it can)."""
    overridden = [name for name in _LOSS_METHODS if getattr(type(loss), name) is not getattr(DTQLLoss, name)]
    if overridden:
        return f"{type(loss).__name__} overrides {overridden}"
    if not isinstance(loss.value_estimator, TD0Estimator):
        return f"the value estimator is {type(loss.value_estimator).__name__}, not TD0"
    return None


def _parameter_device(loss: DTQLLoss) -> torch.device:
    return next(iter(loss.actor_network_params.values(True, True))).device


def cached_updater(
    loss: DTQLLoss, optimizers: DTQLOptimizers, target_updater: SoftUpdate | None = None
) -> DTQLUpdater | None:
    """The eager :class:`~torchrl_dtql.objectives.fast_update.DTQLUpdater` that ``dtql_update_step`` uses for this
    loss, optimizers and target updater, built on first use and kept on the loss; ``None`` where the fast path does
    not apply (a subclass overriding a loss method, a value estimator other than TD0, networks it cannot bind).

    An updater is rebuilt when any of the three objects is replaced, the loss's parameters move to another device,
    or its value estimator, keys or reduction change. The cache is not saved with the loss (``state_dict``, pickling, ``deepcopy``).

    Examples:
        >>> from torchrl_dtql import DTQLLoss, make_dtql_modules, make_dtql_optimizers
        >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=16), alpha=1.0)
        >>> optimizers = make_dtql_optimizers(loss)
        >>> cached_updater(loss, optimizers) is cached_updater(loss, optimizers)
        True
    """
    from torchrl_dtql.objectives.fast_update import DTQLUpdater

    cache: dict = loss.__dict__.setdefault(DTQLLoss._UPDATER_CACHE, {})
    key = (
        *(id(optimizer) for optimizer in optimizers),
        id(target_updater),
        _parameter_device(loss),
        id(loss.value_estimator),
        tuple(loss.in_keys),
        loss.reduction,
    )
    updater = cache.get(key)
    # the updater holds the optimizers and the target updater, so their ids cannot be reused while it is cached
    if updater is not None:
        return updater or None
    if _fast_path_reason(loss) is not None:
        cache[key] = False
        return None
    try:
        updater = DTQLUpdater(loss, optimizers, target_updater=target_updater, validate=False)
    except (AttributeError, KeyError, TypeError, ValueError) as err:  # networks of another structure
        warnings.warn(
            f"dtql_update_step: the fast path does not fit these networks ({type(err).__name__}: {err}); using the "
            "plain path (same result, slower). Pass fast=False to silence this.",
            stacklevel=3,
        )
        cache[key] = False
        return None
    cache.clear()  # an updater per loss: anything older refers to replaced optimizers, devices or keys
    cache[key] = updater
    return updater


def dtql_update_step(
    loss: DTQLLoss,
    optimizers: DTQLOptimizers,
    batch: TensorDictBase,
    *,
    pretrain: bool = False,
    target_updater: SoftUpdate | None = None,
    fast: bool = True,
) -> TensorDictBase:
    """One DTQL training step on one batch, in the reference order; returns the detached losses (no host sync).

    Main phase: (1) critic: ``loss_qvalue + loss_value`` -> critic step; (2) diffusion: ``loss_diffusion`` ->
    diffusion step; (3) actor: ``loss_actor``, computed with the critic and diffusion model just updated -> actor
    step; (4) ``target_updater.step()`` (Polyak update of the target critic) if given.
    Pretraining (``pretrain=True``): the diffusion and critic steps only, no target update.

    By default (``fast=True``) the step runs through an eager
    :class:`~torchrl_dtql.objectives.fast_update.DTQLUpdater` cached on the loss (see :func:`cached_updater`): the
    same losses, gradients and random draws, with the critic and diffusion backward fused, one twin-Q forward less
    and no TensorDict plumbing in the hot path. ``fast=False`` runs the four public loss methods and three backward
    passes one after the other, the reference's structure (the two agree to float rounding; ``test_fast_update.py``).
    The batch is checked by the loss's own input checks on every call, on both paths.

    Args:
        loss: the :class:`~torchrl_dtql.DTQLLoss`.
        optimizers: from :func:`make_dtql_optimizers`.
        batch: a TED batch.

    Keyword Args:
        pretrain: skip the actor and the target update (the reference's 50k-step pretraining phase).
        target_updater: e.g. ``SoftUpdate(loss, tau=0.005)``, stepped after each main-phase step.
        fast: use the cached fast updater where it applies (a loss subclass overriding a loss method, or a value
            estimator other than TD0, always takes the plain path).

    Returns:
        a TensorDict with ``loss_qvalue``, ``loss_value``, ``loss_diffusion`` and ``pred_value`` (and
        ``loss_actor`` plus the actor diagnostics in the main phase), all detached.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl_dtql import DTQLLoss, make_dtql_modules
        >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=16), alpha=1.0)
        >>> optimizers = make_dtql_optimizers(loss)
        >>> batch = TensorDict(observation=torch.randn(4, 3), action=torch.zeros(4, 2), next=TensorDict(
        ...     observation=torch.randn(4, 3), reward=torch.ones(4, 1), done=torch.zeros(4, 1, dtype=torch.bool),
        ...     terminated=torch.zeros(4, 1, dtype=torch.bool), batch_size=[4]), batch_size=[4])
        >>> sorted(dtql_update_step(loss, optimizers, batch, pretrain=True).keys())
        ['loss_diffusion', 'loss_qvalue', 'loss_value', 'pred_value']
    """
    if loss.reduction == "none":
        raise ValueError("dtql_update_step needs a scalar loss: build DTQLLoss with reduction='mean' or 'sum'.")
    if fast:
        updater = cached_updater(loss, optimizers, target_updater)
        if updater is not None:
            loss._check_inputs(batch, list(loss.in_keys))
            return updater(batch, pretrain=pretrain)
    return _plain_update_step(loss, optimizers, batch, pretrain=pretrain, target_updater=target_updater)


def _plain_update_step(
    loss: DTQLLoss,
    optimizers: DTQLOptimizers,
    batch: TensorDictBase,
    *,
    pretrain: bool,
    target_updater: SoftUpdate | None,
) -> TensorDictBase:
    """The reference's structure: four loss calls, three backward passes, three optimizer steps."""
    out: dict[str, torch.Tensor] = {}
    if pretrain:  # the reference pretrains the diffusion model first, then the critic
        loss_diffusion, _ = loss.diffusion_loss(batch)
        _step(optimizers.diffusion, loss_diffusion)
    loss_qvalue, metadata_q = loss.qvalue_loss(batch)
    loss_value, _ = loss.value_loss(batch)
    _step(optimizers.critic, loss_qvalue + loss_value)
    if not pretrain:
        loss_diffusion, _ = loss.diffusion_loss(batch)
        _step(optimizers.diffusion, loss_diffusion)
        loss_actor, metadata_actor = loss.actor_loss(batch)
        _step(optimizers.actor, loss_actor)
        if target_updater is not None:
            target_updater.step()
        out["loss_actor"] = loss_actor
        out.update({key: value.mean() for key, value in metadata_actor.items()})
    out.update(loss_qvalue=loss_qvalue, loss_value=loss_value, loss_diffusion=loss_diffusion)
    out["pred_value"] = metadata_q["pred_value"].mean()
    return TensorDict(out).detach()
