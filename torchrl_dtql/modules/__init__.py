"""DTQL's networks: EDM maths, the denoiser, actors, critics and the builder.

The acting policies built on them (Q-reranking, the acting modes) live in :mod:`torchrl_dtql.policies`, which
imports this package, never the other way round (``QRerankingActor``: ``from torchrl_dtql import QRerankingActor``).
"""
from __future__ import annotations

from typing import Any

from torchrl_dtql.modules.actors import GaussianPolicyNetwork, make_one_step_actor
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


#: Names that moved out of :mod:`torchrl_dtql.modules`, and where they live now.
MOVED = {"QRerankingActor": "torchrl_dtql.policies"}


def __getattr__(name: str) -> Any:
    """A name that moved to :mod:`torchrl_dtql.policies` fails with where to import it from (no import here: the
    networks never depend on the policies)."""
    if name in MOVED:
        raise AttributeError(f"{name} moved: `from {MOVED[name]} import {name}` (or `from torchrl_dtql import {name}`).")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
