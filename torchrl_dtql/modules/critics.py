"""DTQL's critics: state-action values ``Q(s, a)`` (LayerNorm + Mish) and a state value ``V(s)`` (Mish)."""
from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict.utils import NestedKey
from torch import nn, Tensor
from torchrl.modules import ValueOperator

__all__ = ["CriticMLP", "make_qvalue_network", "make_value_network"]


class CriticMLP(nn.Module):
    """An MLP over the concatenation of its inputs, ``(Linear [-> LayerNorm] -> Mish) x depth -> Linear(1)``.

    Args:
        in_features: total size of the concatenated inputs.

    Keyword Args:
        hidden_dim: width of the hidden layers (reference: 256).
        num_hidden_layers: number of hidden blocks (reference: 3).
        layer_norm: put a LayerNorm between each Linear and its Mish (reference: on for Q, off for V).

    Examples:
        >>> q = CriticMLP(17 + 6)
        >>> q(torch.randn(4, 17), torch.randn(4, 6)).shape
        torch.Size([4, 1])
    """

    def __init__(
        self,
        in_features: int,
        *,
        hidden_dim: int = 256,
        num_hidden_layers: int = 3,
        layer_norm: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for _ in range(num_hidden_layers):
            layers.append(nn.Linear(in_features, hidden_dim))
            if layer_norm:
                layers.append(nn.LayerNorm(hidden_dim))
            layers.append(nn.Mish())
            in_features = hidden_dim
        layers.append(nn.Linear(in_features, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, *inputs: Tensor) -> Tensor:
        x = inputs[0] if len(inputs) == 1 else torch.cat(inputs, dim=-1)
        return self.net(x)


def make_qvalue_network(
    observation_dim: int,
    action_dim: int,
    *,
    hidden_dim: int = 256,
    num_hidden_layers: int = 3,
    layer_norm: bool = True,
    in_keys: Sequence[NestedKey] = ("observation", "action"),
    out_keys: Sequence[NestedKey] = ("state_action_value",),
    device: torch.device | str | None = None,
) -> ValueOperator:
    """One Q network as a :class:`~torchrl.modules.ValueOperator` reading observation and action.

    DTQL uses two, independently initialised (pass both to :class:`~torchrl_dtql.DTQLLoss` as a list).

    Examples:
        >>> from tensordict import TensorDict
        >>> q = make_qvalue_network(3, 2, hidden_dim=16)
        >>> td = q(TensorDict(observation=torch.randn(4, 3), action=torch.randn(4, 2), batch_size=[4]))
        >>> td["state_action_value"].shape
        torch.Size([4, 1])
    """
    module = CriticMLP(
        observation_dim + action_dim, hidden_dim=hidden_dim, num_hidden_layers=num_hidden_layers, layer_norm=layer_norm
    )
    return ValueOperator(module, in_keys=list(in_keys), out_keys=list(out_keys)).to(device)


def make_value_network(
    observation_dim: int,
    *,
    hidden_dim: int = 256,
    num_hidden_layers: int = 3,
    layer_norm: bool = False,
    in_keys: Sequence[NestedKey] = ("observation",),
    out_keys: Sequence[NestedKey] = ("state_value",),
    device: torch.device | str | None = None,
) -> ValueOperator:
    """The state-value network ``V(s)`` as a :class:`~torchrl.modules.ValueOperator` (no LayerNorm by default).

    Examples:
        >>> from tensordict import TensorDict
        >>> v = make_value_network(3, hidden_dim=16)
        >>> v(TensorDict(observation=torch.randn(4, 3), batch_size=[4]))["state_value"].shape
        torch.Size([4, 1])
    """
    module = CriticMLP(observation_dim, hidden_dim=hidden_dim, num_hidden_layers=num_hidden_layers, layer_norm=layer_norm)
    return ValueOperator(module, in_keys=list(in_keys), out_keys=list(out_keys)).to(device)
