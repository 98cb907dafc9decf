"""``DTQLEvaluationConfig``: the Hydra configuration of :class:`~torchrl_dtql.trainers.DTQLEvaluation`."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["DTQLEvaluationConfig"]


@dataclass
class DTQLEvaluationConfig:
    """Hydra configuration of the trainer's evaluation hook, with the example's evaluation keys.

    The trainer config's ``evaluation`` field takes it; the trainer builder calls it with the loss and the
    dataset's metadata, then registers the hook. Field names follow the example's ``logger.eval_*``, ``env.*`` and
    ``policy.*`` keys.

    Examples:
        >>> from omegaconf import OmegaConf
        >>> OmegaConf.structured(DTQLEvaluationConfig(eval_iter=1000)).eval_modes
        ['reranked', 'mean']
    """

    eval_iter: int = 50_000  # main-phase gradient steps between evaluations (and one at the end)
    eval_episodes: int = 10  # episodes per evaluation and acting mode
    eval_max_steps: int = 1000  # env steps per evaluation episode at most
    eval_envs: int = 10  # evaluation envs stepped together
    eval_modes: list[str] = field(default_factory=lambda: ["reranked", "mean"])  # reranked, mean, diffusion_bc
    num_candidates: int = 1024  # Q-reranking: candidate actions per state
    temperature: float = 1.0  # softmax temperature on raw Q values (0: argmax)
    use_target_qvalue: bool = True  # rerank with the Polyak-averaged critic, as the reference
    seed: int = 0  # the run's seed; the envs get seed + 100
    env_name: Any = None  # gymnasium id; None: the env recorded with the dataset
    env_kwargs: dict[str, Any] = field(default_factory=dict)  # extra gymnasium.make kwargs
    parallel: bool = False  # ParallelEnv instead of SerialEnv
    backend: str = "gymnasium"
    observation_norm: bool = False  # must match the replay buffer's observation_norm
    _target_: str = "torchrl_dtql.trainers.evaluation.DTQLEvaluation"
    _partial_: bool = True
