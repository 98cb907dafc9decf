"""DTQL's acting policy in plain torch (no TensorDict), ready for :func:`torch.export`.

:func:`make_exportable_policy` copies the acting networks out of a trained :class:`~torchrl_dtql.DTQLLoss` into an
:class:`ExportablePolicy`, ``observation [B, obs] -> action [B, act]``: the deterministic mean action, or the
Q-reranked choice among ``num_candidates`` samples (:func:`~torchrl_dtql.policies.reranking.rerank`, the very
selection of :class:`~torchrl_dtql.QRerankingActor`). :mod:`torchrl_dtql.export` writes it to a file and loads it.
"""
from __future__ import annotations

import copy

import torch
from tensordict import TensorDictBase
from torch import nn, Tensor

from torchrl_dtql.modules.actors import GaussianPolicyNetwork
from torchrl_dtql.policies.reranking import repeat_for_candidates, rerank

__all__ = ["ExportablePolicy", "make_exportable_policy"]


class ExportablePolicy(nn.Module):
    """DTQL's acting policy in plain torch: ``observation [B, obs] -> action [B, act]``.

    With ``num_candidates == 0`` it returns the mean action ``tanh(loc)`` rescaled to the bounds (deterministic).
    Otherwise it draws ``num_candidates`` actions per state from the tanh-Gaussian policy, scores them with
    ``min_i Q_i`` and picks one by sampling ``softmax(min_q / temperature)`` (``temperature == 0``: argmax), the same
    computation, in the same order of random draws, as :class:`~torchrl_dtql.QRerankingActor` (both choose with
    :func:`~torchrl_dtql.policies.reranking.rerank`).

    Args:
        policy_network: the one-step policy's ``observation -> (loc, scale)`` network.
        qvalue_networks: the Q ensemble, each called as ``q(observation, action) -> [B, 1]`` (unused when
            ``num_candidates == 0``).

    Keyword Args:
        action_low: lower action bound, a tensor of shape ``[act]``.
        action_high: upper action bound.
        num_candidates: candidate actions per state; 0 means the deterministic mean action.
        temperature: softmax temperature on raw Q values; 0 means argmax.
        observation_loc: subtracted from observations before the networks (``None``: no normalisation).
        observation_scale: observations are divided by it after subtracting ``observation_loc``.

    Examples:
        >>> from torchrl_dtql.modules.critics import CriticMLP
        >>> from torchrl_dtql.modules.actors import GaussianPolicyNetwork
        >>> policy = ExportablePolicy(GaussianPolicyNetwork(3, 2, hidden_dim=8), [CriticMLP(5, hidden_dim=8)],
        ...                           action_low=-torch.ones(2), action_high=torch.ones(2), num_candidates=4)
        >>> policy(torch.randn(6, 3)).shape
        torch.Size([6, 2])
    """

    def __init__(
        self,
        policy_network: nn.Module,
        qvalue_networks: list[nn.Module] | None = None,
        *,
        action_low: Tensor,
        action_high: Tensor,
        num_candidates: int = 1024,
        temperature: float = 1.0,
        observation_loc: Tensor | None = None,
        observation_scale: Tensor | None = None,
    ) -> None:
        super().__init__()
        if num_candidates < 0:
            raise ValueError(f"num_candidates must be >= 0 (0 = mean action), got {num_candidates}.")
        if num_candidates > 0 and not qvalue_networks:
            raise ValueError("Q-reranking (num_candidates > 0) needs the Q networks.")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = argmax), got {temperature}.")
        self.policy_network = policy_network
        self.qvalue_networks = nn.ModuleList(qvalue_networks if num_candidates > 0 else [])
        self.num_candidates = int(num_candidates)
        self.temperature = float(temperature)
        self.register_buffer("action_loc", (action_high + action_low) / 2)
        self.register_buffer("action_scale", (action_high - action_low) / 2)
        self.normalize_observation = observation_loc is not None
        if observation_loc is not None:
            self.register_buffer("observation_loc", observation_loc.clone())
            self.register_buffer("observation_scale", observation_scale.clone())

    def _squash(self, pre_tanh: Tensor) -> Tensor:
        # TanhNormal's safe tanh: keep |tanh| one float resolution away from 1, then rescale to the bounds
        limit = 1.0 - torch.finfo(pre_tanh.dtype).resolution
        return self.action_loc + self.action_scale * pre_tanh.tanh().clamp(-limit, limit)

    def forward(self, observation: Tensor) -> Tensor:
        if self.normalize_observation:
            observation = (observation - self.observation_loc) / self.observation_scale
        if self.num_candidates == 0:
            loc, _ = self.policy_network(observation)
            return self._squash(loc)
        batch, n = observation.shape[0], self.num_candidates
        # [B, obs] -> [B * N, obs], state-major, exactly as QRerankingActor lays out its candidates
        states = repeat_for_candidates(observation, n)
        loc, scale = self.policy_network(states)
        actions = self._squash(loc + torch.randn_like(loc) * scale)
        min_q = torch.stack([q(states, actions) for q in self.qvalue_networks], 0).amin(0).reshape(batch, n)
        return rerank(actions.reshape(batch, n, -1), min_q, self.temperature)


