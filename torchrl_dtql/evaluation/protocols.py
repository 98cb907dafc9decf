"""How an evaluation episode is scored, per task family: D4RL's protocols as small named pieces.

Each :class:`EvaluationProtocol` says which ``gymnasium.make`` keyword arguments its episodes need (set over the
dataset's recorded ones), which per-step entries of the env's ``info`` dict to record, and how to turn an episode
into a 0-100 score. :func:`protocol_for` picks one from the task family of the env (or dataset):

* ``antmaze``: an episode ends when the ant reaches the goal (``continuing_task=False``, ``reset_target=False``);
  its score is 100 x success (``info["success"]``), so the mean is D4RL's 100 x success rate (D4RL's return is 0
  or 1, normalized by 0 and 1);
* ``kitchen``: a subtask counts once and all done ends the episode (``remove_task_when_completed``,
  ``terminate_on_tasks_completed``, 280 steps); its score is 100 x subtasks completed / subtasks, D4RL's return
  (one per subtask) normalized by 0 and 4;
* ``adroit``: D4RL's episode length (pen 100 steps, door, hammer, relocate 200); its score is D4RL's normalized
  return with D4RL's references (pen: 96.26 and 3076.83);
* ``return`` (every other task): the env as the dataset recorded it; the normalized return, with the dataset's
  references, else D4RL's by family.

Examples:
    >>> protocol_for(None).name, protocol_for_task("AntMaze_UMaze-v4").env_rules
    ('return', {'continuing_task': False, 'reset_target': False})
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TYPE_CHECKING

import numpy as np
import torch
from torchrl.envs.gym_like import BaseInfoDictReader

from torchrl_dtql.data import D4RL_REF_SCORES
from torchrl_dtql.data.d4rl_envs import ADROIT_EPISODE_STEPS, ANTMAZE_EPISODE_RULES, KITCHEN_EPISODE_RULES
from torchrl_dtql.data.scores import task_family

if TYPE_CHECKING:
    from torchrl_dtql.data import OfflineDatasetInfo

__all__ = [
    "ADROIT",
    "ANTMAZE",
    "KITCHEN",
    "RETURN",
    "EpisodeInfoReader",
    "EvaluationProtocol",
    "protocol_for",
    "protocol_for_task",
]

#: ``(returns [N] float64, per-episode info maxima {key: [N]}, dataset info) -> per-episode 0-100 scores or None``
ScoreFunction = Callable[[np.ndarray, Mapping[str, np.ndarray], Any], "np.ndarray | None"]


@dataclass(frozen=True)
class EvaluationProtocol:
    """One family's evaluation protocol: its episode rules, what it records of each step, how it scores.

    Attributes:
        name: ``"antmaze"``, ``"kitchen"``, ``"adroit"`` or ``"return"``.
        description: how the score is computed, for logs, summaries and docs.
        env_rules: ``gymnasium.make`` kwargs the protocol sets over the dataset's recorded ones.
        info_entries: per-step entries read from the env's ``info`` dict: ``name -> (reader, dtype)``; an episode
            keeps the largest value of each (a success seen once, the final count of completed subtasks).
        score: the per-episode 0-100 scores (``None`` when none can be computed, e.g. no reference scores).
        metrics: the ``info_entries`` reported beside the score (their mean, std and standard error).
        check: ``(env kwargs, dataset info) -> warnings``: what looks wrong with the resolved env for this dataset.
    """

    name: str
    description: str
    score: ScoreFunction
    env_rules: Mapping[str, Any] = field(default_factory=dict)
    info_entries: Mapping[str, tuple[Callable[[Mapping[str, Any]], Any], torch.dtype]] = field(default_factory=dict)
    metrics: tuple[str, ...] = ()
    check: Callable[[Mapping[str, Any], Any], list[str]] | None = None


class EpisodeInfoReader(BaseInfoDictReader):
    """Writes a protocol's ``info_entries`` of each step (and of the reset) into TorchRL's step TensorDicts.

    Examples:
        >>> from tensordict import TensorDict
        >>> reader = EpisodeInfoReader(ANTMAZE.info_entries)
        >>> reader({"success": True}, TensorDict())["success"]
        tensor(True)
    """

    def __init__(self, entries: Mapping[str, tuple[Callable[[Mapping[str, Any]], Any], torch.dtype]]) -> None:
        from torchrl.data import Unbounded

        self.entries = dict(entries)
        self._spec = {key: Unbounded(shape=(), dtype=dtype) for key, (_, dtype) in self.entries.items()}

    def __call__(self, info_dict: dict[str, Any], tensordict: Any) -> Any:
        for key, (read, dtype) in self.entries.items():
            tensordict.set(key, torch.tensor(read(info_dict), dtype=dtype))
        return tensordict

    @property
    def info_spec(self) -> dict[str, Any]:
        return self._spec


# ---------------------------------------------------------------------------------------------------------------------
# Readers of info entries and score functions (module-level, so that a ParallelEnv can pickle them)
# ---------------------------------------------------------------------------------------------------------------------


def _read_success(info: Mapping[str, Any]) -> bool:
    return bool(info.get("success", False))


def _read_tasks_completed(info: Mapping[str, Any]) -> int:
    return len(info.get("episode_task_completions", ()))


def _read_tasks_total(info: Mapping[str, Any]) -> int:
    # remaining + completed: with remove_task_when_completed the remaining list shrinks, without it it does not
    return len(set(info.get("tasks_to_complete", ())) | set(info.get("episode_task_completions", ())))


def _score_normalized_return(returns: np.ndarray, values: Mapping[str, np.ndarray], info: Any) -> np.ndarray | None:
    if info is None:
        return None
    try:
        return np.asarray(info.normalized_score(returns), dtype=np.float64).reshape(-1)
    except KeyError:  # no reference scores known for this dataset / env
        return None


def _score_success_rate(returns: np.ndarray, values: Mapping[str, np.ndarray], info: Any) -> np.ndarray:
    return 100.0 * values["success"].astype(np.float64)


def _score_task_fraction(returns: np.ndarray, values: Mapping[str, np.ndarray], info: Any) -> np.ndarray:
    total = np.maximum(values["tasks_total"].astype(np.float64), 1.0)
    return 100.0 * values["tasks_completed"].astype(np.float64) / total


@dataclass(frozen=True)
class _D4RLReturn:
    """``100 (R - ref_min) / (ref_max - ref_min)`` with D4RL's references of ``family`` (picklable)."""

    family: str

    def __call__(self, returns: np.ndarray, values: Mapping[str, np.ndarray], info: Any) -> np.ndarray:
        low, high = D4RL_REF_SCORES[self.family]
        return 100.0 * (np.asarray(returns, dtype=np.float64) - low) / (high - low)


