"""Tiny Minari datasets recorded here in gymnasium-robotics envs (AntMaze, Kitchen, Adroit pen), with Minari's own
API and an evaluation env spec as Minari's D4RL datasets record one, plus the scripted moves the tests use.

The recording follows Minari's generation scripts: AntMaze is recorded as a continuing task (``continuing_task=True,
reset_target=False``) and evaluated in a copy of that spec with a one-goal maze; Kitchen is recorded with subtasks
that are neither removed nor terminating and evaluated in the same spec. Actions are random; a few steps are
"scripted" by moving the simulator's state (the ant onto the goal, the microwave door open) so that the data and
the episodes hold goal rewards and completed subtasks.
"""
from __future__ import annotations

import copy
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

R, G = "r", "g"
#: The maze the AntMaze data is recorded in (gymnasium-robotics' U_MAZE walls, D4RL's umaze layout).
DATA_MAZE = [[1, 1, 1, 1, 1], [1, G, 0, 0, 1], [1, 1, 1, 0, 1], [1, R, 0, 0, 1], [1, 1, 1, 1, 1]]
#: Its evaluation maze: the same walls, one reset cell and one goal cell (as Minari's medium and large specs).
EVAL_MAZE = [[1, 1, 1, 1, 1], [1, 0, G, 0, 1], [1, 1, 1, 0, 1], [1, R, 0, 0, 1], [1, 1, 1, 1, 1]]
#: Minari's umaze evaluation maze: mirrored walls (Minari issue #304).
MIRRORED_MAZE = [[1, 1, 1, 1, 1], [1, 0, 0, R, 1], [1, 0, 1, 1, 1], [1, 0, 0, G, 1], [1, 1, 1, 1, 1]]
KITCHEN_TASKS = ["microwave", "kettle", "light switch", "slide cabinet"]
#: qpos entries and goal values of two kitchen subtasks (gymnasium-robotics' OBS_ELEMENT_INDICES / _GOALS).
KITCHEN_GOAL_STATES = {"microwave": ([22], [-0.75]), "light switch": ([17, 18], [-0.69, -0.05])}
PEN_REFS = (96.262799, 3076.8331017826877)  # D4RL's pen references


def register_robotics() -> None:
    import gymnasium
    import gymnasium_robotics

    gymnasium.register_envs(gymnasium_robotics)


def move_ant_to_goal(gym_env: Any) -> None:
    """Place the ant of a gymnasium-robotics AntMaze env (any wrapper) on its goal, velocities kept."""
    maze = gym_env.unwrapped
    qpos, qvel = maze.ant_env.data.qpos.copy(), maze.ant_env.data.qvel.copy()
    qpos[:2] = maze.goal
    maze.ant_env.set_state(qpos, qvel)


def complete_kitchen_subtask(gym_env: Any, task: str) -> None:
    """Put the joints of a kitchen subtask in their goal state (the next step counts it as completed)."""
    kitchen = gym_env.unwrapped
    qpos, qvel = kitchen.data.qpos.copy(), kitchen.data.qvel.copy()
    indices, goal = KITCHEN_GOAL_STATES[task]
    qpos[indices] = goal
    kitchen.robot_env.set_state(qpos, qvel)


def _stack(items: list[Any]) -> Any:
    """A list of (nested dict) observations -> the same structure of stacked arrays."""
    if isinstance(items[0], Mapping):
        return {key: _stack([item[key] for item in items]) for key in items[0]}
    return np.asarray(items)


