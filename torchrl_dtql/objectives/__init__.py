"""DTQL's loss module and its update step."""
from __future__ import annotations

from torchrl_dtql.objectives.dtql import DTQLLoss, expectile_loss
from torchrl_dtql.objectives.update import DTQLOptimizers, dtql_update_step, make_dtql_optimizers

__all__ = ["DTQLLoss", "DTQLOptimizers", "dtql_update_step", "expectile_loss", "make_dtql_optimizers"]