def _check_maze_walls(kwargs: Mapping[str, Any], info: Any) -> list[str]:
    """A warning when the evaluation maze has other walls than the maze the data was recorded in."""
    recorded = (getattr(info, "extra", None) or {}).get("recorded_env") or {}
    data_maze, eval_maze = (recorded.get("kwargs") or {}).get("maze_map"), kwargs.get("maze_map")
    if data_maze is None or eval_maze is None:
        return []

    def walls(maze: Any) -> list[list[bool]]:
        return [[cell == 1 for cell in row] for row in maze]

    if walls(data_maze) == walls(eval_maze):
        return []
    return [
        f"the evaluation maze_map of dataset {getattr(info, 'dataset_id', '?')!r} has other walls than the maze its "
        f"data was recorded in ({recorded.get('id')}: {data_maze}); Minari's D4RL/antmaze/umaze eval specs are "
        "mirrored (Minari issue #304). To evaluate in the data's maze, set env.kwargs.maze_map to it."
    ]


# ---------------------------------------------------------------------------------------------------------------------
# The protocols
# ---------------------------------------------------------------------------------------------------------------------

RETURN = EvaluationProtocol(
    name="return",
    description="normalized return: 100 (R - ref_min) / (ref_max - ref_min), the dataset's references, else D4RL's",
    score=_score_normalized_return,
)

ANTMAZE = EvaluationProtocol(
    name="antmaze",
    description="D4RL AntMaze: an episode ends when the ant reaches the goal; score = 100 x success rate",
    score=_score_success_rate,
    env_rules=dict(ANTMAZE_EPISODE_RULES),
    info_entries={"success": (_read_success, torch.bool)},
    metrics=("success",),
    check=_check_maze_walls,
)

KITCHEN = EvaluationProtocol(
    name="kitchen",
    description=(
        "D4RL Kitchen: a subtask counts once, the episode ends when all are done (280 steps); "
        "score = 100 x subtasks completed / subtasks (D4RL: return normalized by 0 and 4)"
    ),
    score=_score_task_fraction,
    env_rules=dict(KITCHEN_EPISODE_RULES),
    info_entries={"tasks_completed": (_read_tasks_completed, torch.int64),
                  "tasks_total": (_read_tasks_total, torch.int64)},  # fmt: skip
    metrics=("tasks_completed",),
)


def adroit_protocol(task: str) -> EvaluationProtocol:
    """D4RL's Adroit protocol for ``task`` (pen, door, hammer, relocate): its episode length, its references.

    Examples:
        >>> adroit_protocol("pen").env_rules
        {'max_episode_steps': 100}
    """
    low, high = D4RL_REF_SCORES[task]
    return EvaluationProtocol(
        name="adroit",
        description=(
            f"D4RL Adroit {task}: {ADROIT_EPISODE_STEPS[task]}-step episodes; score = D4RL's normalized return "
            f"100 (R - {low:g}) / ({high:g} - {low:g})"
        ),
        score=_D4RLReturn(task),
        env_rules={"max_episode_steps": ADROIT_EPISODE_STEPS[task]},
        info_entries={"success": (_read_success, torch.bool)},
        metrics=("success",),
    )


ADROIT = adroit_protocol("pen")


def protocol_for_task(name: str | None) -> EvaluationProtocol:
    """The protocol of the task family of a dataset or env name (``RETURN`` when it has none of its own).

    Examples:
        >>> [protocol_for_task(n).name for n in ("D4RL/antmaze/umaze-v1", "FrankaKitchen-v1", "pen-human-v1",
        ...                                      "Hopper-v5", None)]
        ['antmaze', 'kitchen', 'adroit', 'return', 'return']
    """
    family = task_family(name) if name else None
    if family == "antmaze":
        return ANTMAZE
    if family == "kitchen":
        return KITCHEN
    if family in ADROIT_EPISODE_STEPS:
        return adroit_protocol(family)
    return RETURN


def protocol_for(info: OfflineDatasetInfo | None, env_id: str | None = None) -> EvaluationProtocol:
    """The protocol of an evaluation: by the family of the env evaluated in (``env_id``, else the dataset's env),
    else of the dataset id; ``RETURN`` without a dataset.

    Examples:
        >>> protocol_for(None, "AntMaze_Large-v4").name
        'antmaze'
    """
    for name in (env_id, getattr(info, "env_id", None), getattr(info, "dataset_id", None)):
        if name and task_family(name) is not None:
            return protocol_for_task(name)
    return RETURN
