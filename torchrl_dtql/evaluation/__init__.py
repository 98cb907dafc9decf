"""Evaluation of acting policies in envs: the evaluation envs of a dataset, seeded episodes, score tables.

* :func:`make_eval_env`: batched envs checked against the dataset, with its observation transforms; the env and
  its kwargs are :func:`resolve_eval_env`'s (the dataset's evaluation env, its family's protocol, the overrides);
* :mod:`~torchrl_dtql.evaluation.protocols`: how an episode is scored per family (D4RL's AntMaze success rate,
  Kitchen's subtask count, Adroit's normalized return, the normalized return elsewhere);
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

from torchrl_dtql.evaluation.envs import (
    EvalEnvOverrideWarning,
    EvalEnvSpec,
    EvalSpecWarning,
    EvaluationEnvError,
    make_eval_env,
    make_single_eval_env,
    register_robotics_envs,
    resolve_eval_env,
)
from torchrl_dtql.evaluation.episodes import (
    EpisodeResults,
    evaluate,
    evaluate_policies,
    evaluation_env_steps,
    first_episode_maxima,
    first_episode_returns,
    normalized_returns,
    return_statistics,
    run_episodes,
)
from torchrl_dtql.evaluation.history import score_table
from torchrl_dtql.evaluation.protocols import EvaluationProtocol, protocol_for

__all__ = [
    "EpisodeResults",
    "EvalEnvOverrideWarning",
    "EvalEnvSpec",
    "EvalSpecWarning",
    "EvaluationEnvError",
    "EvaluationProtocol",
    "evaluate",
    "evaluate_policies",
    "evaluation_env_steps",
    "first_episode_maxima",
    "first_episode_returns",
    "make_eval_env",
    "make_single_eval_env",
    "normalized_returns",
    "protocol_for",
    "register_robotics_envs",
    "resolve_eval_env",
    "return_statistics",
    "run_episodes",
    "score_table",
]
