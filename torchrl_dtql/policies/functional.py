"""A policy that acts with one of a loss's networks, called with the loss's own (trained) parameters."""
from __future__ import annotations

from tensordict import TensorDictBase
from tensordict.nn import TensorDictModuleBase
from torchrl.envs.utils import ExplorationType, set_exploration_type

__all__ = ["FunctionalPolicy"]


class FunctionalPolicy(TensorDictModuleBase):
    """Acts with a loss's stateless network and its parameters, read by reference, under a fixed exploration type.

    A :class:`~torchrl.objectives.LossModule` keeps the trained parameters apart from the network
    (``loss.actor_network`` and ``loss.actor_network_params``); this module puts them together for acting, so a
    policy built before training acts with the weights of the latest optimizer step. The exploration type is
    fixed here, whatever the caller's (an evaluation runs under ``DETERMINISTIC``, but the diffusion model is
    sampled under ``RANDOM``).

    Args:
        module: the loss's stateless network (e.g. ``loss.actor_network``).
        params: its parameters (e.g. ``loss.actor_network_params``).
        exploration: the exploration type the network runs under (``DETERMINISTIC``: the mean action of the
            one-step policy; ``RANDOM``: a sample, e.g. of the diffusion model).

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl_dtql import DTQLLoss, make_dtql_modules
        >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=8), alpha=1.0)
        >>> policy = FunctionalPolicy(loss.actor_network, loss.actor_network_params, ExplorationType.DETERMINISTIC)
        >>> policy(TensorDict(observation=torch.zeros(4, 3), batch_size=[4]))["action"].shape
        torch.Size([4, 2])
    """

    def __init__(self, module: TensorDictModuleBase, params: TensorDictBase, exploration: ExplorationType) -> None:
        super().__init__()
        self.module = module
        self.params = params
        self.exploration = exploration
        self.in_keys = list(module.in_keys)
        self.out_keys = list(module.out_keys)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        with set_exploration_type(self.exploration), self.params.to_module(self.module):
            return self.module(tensordict)
