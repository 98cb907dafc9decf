"""``DTQLLossConfig``: the Hydra configuration of :class:`~torchrl_dtql.DTQLLoss`, shaped like TorchRL's ``IQLLossConfig``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from omegaconf import ListConfig
from torch import nn
from torchrl.trainers.algorithms.configs.objectives import LossConfig

from torchrl_dtql.objectives.dtql import ALPHA_PER_Q, DTQLLoss

__all__ = ["DTQLLossConfig"]


@dataclass
class DTQLLossConfig(LossConfig):
    """Hydra configuration for :class:`~torchrl_dtql.DTQLLoss`.

    Every keyword of ``DTQLLoss.__init__`` is a field here, plus two keys named as in the example's ``loss``
    section: ``discount``, handed to ``make_value_estimator`` (TorchRL's loss configs call it ``gamma``; DTQL's
    ``gamma_nll`` is the reference's NLL weight), and ``tau``, the Polyak rate of the target critic, which the loss
    does not use: the recipe's ``target_net_updater.tau`` reads it (``${loss.tau}``).
    The four networks are modules, or configs from :mod:`torchrl_dtql.trainers.configs.modules`. A ``_partial_``
    Q-network config is called ``num_qvalue_nets`` times, so that the ensemble's members are initialised
    independently, as in the reference.

    Examples:
        >>> from hydra.utils import instantiate
        >>> from torchrl_dtql import make_dtql_modules
        >>> loss = instantiate(DTQLLossConfig(alpha=5.0, discount=0.99), **make_dtql_modules(3, 2, hidden_dim=16))
        >>> float(loss.alpha), loss.value_estimator.gamma.item()
        (5.0, 0.9900000095367432)
    """

    actor_network: Any = None  # the one-step policy (OneStepActorModelConfig)
    diffusion_network: Any = None  # the behaviour-cloning diffusion model (EDMDiffusionActorModelConfig)
    qvalue_network: Any = None  # one Q network, a list, or a _partial_ config (DTQLQValueModelConfig)
    value_network: Any = None  # V(s) (DTQLValueModelConfig)
    alpha: Any = 1.0  # weight of the trust-region term (per task in the reference: 0.5 to 1500), or "auto"
    auto_alpha: str = "q_scale"  # alpha="auto": "q_scale" (alpha_per_q x |mean Q|) or "multiplier" (Lagrange)
    trust_region_ratio: float = 1.0  # multiplier: target trust-region loss / the dataset actions' denoising loss
    alpha_init: float | None = None  # multiplier: the starting value (None: |mean Q| / trust-region loss)
    alpha_per_q: float = ALPHA_PER_Q  # q_scale: alpha per unit of |mean Q(s, a_data)|
    gamma_nll: float = 0.0  # weight of the dataset-action NLL term (reference: 1 on AntMaze, else 0)
    expectile: float = 0.7  # expectile of the value regression (0.7 locomotion, 0.9 AntMaze)
    num_qvalue_nets: int = 2  # size of the Q ensemble (reference: 2)
    loss_function: str = "l2"  # distance of the Q regression (reference: l2)
    nll_atanh_eps: float = 1e-3  # keeps atanh finite in the NLL term
    check_finite: bool = True  # raise on NaN/inf inputs, naming the key
    reduction: str | None = None  # "mean" (None), "sum" or "none"
    deactivate_vmap: bool = False  # evaluate the Q ensemble in a Python loop instead of vmap
    discount: float | None = None  # the discount of the TD0 target (None: 0.99)
    tau: float = 0.005  # Polyak rate of the target critic, for the trainer's target_net_updater (unused by the loss)
    _target_: str = "torchrl_dtql.trainers.configs.objectives._make_dtql_loss"

    def __post_init__(self) -> None:
        super().__post_init__()


def _build(network: Any) -> Any:
    """A module as is; a config left partial by Hydra (a callable that is not a module) is called."""
    if network is None or isinstance(network, (nn.Module, list, tuple)):
        return network
    if callable(network):
        return network()
    raise TypeError(f"Expected a network, a list of networks or a network factory, got {type(network).__name__}.")


def _make_dtql_loss(**kwargs) -> DTQLLoss:
    discount = kwargs.pop("discount", None)
    kwargs.pop("tau", None)  # the target updater's, not the loss's
    num_qvalue_nets = kwargs.get("num_qvalue_nets", 2)
    qvalue_network = kwargs.get("qvalue_network")
    if isinstance(qvalue_network, ListConfig):  # a list of modules handed to instantiate() comes back as a ListConfig
        qvalue_network = kwargs["qvalue_network"] = list(qvalue_network)
    if qvalue_network is not None and not isinstance(qvalue_network, (nn.Module, list, tuple)):
        kwargs["qvalue_network"] = [_build(qvalue_network) for _ in range(num_qvalue_nets)]
    for name in ("actor_network", "diffusion_network", "value_network"):
        kwargs[name] = _build(kwargs.get(name))
    missing = [name for name in ("actor_network", "diffusion_network", "qvalue_network", "value_network")
               if kwargs.get(name) is None]
    if missing:
        raise ValueError(
            f"DTQLLossConfig is missing the network(s) {missing}: set them on the loss config or on the trainer "
            "config (e.g. loss.actor_network: ${models.actor})."
        )
    loss = DTQLLoss(**kwargs)
    if discount is not None:
        loss.make_value_estimator(gamma=discount)
    return loss
