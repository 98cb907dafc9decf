"""Loading offline datasets: values equal what was written, D4RL conventions, bad input."""
from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
import torch

from _data_common import EPISODES, episode_arrays, fingerprint, write_d4rl, write_minari
from torchrl_dtql.data import (
    DatasetNotFoundError,
    NonFiniteDataError,
    OfflineDatasetError,
    load_offline_dataset,
)

pytestmark = pytest.mark.filterwarnings("error")


@pytest.fixture
def minari_root(tmp_path, monkeypatch):
    root = tmp_path / "minari"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(root))
    return root


# Loaded values are compared exactly with what was written, on purpose: loading copies (and casts to float32, an
# exactly rounded, machine-independent operation) and never computes, so any difference is a loader bug.


class TestMinari:
    def test_values_equal_written(self, minari_root):
        eps = episode_arrays()
        write_minari("test/hopper/tiny-v0", eps)
        td, info = load_offline_dataset("test/hopper/tiny-v0")

        n = sum(t for t, _ in EPISODES)
        assert td.shape == (n,)
        assert td["observation"].dtype == torch.float32 and td["next", "reward"].shape == (n, 1)
        for key in ("terminated", "truncated", "done"):
            assert td["next", key].dtype == torch.bool and td["next", key].shape == (n, 1)
        # Row by row against the arrays written, episode after episode.
        start = 0
        for i, ep in enumerate(eps):
            t = len(ep["rewards"])
            rows = slice(start, start + t)
            np.testing.assert_array_equal(td["observation"][rows].numpy(), ep["observations"][:-1].astype(np.float32))
            np.testing.assert_array_equal(td["next", "observation"][rows].numpy(), ep["observations"][1:].astype(np.float32))
            np.testing.assert_array_equal(td["action"][rows].numpy(), ep["actions"])
            np.testing.assert_array_equal(td["next", "reward"][rows, 0].numpy(), ep["rewards"].astype(np.float32))
            np.testing.assert_array_equal(td["next", "terminated"][rows, 0].numpy(), ep["terminations"])
            np.testing.assert_array_equal(td["next", "truncated"][rows, 0].numpy(), ep["truncations"])
            assert (td["episode"][rows] == i).all()
            start += t
        # Sums and one specific transition.
        total = sum(ep["rewards"].sum() for ep in eps)
        assert td["next", "reward"].double().sum().item() == pytest.approx(total, rel=1e-6)
        np.testing.assert_array_equal(td["observation"][6].numpy(), eps[1]["observations"][1].astype(np.float32))

        assert info.dataset_id == "test/hopper/tiny-v0" and info.env_id == "Hopper-v5"
        assert info.num_transitions == n and info.num_episodes == len(EPISODES)
        assert info.observation_spec.shape == (11,) and info.action_spec.shape == (3,)
        assert info.action_spec.space.low.tolist() == [-1.0] * 3
        assert (info.ref_min_score, info.ref_max_score) == (-20.272305, 3234.3)
        np.testing.assert_allclose(info.episode_returns, [ep["rewards"].sum() for ep in eps], rtol=1e-6)

    def test_episode_structure(self, minari_root):
        write_minari("test/hopper/tiny-v0")
        td, _ = load_offline_dataset("test/hopper/tiny-v0")
        same_episode = td["episode"][1:] == td["episode"][:-1]
        # next_observation[t] == observation[t + 1] inside every episode ...
        assert torch.equal(td["next", "observation"][:-1][same_episode], td["observation"][1:][same_episode])
        # ... and an episode only ever ends on a done step, which is never in the middle.
        done = td["next", "done"][:, 0]
        assert torch.equal(done[:-1], ~same_episode) and bool(done[-1])
        # terminated and truncated are kept apart.
        term, trunc = td["next", "terminated"][:, 0], td["next", "truncated"][:, 0]
        assert not (term & trunc).any()
        assert term.nonzero().flatten().tolist() == [4, 11] and trunc.nonzero().flatten().tolist() == [8]

    def test_folder_path_and_reward_shift(self, minari_root):
        write_minari("test/hopper/tiny-v0")
        td0, _ = load_offline_dataset("test/hopper/tiny-v0")
        td, info = load_offline_dataset(minari_root / "test/hopper/tiny-v0", reward_shift=-1.0)
        assert info.reward_shift == -1.0
        torch.testing.assert_close(td["next", "reward"], td0["next", "reward"] - 1.0)
        assert torch.equal(td["observation"], td0["observation"])

    def test_dict_observations_are_concatenated(self, minari_root):
        import gymnasium as gym

        rng = np.random.default_rng(1)
        t = 4
        obs = {"observation": rng.normal(size=(t + 1, 5)), "achieved_goal": rng.normal(size=(t + 1, 2)),
               "desired_goal": rng.normal(size=(t + 1, 2))}
        ep = dict(observations=obs, actions=rng.uniform(-1, 1, (t, 2)).astype(np.float32), rewards=np.zeros(t),
                  terminations=np.zeros(t, bool), truncations=np.r_[np.zeros(t - 1, bool), True])
        box = lambda n: gym.spaces.Box(-np.inf, np.inf, (n,), np.float64)  # noqa: E731
        space = gym.spaces.Dict({"achieved_goal": box(2), "desired_goal": box(2), "observation": box(5)})
        with warnings.catch_warnings():  # Minari warns that no env is given: intended here
            warnings.filterwarnings("ignore", message=".*(eval_env. is set to None|env_spec is None)", category=UserWarning)
            write_minari("test/maze/dict-v0", [ep], env=None, observation_space=space,
                         action_space=gym.spaces.Box(-1, 1, (2,), np.float32))
        td, info = load_offline_dataset("test/maze/dict-v0")
        assert info.observation_keys == ("observation", "achieved_goal", "desired_goal")
        expected = np.concatenate([obs["observation"], obs["achieved_goal"], obs["desired_goal"]], -1)
        np.testing.assert_array_equal(td["observation"].numpy(), expected[:-1].astype(np.float32))
        assert info.env_id is None and info.observation_spec.shape == (9,)

    def test_unknown_id_fails_fast(self, minari_root, monkeypatch):
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        t0 = time.time()
        with pytest.raises(DatasetNotFoundError) as err:
            load_offline_dataset("nope/hopper/absent-v0")
        assert time.time() - t0 < 2.0
        msg = str(err.value)
        assert "nope/hopper/absent-v0" in msg
        assert str(minari_root / "nope/hopper/absent-v0" / "data") in msg
        assert "To provide it locally" in msg and ".hdf5" in msg and "HF_HUB_OFFLINE" in msg

    def test_unknown_id_without_offline_flag_still_fails_fast(self, minari_root, monkeypatch):
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.delenv("TORCHRL_DTQL_OFFLINE", raising=False)
        t0 = time.time()
        with pytest.raises(DatasetNotFoundError, match="absent-v0"):
            load_offline_dataset("nope/hopper/absent-v0")
        # no hub client here, or an unreachable hub: either way a few seconds at most.
        assert time.time() - t0 < 6.0

    @pytest.mark.parametrize(
        "dataset_id, maker_args",
        [
            ("local/hopper/medium-v0", "--env Hopper-v5 --kinds medium"),
            ("local/walker2d/medium-replay-v0", "--env Walker2d-v5 --kinds medium-replay"),
            ("local/humanoidstandup/expert-v2", "--env HumanoidStandup-v5 --kinds expert --version 2"),
        ],
    )
    @pytest.mark.parametrize("offline", [True, False])
    def test_missing_local_id_names_the_maker_command(self, minari_root, monkeypatch, dataset_id, maker_args, offline):
        """``local/`` ids are made by the dataset maker and are never on the hub: the error says how to make one.

        Example: ``local/hopper/medium-v0`` -> ``python -m torchrl_dtql.data.make_dataset --env Hopper-v5 --kinds
        medium``. No hub probe either (online or not), so it fails at once.
        """
        if offline:
            monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        else:
            monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
            monkeypatch.delenv("TORCHRL_DTQL_OFFLINE", raising=False)
        t0 = time.time()
        with pytest.raises(DatasetNotFoundError) as err:
            load_offline_dataset(dataset_id)
        assert time.time() - t0 < 2.0
        msg = str(err.value)
        assert dataset_id in msg and str(minari_root / dataset_id / "data") in msg
        assert f"python -m torchrl_dtql.data.make_dataset {maker_args}\n" in msg
        assert f"dtql-make-dataset {maker_args})" in msg
        assert "minari download" not in msg  # cannot work for an id that only this machine can make
        assert "DEFAULT_DATASET" in msg
        # and the command named really writes this id
        from torchrl_dtql.data.make_dataset import dataset_id_for, parse_args

        args = parse_args(maker_args.split())
        assert [dataset_id_for(args.env, k, args.namespace, args.version) for k in args.kinds] == [dataset_id]

    def test_misnamed_local_id_lists_the_maker_kinds(self, minari_root):
        with pytest.raises(DatasetNotFoundError, match="medium-replay") as err:
            load_offline_dataset("local/hopper/mediocre-v0")
        assert "minari download" not in str(err.value) and "local/<env>/<kind>-v<version>" in str(err.value)

    def test_missing_file_path(self, tmp_path):
        with pytest.raises(DatasetNotFoundError, match="does not exist"):
            load_offline_dataset(tmp_path / "absent.hdf5")

    def test_sources_are_not_modified(self, minari_root, tmp_path):
        write_minari("test/hopper/tiny-v0")
        h5 = tmp_path / "hopper-medium-v2.hdf5"
        write_d4rl(h5)
        before = {**fingerprint(minari_root), **fingerprint(h5)}
        time.sleep(0.01)
        load_offline_dataset("test/hopper/tiny-v0")
        load_offline_dataset(minari_root / "test/hopper/tiny-v0")
        load_offline_dataset(h5)
        assert {**fingerprint(minari_root), **fingerprint(h5)} == before


