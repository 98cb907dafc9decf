"""Evaluation of acting policies in envs: the evaluation envs of a dataset, seeded episodes, score tables.

* :func:`make_eval_env`: batched envs checked against the dataset, with its observation transforms;
* :func:`evaluate`: seeded episodes under ``DETERMINISTIC`` -> raw and normalized return statistics;
  :func:`evaluate_policies` does it for several acting modes, :func:`run_episodes` returns the raw episodes;
* :func:`score_table`: final and best scores of an evaluation history.

Examples:
    >>> from torchrl.envs import DoubleToFloat, GymEnv, TransformedEnv
    >>> env = TransformedEnv(GymEnv("Pendulum-v1"), DoubleToFloat())
    >>> evaluate(env, None, episodes=1, max_steps=4, seed=0)["episode_length"]  # None: random actions
    4.0
"""
from __future__ import annotations

from torchrl_dtql.evaluation.envs import EvaluationEnvError, make_eval_env, make_single_eval_env, register_robotics_envs
from torchrl_dtql.evaluation.episodes import (
    EpisodeResults,
    evaluate,
    evaluate_policies,
    evaluation_env_steps,
    first_episode_returns,
    normalized_returns,
    return_statistics,
    run_episodes,
)
from torchrl_dtql.evaluation.history import score_table

__all__ = [
    "EpisodeResults",
    "EvaluationEnvError",
    "evaluate",
    "evaluate_policies",
    "evaluation_env_steps",
    "first_episode_returns",
    "make_eval_env",
    "make_single_eval_env",
    "normalized_returns",
    "register_robotics_envs",
    "return_statistics",
    "run_episodes",
    "score_table",
]
