"""DTQL's networks: EDM maths, the denoiser, actors, critics and the builder."""
from __future__ import annotations

from torchrl_dtql.modules.actors import GaussianPolicyNetwork, make_one_step_actor, QRerankingActor
from torchrl_dtql.modules.builders import make_dtql_modules
from torchrl_dtql.modules.critics import CriticMLP, make_qvalue_network, make_value_network
from torchrl_dtql.modules.denoiser import EDMDenoiserNetwork, SinusoidalTimeEmbedding
from torchrl_dtql.modules.diffusion_actor import EDMDiffusionActor, EDMDiffusionModel
from torchrl_dtql.modules.edm import (
    EDMConfig,
    LogLogisticSigmaSampler,
    edm_loss_weight,
    edm_preconditioning,
    edm_sample,
    karras_sigmas,
)

__all__ = [
    "CriticMLP",
    "EDMConfig",
    "EDMDenoiserNetwork",
    "EDMDiffusionActor",
    "EDMDiffusionModel",
    "GaussianPolicyNetwork",
    "LogLogisticSigmaSampler",
    "QRerankingActor",
    "SinusoidalTimeEmbedding",
    "edm_loss_weight",
    "edm_preconditioning",
    "edm_sample",
    "karras_sigmas",
    "make_dtql_modules",
    "make_one_step_actor",
    "make_qvalue_network",
    "make_value_network",
]
