"""The one-step implicit generator of the DQL-KL baseline: ``a = G(sigma_g z, s, t_g)`` with ``z ~ N(0, I)``.

In the DTQL reference (``agents/dql_kl.py``, the toy's ``--actor implicit``), the generator is a denoiser backbone
(``ScoreNetwork``) fed Gaussian noise of standard deviation ``generation_sigma = 2.5`` and a *fixed, raw* time input
equal to 2.5 (not ``ln(sigma)/4``); its output is the action, with no preconditioning and no clamp. Unlike the
tanh-Gaussian one-step policy of DTQL it has no density, so it can only be trained through its samples (e.g. by
:class:`~torchrl_dtql.objectives.kl_distill.KLDistillLoss`).
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict.utils import NestedKey
from torch import nn, Tensor
from torchrl.data import Composite, TensorSpec, Unbounded
from torchrl.envs.utils import ExplorationType, exploration_type
from torchrl.modules import Actor

from torchrl_dtql.modules.denoiser import EDMDenoiserNetwork

__all__ = ["OneStepGenerator", "make_one_step_generator", "GENERATION_SIGMA"]

GENERATION_SIGMA = 2.5
_DETERMINISTIC_TYPES = (ExplorationType.DETERMINISTIC, ExplorationType.MODE, ExplorationType.MEAN)


class OneStepGenerator(nn.Module):
    """Maps ``(noise, observation)`` to an action in one network call: ``G(sigma_g z, s, t_g)``.

    Args:
        backbone: a network called as ``backbone(sigma_g * z, observation, time_input)`` (the signature of
            :class:`~torchrl_dtql.modules.denoiser.EDMDenoiserNetwork`), returning ``[*B, action_dim]``.
        action_dim: size of the action (and of the noise).

    Keyword Args:
        generation_sigma: standard deviation of the input noise (reference: 2.5).
        time_input: the constant fed to the backbone's time embedding (reference: ``generation_sigma``, raw).

    Under ``ExplorationType.DETERMINISTIC`` (or ``MODE``/``MEAN``) the noise is zero, so the action is
    repeatable; otherwise fresh noise is drawn on every call.

    Examples:
        >>> gen = OneStepGenerator(EDMDenoiserNetwork(2, 1, hidden_dim=16, time_embed_dim=4), action_dim=2)
        >>> gen(torch.zeros(5, 1)).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        backbone: nn.Module,
        action_dim: int,
        *,
        generation_sigma: float = GENERATION_SIGMA,
        time_input: float | None = None,
    ) -> None:
        super().__init__()
        if generation_sigma <= 0:
            raise ValueError(f"generation_sigma must be > 0, got {generation_sigma}.")
        self.backbone = backbone
        self.action_dim = action_dim
        self.generation_sigma = generation_sigma
        self.time_input = generation_sigma if time_input is None else time_input

    def forward(self, observation: Tensor, noise: Tensor | None = None) -> Tensor:
        """``G(sigma_g * noise, observation, t_g)``; ``noise`` is drawn (or zero when deterministic) if omitted."""
        shape = (*observation.shape[:-1], self.action_dim)
        if noise is None:
            if exploration_type() in _DETERMINISTIC_TYPES:
                noise = observation.new_zeros(shape)
            else:
                noise = torch.randn(shape, device=observation.device, dtype=observation.dtype)
        time_input = observation.new_full((*observation.shape[:-1], 1), self.time_input)
        return self.backbone(self.generation_sigma * noise, observation, time_input)


def make_one_step_generator(
    observation_dim: int,
    action_spec: TensorSpec | int,
    *,
    hidden_dim: int = 256,
    time_embed_dim: int = 16,
    num_hidden_layers: int = 4,
    reference_trunk_quirk: bool = True,
    generation_sigma: float = GENERATION_SIGMA,
    in_keys: Sequence[NestedKey] = ("observation",),
    out_keys: Sequence[NestedKey] = ("action",),
    device: torch.device | str | None = None,
) -> Actor:
    """The DQL-KL generator as a TorchRL :class:`~torchrl.modules.Actor`: reads the observation, writes the action.

    The backbone is the DTQL denoiser trunk (:class:`~torchrl_dtql.modules.denoiser.EDMDenoiserNetwork`), so with
    equal sizes it can be initialised from a trained behaviour model, as ``agents/dql_kl.py`` does. Actions are not
    clamped to the spec (the reference does not clamp during training).

    Args:
        observation_dim: size of the observation vector.
        action_spec: the action spec (its last dim is the action size), or the action size.

    Keyword Args:
        hidden_dim: backbone width (reference: 256 on D4RL, 128 on the toy).
        time_embed_dim: size of the time embedding (reference: 16 on D4RL, 4 on the toy).
        num_hidden_layers: hidden Linear layers of the trunk (reference: 4).
        reference_trunk_quirk: keep the reference trunk's missing first activation.
        generation_sigma: standard deviation of the input noise and the raw time input (reference: 2.5).
        in_keys: the observation key.
        out_keys: the action key.
        device: where to create the parameters.

    Examples:
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> gen = make_one_step_generator(1, Bounded(-3.0, 3.0, shape=(2,)), hidden_dim=16, time_embed_dim=4)
        >>> gen(TensorDict(observation=torch.zeros(4, 1), batch_size=[4]))["action"].shape
        torch.Size([4, 2])
    """
    if isinstance(action_spec, int):
        action_spec = Unbounded(shape=(action_spec,))
    out_key = list(out_keys)[0]
    leaf_spec = action_spec[out_key] if isinstance(action_spec, Composite) else action_spec
    action_dim = int(leaf_spec.shape[-1])
    backbone = EDMDenoiserNetwork(
        action_dim,
        observation_dim,
        hidden_dim=hidden_dim,
        time_embed_dim=time_embed_dim,
        num_hidden_layers=num_hidden_layers,
        reference_trunk_quirk=reference_trunk_quirk,
    )
    generator = OneStepGenerator(backbone, action_dim, generation_sigma=generation_sigma)
    actor = Actor(generator, in_keys=list(in_keys), out_keys=[out_key], spec=Composite({out_key: leaf_spec}))
    return actor.to(device) if device is not None else actor
