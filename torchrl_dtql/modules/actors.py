"""DTQL's one-step policy: the tanh-Gaussian network and the TensorDict actor around it.

The Q-reranking evaluation policy built on this actor lives in :mod:`torchrl_dtql.policies` (networks here, acting
policies there); ``QRerankingActor`` stays importable from this module.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
from tensordict.nn import TensorDictModule
from tensordict.utils import NestedKey
from torch import nn, Tensor
from torchrl.data import Bounded, Composite, TensorSpec
from torchrl.envs.utils import ExplorationType
from torchrl.modules import ProbabilisticActor, TanhNormal

__all__ = ["GaussianPolicyNetwork", "make_one_step_actor"]

LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0


class GaussianPolicyNetwork(nn.Module):
    """``observation -> (loc, scale)`` of a diagonal Gaussian: a ReLU MLP with a hard-clamped, state-dependent log-std.

    As the reference ``DiagGaussianActorTanhAction``: ``num_hidden_layers`` ReLU layers, an output of size
    ``2 * action_dim`` split into ``loc`` and ``log_std``, ``log_std`` clamped to ``[log_std_min, log_std_max]``
    (not tanh-rescaled), orthogonal weights (gain 1) and zero biases.

    Examples:
        >>> net = GaussianPolicyNetwork(17, 6)
        >>> loc, scale = net(torch.randn(4, 17))
        >>> loc.shape, bool((scale >= torch.exp(torch.tensor(-5.0))).all())
        (torch.Size([4, 6]), True)
    """

    def __init__(
        self,
        observation_dim: int,
        action_dim: int,
        *,
        hidden_dim: int = 256,
        num_hidden_layers: int = 3,
        log_std_min: float = LOG_STD_MIN,
        log_std_max: float = LOG_STD_MAX,
    ) -> None:
        super().__init__()
        if log_std_min >= log_std_max:
            raise ValueError(f"log_std_min must be < log_std_max, got {log_std_min} and {log_std_max}.")
        layers: list[nn.Module] = []
        in_features = observation_dim
        for _ in range(num_hidden_layers):
            layers += [nn.Linear(in_features, hidden_dim), nn.ReLU()]
            in_features = hidden_dim
        layers.append(nn.Linear(in_features, 2 * action_dim))
        self.net = nn.Sequential(*layers)
        self.log_std_min = log_std_min
        self.log_std_max = log_std_max
        for module in self.net:
            if isinstance(module, nn.Linear):
                nn.init.orthogonal_(module.weight, gain=1.0)
                nn.init.zeros_(module.bias)

    def forward(self, observation: Tensor) -> tuple[Tensor, Tensor]:
        loc, log_std = self.net(observation).chunk(2, dim=-1)
        return loc, log_std.clamp(self.log_std_min, self.log_std_max).exp()


def _action_bounds(action_spec: TensorSpec) -> tuple[Tensor | float, Tensor | float]:
    """Floats when the bounds are uniform (so the distribution follows the module across devices), else tensors."""
    low, high = action_spec.space.low, action_spec.space.high
    if bool((low == low.flatten()[0]).all()) and bool((high == high.flatten()[0]).all()):
        return float(low.flatten()[0]), float(high.flatten()[0])
    return low, high


def make_one_step_actor(
    observation_dim: int,
    action_spec: TensorSpec,
    *,
    hidden_dim: int = 256,
    num_hidden_layers: int = 3,
    log_std_min: float = LOG_STD_MIN,
    log_std_max: float = LOG_STD_MAX,
    in_keys: Sequence[NestedKey] = ("observation",),
    out_keys: Sequence[NestedKey] = ("action",),
    device: torch.device | str | None = None,
) -> ProbabilisticActor:
    """DTQL's one-step policy: a :class:`~torchrl.modules.ProbabilisticActor` with a :class:`~torchrl.modules.TanhNormal`.

    Samples are ``tanh(loc + scale * eps)`` rescaled to the spec's bounds (reparameterised, so gradients reach the
    network); under ``ExplorationType.DETERMINISTIC`` the actor returns the mean action ``tanh(loc)``.

    Args:
        observation_dim: size of the observation vector.
        action_spec: a :class:`~torchrl.data.Bounded` action spec (or a Composite holding it under the out key).

    Keyword Args:
        hidden_dim: width of the hidden layers (reference: 256).
        num_hidden_layers: number of ReLU layers (reference: 3).
        log_std_min: lower clamp of the log-std (reference: -5).
        log_std_max: upper clamp of the log-std (reference: 2).
        in_keys: the observation key.
        out_keys: the action key.
        device: where to create the parameters.

    Examples:
        >>> from tensordict import TensorDict
        >>> from torchrl.data import Bounded
        >>> actor = make_one_step_actor(3, Bounded(-1.0, 1.0, shape=(2,)), hidden_dim=32)
        >>> actor(TensorDict(observation=torch.randn(4, 3), batch_size=[4]))["action"].shape
        torch.Size([4, 2])
    """
    out_key = list(out_keys)[0]
    bounded = action_spec[out_key] if isinstance(action_spec, Composite) else action_spec
    if not isinstance(bounded, Bounded):
        raise TypeError(f"make_one_step_actor needs a Bounded action spec, got {type(bounded).__name__}.")
    action_dim = bounded.shape[-1]
    network = GaussianPolicyNetwork(
        observation_dim,
        action_dim,
        hidden_dim=hidden_dim,
        num_hidden_layers=num_hidden_layers,
        log_std_min=log_std_min,
        log_std_max=log_std_max,
    )
    low, high = _action_bounds(bounded)
    module = TensorDictModule(network, in_keys=list(in_keys), out_keys=["loc", "scale"])
    actor = ProbabilisticActor(
        module,
        in_keys=["loc", "scale"],
        out_keys=[out_key],
        spec=Composite({out_key: bounded}),
        distribution_class=TanhNormal,
        distribution_kwargs={"low": low, "high": high, "tanh_loc": False},
        default_interaction_type=ExplorationType.RANDOM,
    )
    return actor.to(device) if device is not None else actor
