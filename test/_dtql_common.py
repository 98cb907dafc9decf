"""Small builders shared by the core tests: tiny DTQL networks and TED batches."""
from __future__ import annotations

import torch
from tensordict import TensorDict

from torchrl_dtql import DTQLLoss, make_dtql_modules

OBS_DIM = 3
ACTION_DIM = 2
BATCH = 16
HIDDEN = 32


def make_batch(
    batch: int = BATCH,
    obs_dim: int = OBS_DIM,
    action_dim: int = ACTION_DIM,
    *,
    observation_key: str = "observation",
    action_key: str = "action",
    reward_key: str = "reward",
    done_key: str = "done",
    terminated_key: str = "terminated",
    seed: int = 0,
) -> TensorDict:
    """A TED batch with random observations, actions in [-1, 1], and some terminated transitions."""
    g = torch.Generator().manual_seed(seed)
    terminated = torch.rand(batch, 1, generator=g) < 0.25
    return TensorDict(
        {
            observation_key: torch.randn(batch, obs_dim, generator=g),
            action_key: torch.rand(batch, action_dim, generator=g) * 2 - 1,
            "next": TensorDict(
                {
                    observation_key: torch.randn(batch, obs_dim, generator=g),
                    reward_key: torch.randn(batch, 1, generator=g),
                    done_key: terminated.clone(),
                    terminated_key: terminated,
                },
                batch_size=[batch],
            ),
        },
        batch_size=[batch],
    )


def make_loss(**kwargs) -> DTQLLoss:
    """A tiny DTQLLoss with reference-shaped networks."""
    module_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in ("hidden_dim", "device")}
    module_kwargs.setdefault("hidden_dim", HIDDEN)
    modules = make_dtql_modules(OBS_DIM, ACTION_DIM, **module_kwargs)
    kwargs.setdefault("alpha", 1.0)
    return DTQLLoss(**modules, **kwargs)
