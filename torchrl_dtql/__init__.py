"""torchrl-dtql: Diffusion Trusted Q-Learning (DTQL) for TorchRL.

The public names: the loss and its update step, the networks it trains and its evaluation policy.
Offline data lives in :mod:`torchrl_dtql.data`, the acting policies in :mod:`torchrl_dtql.policies`, evaluation in
:mod:`torchrl_dtql.evaluation`.
"""
from __future__ import annotations

from torchrl_dtql.modules import (
    EDMConfig,
    EDMDenoiserNetwork,
    EDMDiffusionActor,
    EDMDiffusionModel,
    make_dtql_modules,
    make_one_step_actor,
    make_qvalue_network,
    make_value_network,
)
from torchrl_dtql.objectives import (
    DTQLLoss,
    DTQLOptimizers,
    DTQLUpdater,
    dtql_update_step,
    make_dtql_optimizers,
    make_dtql_update_fn,
)
from torchrl_dtql.policies import QRerankingActor

__version__ = "0.1.0"

__all__ = [
    "DTQLLoss",
    "DTQLOptimizers",
    "DTQLUpdater",
    "EDMConfig",
    "EDMDenoiserNetwork",
    "EDMDiffusionActor",
    "EDMDiffusionModel",
    "QRerankingActor",
    "dtql_update_step",
    "make_dtql_modules",
    "make_dtql_optimizers",
    "make_dtql_update_fn",
    "make_one_step_actor",
    "make_qvalue_network",
    "make_value_network",
]
