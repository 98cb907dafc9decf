"""Moved: the SAC behaviour agent is :mod:`torchrl_dtql.data.maker.sac`, its actor
:mod:`torchrl_dtql.data.maker.behaviour_actor`; this module keeps the old import path working."""
from __future__ import annotations

from torchrl_dtql.data.maker.behaviour_actor import (
    ACTOR_FORMAT,
    load_behaviour_actor,
    make_behaviour_actor,
    save_behaviour_actor,
)
from torchrl_dtql.data.maker.sac import EvalRecord, SACBehaviourTrainer, SACConfig

__all__ = [
    "ACTOR_FORMAT",
    "EvalRecord",
    "SACBehaviourTrainer",
    "SACConfig",
    "load_behaviour_actor",
    "make_behaviour_actor",
    "save_behaviour_actor",
]
