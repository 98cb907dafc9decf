"""DTQL's loss module and its update steps (the reference's structure and the fast, compilable one)."""
from __future__ import annotations

from torchrl_dtql.objectives.dtql import DTQLLoss, expectile_loss
from torchrl_dtql.objectives.fast_update import DTQLUpdater, make_dtql_update_fn
from torchrl_dtql.objectives.update import cached_updater, DTQLOptimizers, dtql_update_step, make_dtql_optimizers

__all__ = [
    "DTQLLoss",
    "DTQLOptimizers",
    "DTQLUpdater",
    "cached_updater",
    "dtql_update_step",
    "expectile_loss",
    "make_dtql_optimizers",
    "make_dtql_update_fn",
]
