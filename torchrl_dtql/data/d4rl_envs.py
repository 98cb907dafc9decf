"""The D4RL protocol's evaluation env of a D4RL task, in gymnasium(-robotics) terms.

D4RL evaluates AntMaze in its own mujoco-py mazes, Adroit in ``mjrl`` envs and Kitchen in ``adept_envs``; none of them
installs next to gymnasium 1.x. This module names, for a D4RL task (``antmaze-umaze-v0``, ``pen-human-v1``,
``kitchen-partial-v0``, from a file name or a Minari id), the gymnasium-robotics env and the ``gymnasium.make``
keyword arguments that reproduce D4RL's evaluation protocol:

* **AntMaze** (``d4rl/locomotion``): D4RL's single-goal evaluation mazes (``*_MAZE_TEST``: one reset cell, one goal
  cell), an episode that ends when the ant reaches the goal (``eval=True`` there, ``continuing_task=False`` here),
  700 steps on umaze and 1000 on medium and large, the sparse reward (1 at the goal);
* **Adroit** (``d4rl/hand_manipulation_suite``): ``AdroitHand<Task>-v1`` with D4RL's episode lengths (pen 100, the
  others 200; gymnasium-robotics registers 200 for all);
* **Kitchen** (``d4rl/kitchen``): ``FrankaKitchen-v1`` with the task's four subtasks, a subtask rewarded once (removed
  when completed), the episode ending when all four are done, 280 steps.

The evaluation protocols (:mod:`torchrl_dtql.evaluation.protocols`) force the same episode rules on any dataset of
these families, a Minari one included.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ADROIT_EPISODE_STEPS",
    "ANTMAZE_EPISODE_RULES",
    "KITCHEN_EPISODE_RULES",
    "KITCHEN_TASKS",
    "D4RLEvalEnv",
    "d4rl_eval_env",
]

R, G = "r", "g"  # gymnasium-robotics' reset and goal cells, as in D4RL

# D4RL's evaluation mazes (maze_env.py U_MAZE_TEST, BIG_MAZE_TEST, HARDEST_MAZE_TEST) with their rows reversed: D4RL
# places row i at y = 4 i, gymnasium-robotics at y = -4 i, so the reversed map has D4RL's walls, start and goal in the
# same places relative to each other (the origin differs: D4RL's is the reset cell, gymnasium-robotics' the centre).
_D4RL_MAZES: dict[str, list[list[int | str]]] = {
    "umaze": [
        [1, 1, 1, 1, 1],
        [1, G, 0, 0, 1],
        [1, 1, 1, 0, 1],
        [1, R, 0, 0, 1],
        [1, 1, 1, 1, 1],
    ],
    "medium": [
        [1, 1, 1, 1, 1, 1, 1, 1],
        [1, 0, 0, 0, 1, 0, G, 1],
        [1, 0, 1, 0, 0, 1, 0, 1],
        [1, 0, 0, 1, 0, 0, 0, 1],
        [1, 1, 0, 0, 0, 1, 1, 1],
        [1, 0, 0, 1, 0, 0, 0, 1],
        [1, R, 0, 1, 1, 0, 0, 1],
        [1, 1, 1, 1, 1, 1, 1, 1],
    ],
    "large": [
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
        [1, 0, 0, 1, 0, 0, 0, 1, 0, G, 0, 1],
        [1, 1, 0, 1, 0, 1, 0, 1, 0, 1, 1, 1],
        [1, 0, 0, 1, 0, 1, 0, 0, 0, 0, 0, 1],
        [1, 0, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1],
        [1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1],
        [1, 0, 1, 1, 0, 1, 0, 1, 0, 1, 0, 1],
        [1, R, 0, 0, 0, 1, 0, 0, 0, 0, 0, 1],
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1],
    ],
}
#: maze -> (gymnasium-robotics id, D4RL's episode length)
_ANTMAZE_ENVS = {"umaze": ("AntMaze_UMaze-v4", 700), "medium": ("AntMaze_Medium-v4", 1000),
                 "large": ("AntMaze_Large-v4", 1000)}  # fmt: skip

#: What D4RL's AntMaze evaluation does with an episode: it ends when the ant reaches the goal, which stays put.
ANTMAZE_EPISODE_RULES: dict[str, Any] = {"continuing_task": False, "reset_target": False}

#: D4RL's Adroit v1 episode lengths (``hand_manipulation_suite/__init__.py`` MAX_STEPS).
ADROIT_EPISODE_STEPS: dict[str, int] = {"pen": 100, "door": 200, "hammer": 200, "relocate": 200}

#: D4RL's Kitchen episodes (``kitchen_envs.py``): a subtask counts once, all four done ends it, 280 steps.
KITCHEN_EPISODE_RULES: dict[str, Any] = {
    "remove_task_when_completed": True,
    "terminate_on_tasks_completed": True,
    "max_episode_steps": 280,
}

#: The four subtasks of each D4RL kitchen task (``kitchen-complete`` and ``-partial`` share them).
KITCHEN_TASKS: dict[str, list[str]] = {
    "complete": ["microwave", "kettle", "light switch", "slide cabinet"],
    "partial": ["microwave", "kettle", "light switch", "slide cabinet"],
    "mixed": ["microwave", "kettle", "bottom burner", "light switch"],
}


@dataclass(frozen=True)
class D4RLEvalEnv:
    """A D4RL task's evaluation env: the gymnasium id, its ``gymnasium.make`` kwargs, and how to flatten its dict
    observation into D4RL's vector (``None``: the env's observation already is it)."""

    task: str
    env_id: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    observation_keys: tuple[str, ...] | None = None


def d4rl_eval_env(name: str) -> D4RLEvalEnv | None:
    """The D4RL protocol's evaluation env of the AntMaze, Adroit or Kitchen task in ``name``, else ``None``.

    ``name`` is a D4RL dataset or file name (``antmaze-medium-play-v2.hdf5``) or a Minari id
    (``D4RL/kitchen/mixed-v2``). AntMaze observations are flattened as ``achieved_goal`` (the ant's x, y) then
    ``observation``, D4RL's layout (``qpos[:15]``, ``qvel[:14]``).

    Examples:
        >>> env = d4rl_eval_env("antmaze-umaze-diverse-v0.hdf5")
        >>> env.env_id, env.kwargs["max_episode_steps"], env.kwargs["continuing_task"], env.observation_keys
        ('AntMaze_UMaze-v4', 700, False, ('achieved_goal', 'observation'))
        >>> d4rl_eval_env("D4RL/pen/human-v2").kwargs
        {'max_episode_steps': 100}
        >>> d4rl_eval_env("kitchen-mixed-v0").kwargs["tasks_to_complete"]
        ['microwave', 'kettle', 'bottom burner', 'light switch']
        >>> d4rl_eval_env("hopper-medium-v2") is None
        True
    """
    low = name.lower().replace("/", "-")
    maze = re.search(r"(?:^|-)antmaze-(umaze|medium|large)", low)
    if maze:
        env_id, steps = _ANTMAZE_ENVS[maze.group(1)]
        kwargs = {"maze_map": [list(row) for row in _D4RL_MAZES[maze.group(1)]], **ANTMAZE_EPISODE_RULES,
                  "max_episode_steps": steps}  # fmt: skip
        return D4RLEvalEnv(f"antmaze-{maze.group(1)}", env_id, kwargs, ("achieved_goal", "observation"))
    adroit = re.search(r"(?:^|-)(pen|door|hammer|relocate)-", low)
    if adroit:
        task = adroit.group(1)
        return D4RLEvalEnv(task, f"AdroitHand{task.capitalize()}-v1", {"max_episode_steps": ADROIT_EPISODE_STEPS[task]})
    kitchen = re.search(r"(?:^|-)kitchen-(complete|partial|mixed)", low)
    if kitchen:
        kwargs = {"tasks_to_complete": list(KITCHEN_TASKS[kitchen.group(1)]), **KITCHEN_EPISODE_RULES}
        return D4RLEvalEnv(f"kitchen-{kitchen.group(1)}", "FrankaKitchen-v1", kwargs)
    return None
