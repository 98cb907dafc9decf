"""DTQL's loss module, its loss terms and its update steps (the reference's structure and the fast, compilable one).

Import direction (no cycles): ``terms`` <- ``dtql`` <- ``optimizers`` <- ``fast_update`` <- ``update`` <-
``kl_distill``.
"""
from __future__ import annotations

from torchrl_dtql.objectives import terms
from torchrl_dtql.objectives.dtql import DTQLLoss
from torchrl_dtql.objectives.fast_update import DTQLUpdater, make_dtql_update_fn
from torchrl_dtql.objectives.optimizers import DTQLOptimizers, make_dtql_optimizers
from torchrl_dtql.objectives.terms import expectile_loss
from torchrl_dtql.objectives.update import cached_updater, dtql_update_step

__all__ = [
    "DTQLLoss",
    "DTQLOptimizers",
    "DTQLUpdater",
    "cached_updater",
    "dtql_update_step",
    "expectile_loss",
    "make_dtql_optimizers",
    "make_dtql_update_fn",
    "terms",
]
