"""The 2D trust-region study of DTQL (``dtql_spec.md`` section 7): bandit datasets, rewards, metrics, training.

The state is a constant 0: a contextual bandit with one context, whose 2D actions are drawn from a dataset
(``25gaussians``, ``swissroll``, or one added with :func:`register_toy_dataset`) and scored by a reward (``near``,
``far``, ``hard``, ``same``, or one added with :func:`register_toy_reward`). ``examples/toy_2d.py`` draws the
figure; the training recipes live in :mod:`torchrl_dtql.toy.train`.
"""
from __future__ import annotations

from torchrl_dtql.toy.bandit import make_bandit_batch, toy_action_spec
from torchrl_dtql.toy.datasets import make_toy_dataset, register_toy_dataset, toy_dataset_names, ToyDataset
from torchrl_dtql.toy.metrics import best_modes, nearest_distance, toy_policy_metrics
from torchrl_dtql.toy.rewards import make_toy_reward, register_toy_reward, toy_reward_names, ToyReward

__all__ = [
    "ToyDataset",
    "ToyReward",
    "best_modes",
    "make_bandit_batch",
    "make_toy_dataset",
    "make_toy_reward",
    "nearest_distance",
    "register_toy_dataset",
    "register_toy_reward",
    "toy_action_spec",
    "toy_dataset_names",
    "toy_policy_metrics",
    "toy_reward_names",
]
