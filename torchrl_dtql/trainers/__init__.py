"""DTQL in TorchRL's trainer machinery: ``DTQLTrainer``, its optimization stepper, the offline schedule and the
example's evaluation as a trainer hook.

The Hydra configuration dataclasses (``DTQLTrainerConfig``, ``DTQLLossConfig``, ...) live in
:mod:`torchrl_dtql.trainers.configs`, which needs ``hydra-core`` and registers them in Hydra's ``ConfigStore``
when imported, as :mod:`torchrl.trainers.algorithms.configs` does for TorchRL's own.
"""
from __future__ import annotations

from torchrl_dtql.trainers.dtql import DTQLTrainer
from torchrl_dtql.trainers.evaluation import DTQLEvaluation
from torchrl_dtql.trainers.offline import OfflineSchedule
from torchrl_dtql.trainers.stepper import DTQLOptimizationStepper, MAIN_PHASE_ONLY_KEYS

__all__ = ["DTQLEvaluation", "DTQLOptimizationStepper", "DTQLTrainer", "MAIN_PHASE_ONLY_KEYS", "OfflineSchedule"]