def _module_with_params(module: nn.Module, params: TensorDictBase) -> nn.Module:
    """A deep copy of ``module`` holding detached copies of ``params``."""
    module = copy.deepcopy(module)
    params.detach().clone().to_module(module)
    return module


def make_exportable_policy(
    loss: nn.Module,
    *,
    num_candidates: int = 1024,
    temperature: float = 1.0,
    use_target_qvalue: bool = True,
    observation_loc: Tensor | None = None,
    observation_scale: Tensor | None = None,
) -> ExportablePolicy:
    """Copies the acting networks out of a trained :class:`~torchrl_dtql.DTQLLoss` into an :class:`ExportablePolicy`.

    Args:
        loss: the trained loss; its one-step actor must be :func:`~torchrl_dtql.make_one_step_actor`'s (a
            :class:`~torchrl_dtql.modules.actors.GaussianPolicyNetwork` inside a ``ProbabilisticActor``).

    Keyword Args:
        num_candidates: candidate actions per state for Q-reranking (reference: 1024); 0 exports the
            deterministic mean action, without the critic.
        temperature: softmax temperature on raw Q values; 0 means argmax.
        use_target_qvalue: rerank with the Polyak-averaged target critic (as the reference) or the online one.
        observation_loc: the dataset's observation mean, when the networks were trained on normalised
            observations (``observation_norm``); folded into the exported policy so that it takes raw observations.
        observation_scale: the matching std.

    Returns:
        A policy whose outputs equal those of :class:`~torchrl_dtql.QRerankingActor` ``.from_loss(loss, ...)``
        (or of the actor under ``ExplorationType.DETERMINISTIC`` when ``num_candidates == 0``) for the same seed.

    Examples:
        >>> from torchrl_dtql import DTQLLoss, make_dtql_modules
        >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=8), alpha=1.0)
        >>> policy = make_exportable_policy(loss, num_candidates=0)
        >>> policy(torch.zeros(1, 3)).shape
        torch.Size([1, 2])
    """
    actor = _module_with_params(loss.actor_network, loss.actor_network_params)
    policy_network = next((m for m in actor.modules() if isinstance(m, GaussianPolicyNetwork)), None)
    if policy_network is None:
        raise TypeError(
            "The loss's actor holds no GaussianPolicyNetwork: only actors built by make_one_step_actor can be "
            "exported."
        )
    action_spec = actor.spec[loss.tensor_keys.action]
    low = action_spec.space.low.detach().clone().float().cpu()
    high = action_spec.space.high.detach().clone().float().cpu()
    qvalue_networks = None
    if num_candidates > 0:
        stacked = loss.target_qvalue_network_params if use_target_qvalue else loss.qvalue_network_params
        qvalue_networks = []
        for member in range(stacked.shape[0]):
            qnet = _module_with_params(loss.qvalue_network, stacked[member])
            qvalue_networks.append(qnet.module if hasattr(qnet, "module") else qnet)
    policy = ExportablePolicy(
        policy_network,
        qvalue_networks,
        action_low=low,
        action_high=high,
        num_candidates=num_candidates,
        temperature=temperature,
        observation_loc=observation_loc,
        observation_scale=observation_scale,
    )
    return policy.cpu().eval().requires_grad_(False)
