"""Hydra configurations for DTQL in TorchRL's config-driven trainers, registered in Hydra's ``ConfigStore`` on import.

Importing this module also imports (hence registers) TorchRL's own configurations, so that a config can mix both:

==================  =========================  ====================================================
group               name                       node
==================  =========================  ====================================================
``trainer``         ``dtql``                   :class:`DTQLTrainerConfig`
``loss``            ``dtql``                   :class:`DTQLLossConfig`
``model``           ``dtql_one_step_actor``    :class:`OneStepActorModelConfig`
``model``           ``edm_diffusion_actor``    :class:`EDMDiffusionActorModelConfig`
``model``           ``dtql_qvalue``            :class:`DTQLQValueModelConfig`
``model``           ``dtql_value``             :class:`DTQLValueModelConfig`
``replay_buffer``   ``offline``                :class:`OfflineReplayBufferConfig`
``evaluation``      ``dtql``                   :class:`DTQLEvaluationConfig`
==================  =========================  ====================================================

A TorchRL user of ``trainer@trainer: iql`` switches to DTQL by selecting ``trainer@trainer: dtql`` and
``loss@loss: dtql`` and the DTQL models; ``torchrl_dtql/trainers/recipes/dtql_offline.yaml`` is a complete example.
"""
from __future__ import annotations

from hydra.core.config_store import ConfigStore
from omegaconf import OmegaConf

# TorchRL registers its own groups (optimizer, logger, target_net_updater, ...) when this is imported.
import torchrl.trainers.algorithms.configs  # noqa: F401

from torchrl_dtql.trainers.configs.data import dataset_sizes, OfflineReplayBufferConfig
from torchrl_dtql.trainers.configs.evaluation import DTQLEvaluationConfig
from torchrl_dtql.trainers.configs.modules import (
    action_spec_from_bounds,
    DTQLQValueModelConfig,
    DTQLValueModelConfig,
    EDMDiffusionActorModelConfig,
    OneStepActorModelConfig,
)
from torchrl_dtql.trainers.configs.objectives import DTQLLossConfig
from torchrl_dtql.trainers.configs.trainers import DTQLTrainerConfig, REFERENCE_TAU

__all__ = [
    "DTQLEvaluationConfig",
    "DTQLLossConfig",
    "DTQLQValueModelConfig",
    "DTQLTrainerConfig",
    "DTQLValueModelConfig",
    "EDMDiffusionActorModelConfig",
    "OfflineReplayBufferConfig",
    "OneStepActorModelConfig",
    "REFERENCE_TAU",
    "action_spec_from_bounds",
    "register_dtql_configs",
]


def register_dtql_configs() -> None:
    """Stores DTQL's configurations in Hydra's ``ConfigStore`` and registers the ``dtql_dataset`` resolver (which
    reads a dataset's sizes, :func:`~torchrl_dtql.trainers.configs.data.dataset_sizes`); done on import, calling it
    again is harmless."""
    if not OmegaConf.has_resolver("dtql_dataset"):
        OmegaConf.register_new_resolver("dtql_dataset", dataset_sizes)
    cs = ConfigStore.instance()
    cs.store(group="trainer", name="dtql", node=DTQLTrainerConfig)
    cs.store(group="loss", name="dtql", node=DTQLLossConfig)
    cs.store(group="model", name="dtql_one_step_actor", node=OneStepActorModelConfig)
    cs.store(group="model", name="edm_diffusion_actor", node=EDMDiffusionActorModelConfig)
    cs.store(group="model", name="dtql_qvalue", node=DTQLQValueModelConfig)
    cs.store(group="model", name="dtql_value", node=DTQLValueModelConfig)
    cs.store(group="replay_buffer", name="offline", node=OfflineReplayBufferConfig)
    cs.store(group="evaluation", name="dtql", node=DTQLEvaluationConfig)


register_dtql_configs()