class TestD4RLHDF5:
    def test_qlearning_conventions(self, tmp_path):
        # 12 rows, terminals at 2 and 9, a timeout at 5, no next_observations.
        path = tmp_path / "hopper-medium-v2.hdf5"
        a = write_d4rl(path)
        td, info = load_offline_dataset(path)
        kept = [0, 1, 2, 3, 4, 6, 7, 8, 9, 10]  # the timeout row 5 and the last row 11 are dropped
        assert td.shape == (len(kept),)
        np.testing.assert_array_equal(td["observation"].numpy(), a["observations"][kept].astype(np.float32))
        np.testing.assert_array_equal(td["next", "observation"].numpy(),
                                      a["observations"][[i + 1 for i in kept]].astype(np.float32))
        np.testing.assert_array_equal(td["action"].numpy(), a["actions"][kept])
        np.testing.assert_array_equal(td["next", "reward"][:, 0].numpy(), a["rewards"][kept])
        # bootstrapping stops on terminals only; truncation marks where episodes end.
        assert td["next", "terminated"][:, 0].nonzero().flatten().tolist() == [2, 8]  # rows 2 and 9
        assert td["next", "truncated"][:, 0].nonzero().flatten().tolist() == [4, 9]  # before the timeout; last
        assert td["episode"].tolist() == [0, 0, 0, 1, 1, 2, 2, 2, 2, 3]
        assert info.env_id == "Hopper-v5" and info.source_kind == "hdf5"
        assert (info.ref_min_score, info.ref_max_score) == (-20.272305, 3234.3)
        assert info.action_spec.space.high.tolist() == [1.0] * 3

    def test_next_observations_key_is_used(self, tmp_path):
        path = tmp_path / "walker2d-medium-replay-v2.hdf5"
        a = write_d4rl(path, next_observations=True)
        td, info = load_offline_dataset(path)
        kept = [i for i in range(12) if i != 5]  # the last row is kept: its next observation is known
        np.testing.assert_array_equal(td["next", "observation"].numpy(), a["next_observations"][kept].astype(np.float32))
        assert info.env_id == "Walker2d-v5"

    @pytest.mark.parametrize("key", ["observations", "actions", "rewards", "terminals"])
    def test_missing_key(self, tmp_path, key):
        path = tmp_path / "data.hdf5"
        write_d4rl(path, drop_key=key)
        with pytest.raises(OfflineDatasetError, match=f"missing the D4RL key.*{key}"):
            load_offline_dataset(path)

    def test_truncated_file(self, tmp_path):
        path = tmp_path / "cut.hdf5"
        write_d4rl(path, n=2000)
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        with pytest.raises(OfflineDatasetError, match="truncated or corrupt"):
            load_offline_dataset(path)

    def test_not_an_hdf5_file(self, tmp_path):
        path = tmp_path / "garbage.h5"
        path.write_bytes(b"not an hdf5 file at all" * 10)
        with pytest.raises(OfflineDatasetError, match="truncated or corrupt"):
            load_offline_dataset(path)

    def test_inconsistent_lengths(self, tmp_path):
        import h5py

        path = tmp_path / "bad.hdf5"
        write_d4rl(path)
        with h5py.File(path, "a") as f:
            del f["rewards"]
            f.create_dataset("rewards", data=np.zeros(3))
        with pytest.raises(OfflineDatasetError, match="'rewards' has 3 rows"):
            load_offline_dataset(path)

    def test_nonfinite_raises_with_count_and_first_index(self, tmp_path):
        path = tmp_path / "nan.hdf5"
        write_d4rl(path, nan_obs_at=(3,), inf_reward_at=(7,))
        with pytest.raises(NonFiniteDataError) as err:
            load_offline_dataset(path)
        msg = str(err.value)
        # row 3 is a NaN observation: it also poisons row 2's next observation.
        assert "3 transition(s)" in msg and "first is transition 2" in msg
        assert "observations: 2" in msg and "rewards: 1" in msg and "drop_nonfinite=True" in msg

    def test_drop_nonfinite(self, tmp_path):
        path = tmp_path / "nan.hdf5"
        write_d4rl(path, nan_obs_at=(3,), inf_reward_at=(7,))
        td, info = load_offline_dataset(path, drop_nonfinite=True)
        assert info.num_dropped_nonfinite == 3 and td.shape == (10 - 3,)
        assert torch.isfinite(td["observation"]).all() and torch.isfinite(td["next", "reward"]).all()
        same = td["episode"][1:] == td["episode"][:-1]
        assert torch.equal(td["next", "observation"][:-1][same], td["observation"][1:][same])
        assert torch.equal(td["next", "done"][:-1, 0], ~same)
