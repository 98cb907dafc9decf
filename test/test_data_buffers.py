"""Replay buffers over offline data: sampled values, samplers, ObservationNorm, env checks."""
from __future__ import annotations

import pytest
import torch

from _data_common import EPISODES, write_d4rl, write_minari
from torchrl_dtql.data import (
    EnvCompatibilityError,
    check_env_compatibility,
    load_offline_dataset,
    make_env_transforms,
    make_observation_norm,
    make_offline_replay_buffer,
)

pytestmark = pytest.mark.filterwarnings("error")

N = sum(t for t, _ in EPISODES)


@pytest.fixture
def dataset_id(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    write_minari("test/hopper/tiny-v0")
    return "test/hopper/tiny-v0"


def test_samples_are_rows_of_the_dataset(dataset_id):
    td, _ = load_offline_dataset(dataset_id)
    rb = make_offline_replay_buffer(dataset_id, batch_size=7)
    assert len(rb) == N and rb.metadata.env_id == "Hopper-v5"
    torch.manual_seed(0)
    batch = rb.sample()
    assert batch.shape == (7,)
    assert batch["next", "terminated"].shape == (7, 1) and batch["next", "reward"].dtype == torch.float32
    idx = batch["index"]
    # exact on purpose: sampling copies rows, no arithmetic
    for key in ("observation", "action", "episode", ("next", "observation"), ("next", "reward"),
                ("next", "terminated"), ("next", "truncated"), ("next", "done")):
        assert torch.equal(batch[key], td[key][idx]), key
    # rb[:] is the whole dataset, unchanged.
    assert torch.equal(rb[:]["next", "reward"], td["next", "reward"])


def test_random_sampler_is_with_replacement(dataset_id):
    rb = make_offline_replay_buffer(dataset_id, batch_size=200)
    torch.manual_seed(0)
    idx = rb.sample()["index"]
    assert idx.unique().numel() < idx.numel()  # 200 draws from 12 rows


def test_without_replacement_epoch(dataset_id):
    rb = make_offline_replay_buffer(dataset_id, batch_size=5, sampler="without_replacement", drop_last=True)
    torch.manual_seed(0)
    batches = list(rb)
    assert [b.shape[0] for b in batches] == [5, 5]  # 12 rows, the last 2 dropped
    seen = torch.cat([b["index"] for b in batches])
    assert seen.unique().numel() == 10
    rb_all = make_offline_replay_buffer(dataset_id, batch_size=5, sampler="without_replacement", drop_last=False)
    assert sorted(torch.cat([b["index"] for b in rb_all]).tolist()) == list(range(N))


def test_prefetch_and_device(dataset_id):
    rb = make_offline_replay_buffer(dataset_id, batch_size=4, prefetch=2, device="cpu")
    for _ in range(3):
        assert rb.sample()["observation"].shape == (4, 11)


def test_reward_shift(dataset_id):
    td, _ = load_offline_dataset(dataset_id)
    rb = make_offline_replay_buffer(dataset_id, batch_size=4, reward_shift=-1.0)
    assert rb.metadata.reward_shift == -1.0
    torch.testing.assert_close(rb[:]["next", "reward"], td["next", "reward"] - 1.0)


def test_observation_norm_buffer_and_env_agree(dataset_id):
    from torchrl.envs import GymEnv, TransformedEnv

    td, _ = load_offline_dataset(dataset_id)
    rb = make_offline_replay_buffer(dataset_id, batch_size=6, observation_norm=True)
    info = rb.metadata
    obs = td["observation"].double()
    torch.testing.assert_close(info.obs_loc, obs.mean(0).float())
    torch.testing.assert_close(info.obs_scale, obs.std(0, unbiased=False).float())
    batch = rb.sample()
    expected = (td["observation"][batch["index"]] - info.obs_loc) / info.obs_scale
    torch.testing.assert_close(batch["observation"], expected)
    torch.testing.assert_close(batch["next", "observation"],
                               (td["next", "observation"][batch["index"]] - info.obs_loc) / info.obs_scale)
    # The same statistics applied to the eval env.
    raw_env = GymEnv("Hopper-v5")
    env = TransformedEnv(GymEnv("Hopper-v5"), make_env_transforms(info, observation_norm=True))
    raw_env.set_seed(3)
    env.set_seed(3)
    raw = raw_env.reset()["observation"].float()
    torch.testing.assert_close(env.reset()["observation"], (raw - info.obs_loc) / info.obs_scale)
    assert make_observation_norm(rb).loc.shape == (11,)


def test_observation_norm_requires_stats(dataset_id):
    rb = make_offline_replay_buffer(dataset_id, batch_size=4)
    with pytest.raises(ValueError, match="observation_norm=True"):
        make_observation_norm(rb)


def test_env_compatibility(dataset_id, tmp_path):
    from torchrl.envs import GymEnv

    _, info = load_offline_dataset(dataset_id)
    check_env_compatibility(info)  # its own env id
    check_env_compatibility(info, "Hopper-v5")
    check_env_compatibility(info, GymEnv("Hopper-v5"))
    with pytest.raises(EnvCompatibilityError, match="observation size 17 in the env vs 11 in the data"):
        check_env_compatibility(info, "HalfCheetah-v5")
    # A D4RL file whose name promises Hopper but whose rows are 5-dimensional.
    import h5py
    import numpy as np

    path = tmp_path / "hopper-medium-v2.hdf5"
    write_d4rl(path)
    with h5py.File(path, "a") as f:
        obs = f["observations"][()][:, :5]
        del f["observations"]
        f.create_dataset("observations", data=obs)
        assert np.asarray(f["actions"]).shape[1] == 3
    _, bad = load_offline_dataset(path)
    with pytest.raises(EnvCompatibilityError, match="observation size 11 in the env vs 5"):
        check_env_compatibility(bad)


class _DictObsEnv:
    """A gymnasium env with goal-style dict observations (like AntMaze), built lazily."""

    @staticmethod
    def make():
        import gymnasium as gym
        import numpy as np

        class DictEnv(gym.Env):
            def __init__(self):
                box = lambda n: gym.spaces.Box(-np.inf, np.inf, (n,), np.float64)  # noqa: E731
                self.observation_space = gym.spaces.Dict(
                    {"achieved_goal": box(2), "desired_goal": box(2), "observation": box(5)}
                )
                self.action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

            def _obs(self):
                return {"observation": np.arange(5.0), "achieved_goal": np.array([10.0, 11.0]),
                        "desired_goal": np.array([20.0, 21.0])}

            def reset(self, seed=None, options=None):
                super().reset(seed=seed)
                return self._obs(), {}

            def step(self, action):
                return self._obs(), 0.0, False, False, {}

        return DictEnv()


def test_dict_observation_env_matches_the_data_layout():
    from torchrl.data import Bounded, Unbounded
    from torchrl.envs import GymWrapper, TransformedEnv

    from torchrl_dtql.data import OfflineDatasetInfo

    info = OfflineDatasetInfo(
        dataset_id="test/maze/dict-v0", env_id=None, observation_spec=Unbounded(shape=(9,)),
        action_spec=Bounded(-1.0, 1.0, shape=(2,)), ref_min_score=0.0, ref_max_score=1.0, num_transitions=0,
        num_episodes=0, source_path=None, observation_keys=("observation", "achieved_goal", "desired_goal"),
    )
    gym_env = _DictObsEnv.make()
    check_env_compatibility(info, gym_env)
    env = TransformedEnv(GymWrapper(gym_env), make_env_transforms(info))
    check_env_compatibility(info, env)
    obs = env.reset()["observation"]
    assert obs.dtype == torch.float32
    assert obs.tolist() == [0.0, 1.0, 2.0, 3.0, 4.0, 10.0, 11.0, 20.0, 21.0]  # the loader's order (exact: copies)
