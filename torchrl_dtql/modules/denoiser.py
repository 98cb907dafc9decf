"""The EDM denoiser backbone ``F_theta(c_in x, s, c_noise)`` of the DTQL reference (``ScoreNetwork``).

Shape contract: ``scaled_action`` is ``[*B, action_dim]``, ``observation`` is ``[*B, observation_dim]`` and
``c_noise`` is ``[*B]`` or ``[*B, 1]``; the output is ``[*B, action_dim]``. Preconditioning is *not* applied here:
see :class:`torchrl_dtql.modules.actors.EDMDiffusionModel`.
"""
from __future__ import annotations

import math

import torch
from torch import nn, Tensor

__all__ = ["SinusoidalTimeEmbedding", "EDMDenoiserNetwork"]


class SinusoidalTimeEmbedding(nn.Module):
    """Sinusoidal features of a scalar time input followed by ``Linear -> Mish -> Linear``.

    Half of the ``dim`` features are ``sin(t * f_k)`` and half ``cos(t * f_k)`` with
    ``f_k = exp(-k ln(10000) / (dim/2 - 1))``, as in the reference ``SinusoidalPosEmb``.

    Args:
        dim: the embedding size (even, >= 4).
        hidden_multiplier: the width of the hidden layer as a multiple of ``dim``.

    Examples:
        >>> emb = SinusoidalTimeEmbedding(16)
        >>> emb(torch.zeros(5)).shape
        torch.Size([5, 16])
    """

    def __init__(self, dim: int = 16, hidden_multiplier: int = 2) -> None:
        super().__init__()
        if dim < 4 or dim % 2:
            raise ValueError(f"SinusoidalTimeEmbedding needs an even dim >= 4, got {dim}.")
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / (half - 1))
        self.register_buffer("freqs", freqs, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(dim, dim * hidden_multiplier), nn.Mish(), nn.Linear(dim * hidden_multiplier, dim))

    def forward(self, t: Tensor) -> Tensor:
        if t.shape[-1:] == (1,):
            t = t.squeeze(-1)
        angles = t.unsqueeze(-1) * self.freqs
        return self.mlp(torch.cat([angles.sin(), angles.cos()], dim=-1))


class EDMDenoiserNetwork(nn.Module):
    """The reference denoiser trunk: ``[scaled action, observation, time embedding] -> MLP -> action_dim``.

    With ``num_hidden_layers=4`` the reference builds ``Linear(in, h), Linear(h, h), Mish, Linear(h, h), Mish,
    Linear(h, h), Mish, Linear(h, action_dim)``: its layer loop puts no activation after the first Linear. That
    quirk is kept by default (``reference_trunk_quirk=True``) for exact parity; ``False`` puts a Mish after every
    hidden Linear.

    Args:
        action_dim: size of the action vector.
        observation_dim: size of the conditioning observation (0 for an unconditional model).

    Keyword Args:
        hidden_dim: width of the hidden layers (reference: 256; the 2D toy uses 128).
        time_embed_dim: size of the time embedding (reference: 16).
        num_hidden_layers: number of hidden Linear layers (reference: 4).
        reference_trunk_quirk: omit the activation after the first hidden Linear, as the reference does.
        device: where to create the parameters.

    Examples:
        >>> net = EDMDenoiserNetwork(action_dim=6, observation_dim=17)
        >>> net(torch.randn(32, 6), torch.randn(32, 17), torch.randn(32)).shape
        torch.Size([32, 6])
    """

    def __init__(
        self,
        action_dim: int,
        observation_dim: int,
        *,
        hidden_dim: int = 256,
        time_embed_dim: int = 16,
        num_hidden_layers: int = 4,
        reference_trunk_quirk: bool = True,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if num_hidden_layers < 1:
            raise ValueError(f"EDMDenoiserNetwork needs num_hidden_layers >= 1, got {num_hidden_layers}.")
        self.action_dim = action_dim
        self.observation_dim = observation_dim
        self.reference_trunk_quirk = reference_trunk_quirk
        self.time_embedding = SinusoidalTimeEmbedding(time_embed_dim)
        layers: list[nn.Module] = []
        in_features = action_dim + observation_dim + time_embed_dim
        for i in range(num_hidden_layers):
            layers.append(nn.Linear(in_features, hidden_dim))
            if not (reference_trunk_quirk and i == 0):
                layers.append(nn.Mish())
            in_features = hidden_dim
        layers.append(nn.Linear(hidden_dim, action_dim))
        self.trunk = nn.Sequential(*layers)
        if device is not None:
            self.to(device)

    def forward(self, scaled_action: Tensor, observation: Tensor, c_noise: Tensor) -> Tensor:
        t_emb = self.time_embedding(c_noise)
        t_emb = t_emb.expand(*scaled_action.shape[:-1], t_emb.shape[-1])
        return self.trunk(torch.cat([scaled_action, observation, t_emb], dim=-1))
