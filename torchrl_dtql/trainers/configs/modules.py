"""Hydra configurations of DTQL's four networks, in the mould of TorchRL's ``TanhNormalModelConfig``/``ValueModelConfig``.

Sizes default to the reference's (256-wide MLPs, a 4 x 256 EDM denoiser). Each network is sized by the data's
``observation_dim`` and ``action_dim``; the action bounds (scalars or per-dimension lists) default to [-1, 1].
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from omegaconf import MISSING
from torchrl.data import Bounded
from torchrl.modules import ProbabilisticActor, ValueOperator
from torchrl.trainers.algorithms.configs.modules import ModelConfig

from torchrl_dtql.modules.actors import LOG_STD_MAX, LOG_STD_MIN, make_one_step_actor
from torchrl_dtql.modules.builders import make_diffusion_actor
from torchrl_dtql.modules.critics import make_qvalue_network, make_value_network
from torchrl_dtql.modules.diffusion_actor import EDMDiffusionActor
from torchrl_dtql.modules.edm import SIGMA_DATA, SIGMA_MAX, SIGMA_MIN
from torchrl_dtql.trainers.configs._keys import hydra_keys

__all__ = [
    "DTQLQValueModelConfig",
    "DTQLValueModelConfig",
    "EDMDiffusionActorModelConfig",
    "OneStepActorModelConfig",
    "action_spec_from_bounds",
]


def action_spec_from_bounds(action_dim: int, low: Any = -1.0, high: Any = 1.0) -> Bounded:
    """A ``Bounded`` action spec from YAML bounds: scalars, or one value per action dimension.

    Examples:
        >>> action_spec_from_bounds(2, -2.0, 2.0).space.high.tolist()
        [2.0, 2.0]
    """

    def as_bound(value: Any) -> torch.Tensor:
        bound = torch.as_tensor(value if isinstance(value, (int, float)) else list(value), dtype=torch.float32)
        return bound.expand(action_dim).clone()

    return Bounded(as_bound(low), as_bound(high), shape=(action_dim,))


@dataclass
class OneStepActorModelConfig(ModelConfig):
    """Hydra configuration of DTQL's one-step policy (:func:`~torchrl_dtql.make_one_step_actor`).

    A ``ProbabilisticActor`` with a ``TanhNormal`` over the action bounds; ReLU MLP, clamped state-dependent log-std.

    Examples:
        >>> from hydra.utils import instantiate
        >>> actor = instantiate(OneStepActorModelConfig(observation_dim=3, action_dim=1, hidden_dim=16))
        >>> type(actor).__name__
        'ProbabilisticActor'
    """

    observation_dim: int = MISSING  # size of the flat observation vector
    action_dim: int = MISSING  # size of the action vector
    action_low: Any = -1.0  # lower action bound: a scalar or one value per dimension
    action_high: Any = 1.0  # upper action bound: a scalar or one value per dimension
    hidden_dim: int = 256  # width of the hidden layers (reference: 256)
    num_hidden_layers: int = 3  # number of ReLU layers (reference: 3)
    log_std_min: float = LOG_STD_MIN  # lower clamp of the log-std (reference: -5)
    log_std_max: float = LOG_STD_MAX  # upper clamp of the log-std (reference: 2)
    device: Any = None  # where to create the parameters (None: the default device)
    _target_: str = "torchrl_dtql.trainers.configs.modules._make_one_step_actor"

    def __post_init__(self) -> None:
        super().__post_init__()


def _make_one_step_actor(**kwargs) -> ProbabilisticActor:
    kwargs.pop("shared", None)
    spec = action_spec_from_bounds(kwargs.pop("action_dim"), kwargs.pop("action_low"), kwargs.pop("action_high"))
    return make_one_step_actor(
        kwargs.pop("observation_dim"),
        spec,
        in_keys=hydra_keys(kwargs.pop("in_keys", None) or ["observation"]),
        out_keys=hydra_keys(kwargs.pop("out_keys", None) or ["action"]),
        **kwargs,
    )


@dataclass
class EDMDiffusionActorModelConfig(ModelConfig):
    """Hydra configuration of DTQL's behaviour-cloning diffusion model (:class:`~torchrl_dtql.EDMDiffusionActor`).

    An EDM-preconditioned denoiser over actions conditioned on the observation. DTQL only trains it and evaluates
    its denoising loss (the trust region); the sampler settings matter only if it is used as a policy.

    Examples:
        >>> from hydra.utils import instantiate
        >>> diffusion = instantiate(EDMDiffusionActorModelConfig(observation_dim=3, action_dim=1, hidden_dim=16))
        >>> type(diffusion).__name__
        'EDMDiffusionActor'
    """

    observation_dim: int = MISSING  # size of the flat observation vector
    action_dim: int = MISSING  # size of the action vector
    action_low: Any = -1.0  # lower action bound: a scalar or one value per dimension
    action_high: Any = 1.0  # upper action bound: a scalar or one value per dimension
    hidden_dim: int = 256  # width of the denoiser trunk (reference: 256)
    num_hidden_layers: int = 4  # hidden layers of the denoiser trunk (reference: 4)
    time_embed_dim: int = 16  # size of the sinusoidal noise-level embedding (reference: 16)
    reference_trunk_quirk: bool = True  # keep the reference's missing activation after the first layer
    clip_denoised: bool = True  # clamp the denoised action to the bounds (reference: True)
    sigma_data: float = SIGMA_DATA  # EDM: assumed std of the clean actions (0.5)
    sigma_min: float = SIGMA_MIN  # EDM: smallest noise level (0.002)
    sigma_max: float = SIGMA_MAX  # EDM: largest noise level (80)
    num_steps: int = 10  # sampler steps when used as a policy
    solver: str = "heun"  # sampler when used as a policy
    device: Any = None  # where to create the parameters (None: the default device)
    _target_: str = "torchrl_dtql.trainers.configs.modules._make_edm_diffusion_actor"

    def __post_init__(self) -> None:
        super().__post_init__()


def _make_edm_diffusion_actor(**kwargs) -> EDMDiffusionActor:
    kwargs.pop("shared", None)
    device = kwargs.pop("device", None)
    action_spec = action_spec_from_bounds(kwargs.pop("action_dim"), kwargs.pop("action_low"), kwargs.pop("action_high"))
    diffusion = make_diffusion_actor(
        kwargs.pop("observation_dim"),
        action_spec,
        num_layers=kwargs.pop("num_hidden_layers"),
        in_keys=hydra_keys(kwargs.pop("in_keys", None) or ["observation"]),
        out_keys=hydra_keys(kwargs.pop("out_keys", None) or ["action"]),
        **kwargs,  # hidden_dim, time_embed_dim, the EDM constants, clip_denoised, num_steps, solver
    )
    return diffusion.to(device) if device is not None else diffusion


@dataclass
class DTQLQValueModelConfig(ModelConfig):
    """Hydra configuration of one DTQL Q network (:func:`~torchrl_dtql.make_qvalue_network`): ``Q(s, a)``.

    ``(Linear -> LayerNorm -> Mish) x num_hidden_layers -> Linear(1)`` over ``[observation, action]``.
    :class:`~torchrl_dtql.trainers.configs.DTQLLossConfig` makes the ensemble: set ``_partial_: true`` here to have
    its ``num_qvalue_nets`` members built independently, as the reference does; otherwise the one module built here
    is copied with re-sampled weights (TorchRL's default).

    Examples:
        >>> from hydra.utils import instantiate
        >>> q = instantiate(DTQLQValueModelConfig(observation_dim=3, action_dim=1, hidden_dim=16))
        >>> q.in_keys, q.out_keys
        (['observation', 'action'], ['state_action_value'])
    """

    observation_dim: int = MISSING  # size of the flat observation vector
    action_dim: int = MISSING  # size of the action vector
    hidden_dim: int = 256  # width of the hidden layers (reference: 256)
    num_hidden_layers: int = 3  # number of hidden blocks (reference: 3)
    layer_norm: bool = True  # LayerNorm before each Mish (reference: on for Q)
    device: Any = None  # where to create the parameters (None: the default device)
    _target_: str = "torchrl_dtql.trainers.configs.modules._make_qvalue_model"

    def __post_init__(self) -> None:
        super().__post_init__()


def _make_qvalue_model(**kwargs) -> ValueOperator:
    kwargs.pop("shared", None)
    return make_qvalue_network(
        kwargs.pop("observation_dim"),
        kwargs.pop("action_dim"),
        in_keys=hydra_keys(kwargs.pop("in_keys", None) or ["observation", "action"]),
        out_keys=hydra_keys(kwargs.pop("out_keys", None) or ["state_action_value"]),
        **kwargs,
    )


@dataclass
class DTQLValueModelConfig(ModelConfig):
    """Hydra configuration of DTQL's state-value network (:func:`~torchrl_dtql.make_value_network`): ``V(s)``.

    Examples:
        >>> from hydra.utils import instantiate
        >>> v = instantiate(DTQLValueModelConfig(observation_dim=3, hidden_dim=16))
        >>> v.out_keys
        ['state_value']
    """

    observation_dim: int = MISSING  # size of the flat observation vector
    hidden_dim: int = 256  # width of the hidden layers (reference: 256)
    num_hidden_layers: int = 3  # number of hidden blocks (reference: 3)
    layer_norm: bool = False  # LayerNorm before each Mish (reference: off for V)
    device: Any = None  # where to create the parameters (None: the default device)
    _target_: str = "torchrl_dtql.trainers.configs.modules._make_value_model"

    def __post_init__(self) -> None:
        super().__post_init__()


def _make_value_model(**kwargs) -> ValueOperator:
    kwargs.pop("shared", None)
    return make_value_network(
        kwargs.pop("observation_dim"),
        in_keys=hydra_keys(kwargs.pop("in_keys", None) or ["observation"]),
        out_keys=hydra_keys(kwargs.pop("out_keys", None) or ["state_value"]),
        **kwargs,
    )
