"""AntMaze, Adroit pen and Kitchen evaluation: the robotics stack, the dataset's eval env, D4RL's protocols.

Every env the presets use builds, resets, steps and reports success; tiny Minari datasets recorded here (with Minari's
own API and an evaluation spec as Minari's D4RL sets record one, ``_robotics_data.py``) give the eval env its kwargs;
an AntMaze episode that reaches the goal ends with success 1, a kitchen episode counts its completed subtasks, pen is
scored with D4RL's normalized return; overrides that contradict the spec warn, an env that is not installed stops
with the package to install. The example runs on these datasets in test_example_dtql_offline.py.
"""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch
from tensordict import TensorDictBase

pytest.importorskip(
    "gymnasium_robotics",
    reason='gymnasium-robotics is not installed: pip install -e ".[tests]" (or "torchrl-dtql[robotics]") installs it',
)

import mujoco  # noqa: E402  (after the skip: gymnasium-robotics brings the pinned mujoco)
from packaging.version import Version  # noqa: E402

from _robotics_data import (  # noqa: E402
    complete_kitchen_subtask,
    DATA_MAZE,
    EVAL_MAZE,
    KITCHEN_TASKS,
    MIRRORED_MAZE,
    move_ant_to_goal,
    PEN_REFS,
    record_dataset,
    write_antmaze,
    write_kitchen,
    write_pen,
)
from torchrl_dtql.data import load_offline_dataset, OfflineDatasetError, OfflineDatasetInfo  # noqa: E402
from torchrl_dtql.data.d4rl_envs import d4rl_eval_env  # noqa: E402
from torchrl_dtql.evaluation import (  # noqa: E402
    EvalEnvOverrideWarning,
    EvalSpecWarning,
    evaluate,
    EvaluationEnvError,
    make_eval_env,
    make_single_eval_env,
    resolve_eval_env,
)

