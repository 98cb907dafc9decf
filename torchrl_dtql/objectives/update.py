"""The DTQL update step of the reference: three Adam optimizers stepped in the order critic, diffusion, actor.

:func:`dtql_update_step` is the step users call. By default it runs through a fast
:class:`~torchrl_dtql.DTQLUpdater` that this module builds on first use and caches per loss (:func:`cached_updater`);
``fast=False`` runs the loss's public methods one after the other. Both compute every loss term with the functions
of :mod:`torchrl_dtql.objectives.terms`.

Examples:
    >>> from torchrl_dtql import DTQLLoss, make_dtql_modules
    >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=16), alpha=1.0)
    >>> type(cached_updater(loss, make_dtql_optimizers(loss))).__name__
    'DTQLUpdater'
"""
from __future__ import annotations

import warnings
import weakref
from dataclasses import dataclass

import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.objectives import SoftUpdate
from torchrl.objectives.utils import TargetNetUpdater
from torchrl.objectives.value import TD0Estimator

from torchrl_dtql.objectives.dtql import DTQLLoss
from torchrl_dtql.objectives.fast_update import DTQLUpdater
from torchrl_dtql.objectives.optimizers import alpha_step, check_alpha_optimizer, DTQLOptimizers, make_dtql_optimizers

__all__ = ["DTQLOptimizers", "cached_updater", "dtql_update_step", "make_dtql_optimizers"]


def _step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()


# The loss methods DTQLUpdater stands in for: a subclass overriding one of them takes the plain path.
_LOSS_METHODS = ("qvalue_loss", "value_loss", "diffusion_loss", "actor_loss", "check_inputs")


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


def _weak_ref_or_none(obj: object | None) -> weakref.ref | None:
    return None if obj is None else weakref.ref(obj)


def _refers_to(ref: weakref.ref | None, obj: object | None) -> bool:
    """Whether ``ref`` (from :func:`_weak_ref_or_none`) still refers to ``obj``: identity, never a reused ``id``."""
    return ref is None if obj is None else ref is not None and ref() is obj


@dataclass
class _CachedUpdater:
    """A loss's cached updater (``None``: the plain path applies) and what it was built for.

    It holds the loss and the target updater only weakly: the updater reaches them through ``weakref.proxy``, and
    the cache keys the loss weakly, so that the cache never keeps a loss (nor the target updater, which refers to
    the loss) alive.
    """

    updater: DTQLUpdater | None
    optimizers: tuple[torch.optim.Optimizer, ...]
    target_updater: weakref.ref | None
    value_estimator: weakref.ref
    device: torch.device
    in_keys: tuple
    reduction: str

    @classmethod
    def describe(
        cls, loss: DTQLLoss, optimizers: DTQLOptimizers, target_updater: TargetNetUpdater | None
    ) -> _CachedUpdater:
        """What an updater for these three objects depends on (``updater`` left empty)."""
        return cls(
            updater=None,
            optimizers=tuple(optimizers),
            target_updater=_weak_ref_or_none(target_updater),
            value_estimator=weakref.ref(loss.value_estimator),
            device=_parameter_device(loss),
            in_keys=tuple(loss.in_keys),
            reduction=loss.reduction,
        )

    def fits(self, loss: DTQLLoss, optimizers: DTQLOptimizers, target_updater: TargetNetUpdater | None) -> bool:
        """Whether it was built for these objects, on the loss's current device, estimator, keys and reduction."""
        return (
            len(self.optimizers) == len(optimizers)
            and all(built is given for built, given in zip(self.optimizers, optimizers))
            and _refers_to(self.target_updater, target_updater)
            and self.value_estimator() is loss.value_estimator
            and self.device == _parameter_device(loss)
            and self.in_keys == tuple(loss.in_keys)
            and self.reduction == loss.reduction
        )


# One entry per loss, keyed weakly: an entry goes when its loss is collected. Not part of the loss's state, so
# never saved or copied with it (``state_dict``, ``deepcopy``).
_UPDATERS: weakref.WeakKeyDictionary[DTQLLoss, _CachedUpdater] = weakref.WeakKeyDictionary()


def cached_updater(
    loss: DTQLLoss, optimizers: DTQLOptimizers, target_updater: SoftUpdate | None = None
) -> DTQLUpdater | None:
    """The eager :class:`~torchrl_dtql.objectives.fast_update.DTQLUpdater` that ``dtql_update_step`` uses for this
    loss, optimizers and target updater, built on first use and cached for the loss; ``None`` where the fast path
    does not apply (a subclass overriding a loss method, a value estimator other than TD0, networks it cannot bind).

    An updater is rebuilt when any of the three objects is replaced, the loss's parameters move to another device,
    or its value estimator, keys or reduction change. The cache lives in this module, keyed weakly by the loss: it
    is not saved or copied with the loss (``state_dict``, ``deepcopy``) and does not keep the loss alive (the cached
    updater reaches the loss and the target updater through weak proxies).

    Examples:
        >>> from torchrl_dtql import DTQLLoss, make_dtql_modules, make_dtql_optimizers
        >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=16), alpha=1.0)
        >>> optimizers = make_dtql_optimizers(loss)
        >>> cached_updater(loss, optimizers) is cached_updater(loss, optimizers)
        True
    """
    entry = _UPDATERS.get(loss)
    if entry is not None and entry.fits(loss, optimizers, target_updater):
        return entry.updater
    entry = _CachedUpdater.describe(loss, optimizers, target_updater)
    _UPDATERS[loss] = entry  # one entry per loss: anything older refers to replaced objects, devices or keys
    if _fast_path_reason(loss) is not None:
        return None
    try:
        entry.updater = DTQLUpdater(
            weakref.proxy(loss),
            optimizers,
            target_updater=None if target_updater is None else weakref.proxy(target_updater),
            validate=False,
        )
    except (AttributeError, KeyError, TypeError, ValueError) as err:  # networks of another structure
        warnings.warn(
            f"dtql_update_step: the fast path does not fit these networks ({type(err).__name__}: {err}); using the "
            "plain path (same result, slower). Pass fast=False to silence this.",
            stacklevel=3,
        )
    return entry.updater


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
    :class:`~torchrl_dtql.objectives.fast_update.DTQLUpdater` cached for the loss (see :func:`cached_updater`): the
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
    check_alpha_optimizer(loss, optimizers)
    if fast:
        updater = cached_updater(loss, optimizers, target_updater)
        if updater is not None:
            loss.check_inputs(batch)
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
        if loss.auto_alpha == "q_scale":  # this step's alpha, from the critic's Q of the batch's actions
            loss.scale_alpha_(metadata_q["pred_value"])
            out["alpha"] = loss.alpha.detach().clone()
        loss_actor, metadata_actor = loss.actor_loss(batch)
        _step(optimizers.actor, loss_actor)
        if loss.learns_log_alpha:
            out.update(alpha_step(loss, optimizers.alpha, metadata_actor["trust_region"], loss_diffusion,
                                  metadata_actor["min_q_actor"]))
        if target_updater is not None:
            target_updater.step()
        out["loss_actor"] = loss_actor
        out.update({key: value.mean() for key, value in metadata_actor.items()})
    out.update(loss_qvalue=loss_qvalue, loss_value=loss_value, loss_diffusion=loss_diffusion)
    out["pred_value"] = metadata_q["pred_value"].mean()
    return TensorDict(out).detach()