def record_dataset(
    root: Path,
    dataset_id: str,
    env_id: str,
    env_kwargs: dict[str, Any],
    *,
    eval_kwargs: dict[str, Any] | None = None,
    eval_env_id: str | None = None,
    eval_entry_point: str | None = None,
    episodes: int = 2,
    steps: int = 30,
    script: Callable[[Any, int, int], None] | None = None,
    refs: tuple[float, float] | None = (0.0, 1.0),
) -> None:
    """Record ``episodes`` random-action episodes of ``steps`` steps in ``env_id(**env_kwargs)`` under
    ``root`` (a Minari root) with ``minari.create_dataset_from_buffers``.

    The evaluation spec is a copy of the recording env's spec with ``eval_kwargs`` set (or another id / entry point);
    ``script(env, episode, step)`` may move the simulator before each step. With ``refs=None`` no reference scores
    are stored (Minari then never builds the evaluation env: a spec naming an env that is not installed).
    """
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    register_robotics()
    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        env = gym.make(env_id, **env_kwargs)
        rng = np.random.default_rng(0)
        buffers = []
        for episode in range(episodes):
            observation, _ = env.reset(seed=episode)
            observations, actions, rewards, terminations, truncations = [observation], [], [], [], []
            for t in range(steps):
                if script is not None:
                    script(env, episode, t)
                action = rng.uniform(-1, 1, size=env.action_space.shape).astype(np.float32)
                observation, reward, terminated, truncated, _ = env.step(action)
                truncated = (truncated or t == steps - 1) and not terminated
                observations.append(copy.deepcopy(observation))
                actions.append(action)
                rewards.append(reward)
                terminations.append(terminated)
                truncations.append(truncated)
                if terminated or truncated:
                    break
            buffers.append(EpisodeBuffer(
                id=episode, seed=episode, observations=_stack(observations), actions=np.asarray(actions),
                rewards=np.asarray(rewards, dtype=np.float64), terminations=np.asarray(terminations),
                truncations=np.asarray(truncations), infos={},
            ))  # fmt: skip
        eval_spec = copy.deepcopy(env.spec)
        eval_spec.kwargs.update(eval_kwargs or {})
        if eval_env_id is not None:
            eval_spec.id = eval_env_id
        if eval_entry_point is not None:
            eval_spec.entry_point = eval_entry_point
        minari.create_dataset_from_buffers(
            dataset_id=dataset_id,
            buffer=buffers,
            env=env.spec,
            eval_env=eval_spec,
            algorithm_name="random",
            author="test",
            author_email="test@example.com",
            code_permalink="https://example.com",
            description=f"tiny random {env_id} dataset for the robotics evaluation tests",
            data_format="hdf5",
            ref_min_score=None if refs is None else refs[0],
            ref_max_score=None if refs is None else refs[1],
        )
        env.close()
    finally:
        os.environ.pop("MINARI_DATASETS_PATH", None)


def antmaze_script(env: Any, episode: int, step: int) -> None:
    """Episode 0 reaches the goal at step 10 (the data then holds sparse goal rewards)."""
    if episode == 0 and step == 10:
        move_ant_to_goal(env)


def kitchen_script(env: Any, episode: int, step: int) -> None:
    """Episode 0 opens the microwave at step 5."""
    if episode == 0 and step == 5:
        complete_kitchen_subtask(env, "microwave")


def write_antmaze(root: Path, dataset_id: str = "test/antmaze/umaze-v1", eval_maze: list | None = None) -> None:
    """A Minari-like AntMaze dataset: recorded as a continuing task in DATA_MAZE, evaluated in ``eval_maze``."""
    record_dataset(
        root, dataset_id, "AntMaze_UMaze-v4", {"maze_map": DATA_MAZE, "continuing_task": True, "reset_target": False},
        eval_kwargs={"maze_map": EVAL_MAZE if eval_maze is None else eval_maze}, script=antmaze_script, steps=25,
    )  # fmt: skip


def write_kitchen(root: Path, dataset_id: str = "test/kitchen/partial-v2") -> None:
    """A Minari-like kitchen dataset: four subtasks never removed nor terminating, 450-step spec (Minari's partial)."""
    kwargs = {"tasks_to_complete": KITCHEN_TASKS, "remove_task_when_completed": False,
              "terminate_on_tasks_completed": False, "max_episode_steps": 450}  # fmt: skip
    record_dataset(root, dataset_id, "FrankaKitchen-v1", kwargs, script=kitchen_script, steps=15, refs=(0.0, 4.0))


def write_pen(root: Path, dataset_id: str = "test/pen/human-v2") -> None:
    """A pen dataset recorded (and evaluated, by its spec) with gymnasium-robotics' 200-step episodes."""
    record_dataset(root, dataset_id, "AdroitHandPen-v1", {"max_episode_steps": 200}, steps=15, refs=PEN_REFS)