pytestmark = [
    pytest.mark.filterwarnings("error::torchrl_dtql.evaluation.EvalEnvOverrideWarning"),
    pytest.mark.filterwarnings("error::torchrl_dtql.evaluation.EvalSpecWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),  # AntMaze v4 "is out of date", gymnasium's checker
]

#: gymnasium-robotics 1.4.2's kitchen compares joint types with ``in (enum, ...)``, which mujoco >= 3.12's enums
#: break (AssertionError in mujoco_utils.get_joint_qpos); the robotics extra pins mujoco < 3.12.
KITCHEN_BUILDS = Version(mujoco.__version__) < Version("3.12")
needs_kitchen = pytest.mark.skipif(
    not KITCHEN_BUILDS,
    reason=f"FrankaKitchen-v1 does not build with mujoco {mujoco.__version__} (gymnasium-robotics 1.4.2 needs "
    'mujoco < 3.12): pip install -e ".[tests]" or "torchrl-dtql[robotics]" pins it',
)

#: The gymnasium ids of the AntMaze, Adroit and Kitchen presets (the datasets' evaluation specs name them).
PRESET_ENVS = [
    "AntMaze_UMaze-v4", "AntMaze_Medium-v4", "AntMaze_Medium_Diverse_GR-v4", "AntMaze_Large-v4",
    "AntMaze_Large_Diverse_GR-v4", "AdroitHandPen-v1", "FrankaKitchen-v1",
]  # fmt: skip


@pytest.fixture(scope="module")
def minari_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("robotics_minari")
    write_antmaze(root)
    write_antmaze(root, "test/antmaze/mirrored-v1", eval_maze=MIRRORED_MAZE)
    write_pen(root)
    if KITCHEN_BUILDS:
        write_kitchen(root)
    return root


@pytest.fixture
def datasets(minari_root, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(minari_root))
    return minari_root


def info_for(env_id: str, **kwargs) -> OfflineDatasetInfo:
    """The metadata of a dataset recorded in ``env_id`` (sizes from the env itself), for env-only checks."""
    import gymnasium as gym
    from torchrl.data import Bounded, Unbounded

    from torchrl_dtql.data.envs import dict_observation_keys, env_sizes

    keys = dict_observation_keys(gym.make(env_id, **kwargs).observation_space)
    obs, act, _ = env_sizes(env_id, keys, kwargs)
    return OfflineDatasetInfo(f"test/{env_id}", env_id, Unbounded(shape=(obs,)), Bounded(-1.0, 1.0, shape=(act,)),
                              0.0, 1.0, 0, 0, None, observation_keys=keys, env_kwargs=kwargs)  # fmt: skip


class Scripted:
    """A policy that moves the simulator before acting (zeros): the ant onto its goal, or kitchen subtasks done.

    ``env`` is one evaluation env (``make_single_eval_env``): TorchRL's ``GymEnv`` forwards ``unwrapped`` to the
    gymnasium env it wraps, whose simulator state the move sets.
    """

    def __init__(self, env, move) -> None:
        self.gym_env, self.move, self.action_shape = env.base_env, move, env.action_spec.shape

    def __call__(self, tensordict: TensorDictBase) -> TensorDictBase:
        self.move(self.gym_env)
        return tensordict.set("action", torch.zeros(tensordict.shape + self.action_shape))


scripted = Scripted


@pytest.mark.parametrize("env_id", PRESET_ENVS)
def test_each_preset_env_builds_resets_steps_and_reports_success(env_id):
    if env_id == "FrankaKitchen-v1" and not KITCHEN_BUILDS:
        pytest.skip(needs_kitchen.kwargs["reason"])
    kwargs = {"tasks_to_complete": KITCHEN_TASKS} if env_id == "FrankaKitchen-v1" else {}
    info = info_for(env_id, **kwargs)
    spec = resolve_eval_env(info)
    env = make_single_eval_env(spec.env_id, spec.kwargs, "gymnasium", info, False, spec.protocol)
    rollout = env.rollout(3, break_when_any_done=False)
    assert rollout["next", "observation"].shape == (3, info.observation_size)
    assert rollout["next", "observation"].dtype == torch.float32
    if spec.protocol.name == "kitchen":
        assert rollout["next", "tasks_completed"].tolist() == [0, 0, 0]  # random arm moves complete nothing
        assert rollout["next", "tasks_total"].tolist() == [4, 4, 4]
        done = env.rollout(2, scripted(env, lambda e: complete_kitchen_subtask(e, "microwave")))
        assert done["next", "tasks_completed"][-1].item() == 1
    else:
        assert rollout["next", "success"].dtype == torch.bool and not rollout["next", "success"].any()
    if spec.protocol.name == "antmaze":
        reached = env.rollout(5, scripted(env, move_ant_to_goal))
        assert reached["next", "success"].tolist() == [True] and reached["next", "terminated"].tolist() == [[True]]
    env.close()


class TestAntMaze:
    def test_the_eval_env_has_the_datasets_kwargs_under_the_protocol(self, datasets):
        _, info = load_offline_dataset("test/antmaze/umaze-v1")
        assert info.env_id == "AntMaze_UMaze-v4" and info.env_source == "minari eval_env_spec"
        # what Minari's AntMaze files record: a continuing task (the goal never ends an episode)
        assert info.env_kwargs["maze_map"] == EVAL_MAZE and info.env_kwargs["continuing_task"] is True
        assert info.env_kwargs["max_episode_steps"] == 700
        assert info.extra["recorded_env"]["kwargs"]["maze_map"] == DATA_MAZE
        spec = resolve_eval_env(info)
        assert spec.kwargs["maze_map"] == EVAL_MAZE and spec.sources["maze_map"] == "dataset"
        assert spec.kwargs["continuing_task"] is False and spec.sources["continuing_task"].startswith("protocol")
        assert spec.kwargs["max_episode_steps"] == 700 and spec.protocol.name == "antmaze"
        batched = make_eval_env(info, num_envs=2)  # what the example builds, from the same spec
        assert batched.reset()["observation"].shape == (2, 31)
        batched.close()
        env = make_single_eval_env(spec.env_id, spec.kwargs, "gymnasium", info, False).base_env
        assert env.unwrapped.maze.maze_map == EVAL_MAZE and env.unwrapped.continuing_task is False
        assert env.spec.max_episode_steps == 700
        env.close()

    def test_an_episode_that_reaches_the_goal_ends_with_success_1(self, datasets):
        _, info = load_offline_dataset("test/antmaze/umaze-v1")
        spec = resolve_eval_env(info)
        env = make_single_eval_env(spec.env_id, spec.kwargs, "gymnasium", info, False, spec.protocol)
        reached = evaluate(env, scripted(env, move_ant_to_goal), episodes=2, max_steps=20, seed=0, info=info)
        assert reached["protocol"] == "antmaze" and reached["success"]["mean"] == 1.0
        assert reached["episode_length"] == 1.0  # the first step puts the ant on the goal: the episode ends there
        assert reached["normalized_score"]["mean"] == 100.0 and reached["return"]["mean"] == 1.0  # D4RL: R in {0, 1}
        wandering = evaluate(env, None, episodes=2, max_steps=20, seed=0, info=info)
        assert wandering["success"]["mean"] == 0.0 and wandering["normalized_score"]["mean"] == 0.0
        assert wandering["episode_length"] == 20.0
        env.close()

    def test_goal_terminals_give_the_reference_its_d4rl_semantics(self, datasets):
        raw, _ = load_offline_dataset("test/antmaze/umaze-v1")
        goal = raw["next", "reward"] == 1.0  # exact: sparse rewards are stored as 0.0 or 1.0
        assert goal.sum() > 0 and not raw["next", "terminated"].any()  # Minari: goal rewards, no terminal
        td, info = load_offline_dataset("test/antmaze/umaze-v1", reward_shift=-1.0, goal_terminals=True)
        assert torch.equal(td["next", "terminated"], goal) and info.extra["goal_terminals"] == int(goal.sum())
        assert torch.equal(td["next", "done"], goal | raw["next", "truncated"])
        # the reference's reward: 0 at the goal (and no bootstrap there), -1 elsewhere
        assert set(td["next", "reward"].unique().tolist()) == {-1.0, 0.0}
        assert torch.equal(td["episode"], raw["episode"])  # a terminal masks bootstrapping, it does not cut episodes

    def test_goal_terminals_refuse_dense_rewards(self, datasets):
        with pytest.raises(OfflineDatasetError, match="goal terminals need sparse rewards"):
            load_offline_dataset("test/pen/human-v2", goal_terminals=True)

    def test_a_mirrored_evaluation_maze_warns(self, datasets):
        _, info = load_offline_dataset("test/antmaze/mirrored-v1")
        with pytest.warns(EvalSpecWarning, match="other walls than the maze its data was recorded in.*#304"):
            resolve_eval_env(info)

    def test_overrides_that_contradict_the_spec_warn(self, datasets):
        _, info = load_offline_dataset("test/antmaze/umaze-v1")
        with pytest.warns(EvalEnvOverrideWarning, match="overrides the dataset's evaluation spec"):
            spec = resolve_eval_env(info, env_kwargs={"maze_map": DATA_MAZE})
        assert spec.kwargs["maze_map"] == DATA_MAZE and spec.sources["maze_map"] == "override"
        with pytest.warns(EvalEnvOverrideWarning, match="contradicts the antmaze protocol"):
            resolve_eval_env(info, env_kwargs={"continuing_task": True})
        with pytest.warns(EvalEnvOverrideWarning, match="replaces the dataset's evaluation env 'AntMaze_UMaze-v4'"):
            spec = resolve_eval_env(info, env_id="AntMaze_Medium-v4")
        assert "maze_map" not in spec.kwargs  # the dataset's kwargs belong to its own env
        spec = resolve_eval_env(info, env_kwargs={"max_episode_steps": 700})  # agrees with the spec: no warning
        assert spec.sources["max_episode_steps"] == "override"

    def test_a_d4rl_file_gets_the_d4rl_protocol_env(self, tmp_path):
        import h5py

        path = tmp_path / "antmaze-umaze-diverse-v0.hdf5"
        rng = np.random.default_rng(0)
        with h5py.File(path, "w") as f:  # D4RL's layout: qpos[:15] (x, y first) and qvel[:14]
            f["observations"], f["actions"] = rng.normal(size=(6, 29)), rng.uniform(-1, 1, (6, 8)).astype(np.float32)
            f["rewards"], f["terminals"] = np.zeros(6), np.zeros(6, dtype=bool)
        _, info = load_offline_dataset(path)
        assert info.env_id == "AntMaze_UMaze-v4" and info.env_source == "d4rl protocol (antmaze-umaze)"
        assert info.env_kwargs == d4rl_eval_env(path.name).kwargs and info.env_kwargs["max_episode_steps"] == 700
        assert info.observation_keys == ("achieved_goal", "observation")  # gymnasium's dict -> D4RL's 29 numbers
        env = make_eval_env(info, num_envs=1)  # the size check passes: 2 + 27 = 29
        assert env.reset()["observation"].shape == (1, 29)
        env.close()


@needs_kitchen
class TestKitchen:
    def test_a_kitchen_episode_counts_its_completed_subtasks(self, datasets):
        _, info = load_offline_dataset("test/kitchen/partial-v2")
        assert info.env_id == "FrankaKitchen-v1" and info.env_kwargs["tasks_to_complete"] == KITCHEN_TASKS
        assert info.observation_size == 59 + 2 * 11  # observation, then each subtask's achieved and desired joints
        spec = resolve_eval_env(info)
        # D4RL's kitchen rules over Minari's recorded ones (subtasks kept, no termination, 450 steps)
        assert (spec.kwargs["remove_task_when_completed"], spec.kwargs["terminate_on_tasks_completed"]) == (True, True)
        assert spec.kwargs["max_episode_steps"] == 280 and spec.kwargs["tasks_to_complete"] == KITCHEN_TASKS
        env = make_single_eval_env(spec.env_id, spec.kwargs, "gymnasium", info, False, spec.protocol)

        def open_microwave_then_light(gym_env):
            done = len(gym_env.unwrapped.episode_task_completions)
            complete_kitchen_subtask(gym_env, ["microwave", "light switch", "light switch"][min(done, 2)])

        result = evaluate(env, scripted(env, open_microwave_then_light), episodes=1, max_steps=6, seed=0, info=info)
        assert result["protocol"] == "kitchen" and result["tasks_completed"]["mean"] == 2.0
        # D4RL: one reward per subtask, once (removed when completed): return 2, normalized by 0 and 4
        assert result["return"]["mean"] == 2.0 and result["normalized_score"]["mean"] == 50.0
        assert result["episode_length"] == 6.0  # two of four done: the episode goes on
        env.close()


class TestPen:
    def test_pen_is_scored_with_d4rls_normalized_return_over_100_steps(self, datasets):
        _, info = load_offline_dataset("test/pen/human-v2")
        assert info.env_kwargs["max_episode_steps"] == 200  # gymnasium-robotics' registration
        spec = resolve_eval_env(info)
        assert spec.kwargs["max_episode_steps"] == 100 and spec.protocol.name == "adroit"
        env = make_eval_env(info, spec=spec, num_envs=2)
        result = evaluate(env, None, episodes=2, max_steps=150, seed=0, info=info)
        assert result["episode_length"] == 100.0  # D4RL's pen-v1 episodes, not gymnasium-robotics' 200
        low, high = PEN_REFS
        expected = 100.0 * (result["return"]["mean"] - low) / (high - low)
        # a linear map of float64 returns: equal up to float64 rounding
        assert result["normalized_score"]["mean"] == pytest.approx(expected, rel=1e-12, abs=1e-12)
        env.close()


class TestNotInstalled:
    def test_a_spec_naming_an_env_that_is_not_installed_names_the_package(self, tmp_path, monkeypatch):
        record_dataset(
            tmp_path, "test/missing/env-v0", "AdroitHandPen-v1", {"max_episode_steps": 10}, steps=3,
            eval_env_id="MissingEnv-v0", eval_entry_point="torchrl_dtql_missing_pkg.envs:MissingEnv", refs=None,
        )  # fmt: skip
        assert importlib.util.find_spec("torchrl_dtql_missing_pkg") is None
        monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
        _, info = load_offline_dataset("test/missing/env-v0")
        assert info.env_id == "MissingEnv-v0"
        with pytest.raises(EvaluationEnvError, match="needs the package 'torchrl_dtql_missing_pkg'.*pip install "
                                                     "torchrl-dtql-missing-pkg"):  # fmt: skip
            make_eval_env(info, num_envs=1)

    def test_a_robotics_env_that_is_not_registered_names_the_extra(self):
        entry_point = {"eval_env_entry_point": "gymnasium_robotics.envs.maze:AntMazeEnv"}
        info = OfflineDatasetInfo("test/x", "AntMaze_Huge-v9", None, None, None, None, 0, 0, None, extra=entry_point)
        with pytest.raises(EvaluationEnvError, match=r'pip install "torchrl-dtql\[robotics\]"'):
            make_eval_env(info, num_envs=1)
