"""torchrl_dtql.evaluation: the evaluation envs of a dataset, seeded episodes in real Hopper-v5 envs, score tables."""
from __future__ import annotations

import doctest
import importlib
import io

import numpy as np
import pytest
import torch
import tqdm
from tensordict import TensorDict
from torchrl.data import Bounded, Unbounded
from torchrl.envs import ParallelEnv, SerialEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_dtql import DTQLLoss, make_dtql_modules
from torchrl_dtql.data import OfflineDatasetError, OfflineDatasetInfo
from torchrl_dtql.evaluation import (
    EvalEnvOverrideWarning,
    evaluate,
    evaluate_policies,
    evaluation_env_steps,
    EvaluationEnvError,
    first_episode_returns,
    make_eval_env,
    make_single_eval_env,
    register_robotics_envs,
    return_statistics,
    run_episodes,
    score_table,
)
from torchrl_dtql.policies import make_acting_policies

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.filterwarnings("ignore:No target network updater")]

HOPPER_MIN, HOPPER_MAX = -20.272305, 3234.3  # D4RL's hopper reference returns
#: The metadata of a Hopper-v5 dataset (no data needed: envs and scores read only this).
HOPPER = OfflineDatasetInfo(
    dataset_id="test/hopper/metadata-only-v0",
    env_id="Hopper-v5",
    observation_spec=Unbounded(shape=(11,)),
    action_spec=Bounded(-1.0, 1.0, shape=(3,)),
    ref_min_score=HOPPER_MIN,
    ref_max_score=HOPPER_MAX,
    num_transitions=0,
    num_episodes=0,
    source_path=None,
)
MAX_STEPS = 40  # random networks make Hopper fall within a few dozen steps


@pytest.fixture(scope="module")
def policies():
    """The three acting modes of a small, untrained DTQL for Hopper (the reranked one samples its candidates)."""
    torch.manual_seed(0)
    loss = DTQLLoss(**make_dtql_modules(HOPPER.observation_spec, HOPPER.action_spec, hidden_dim=16), alpha=1.0)
    return make_acting_policies(loss, ["reranked", "mean", "diffusion_bc"], num_candidates=8)


@pytest.fixture(scope="module")
def two_envs():
    env = make_eval_env(HOPPER, num_envs=2)
    yield env
    env.close()


class TestMakeEvalEnv:
    def test_batched_envs_observe_what_the_dataset_recorded(self, two_envs):
        assert isinstance(two_envs, SerialEnv) and two_envs.batch_size == (2,)
        observation = two_envs.reset()["observation"]
        assert observation.shape == (2, 11) and observation.dtype == torch.float32

    def test_observation_norm_applies_the_dataset_statistics(self):
        loc, scale = torch.linspace(-1, 1, 11), torch.linspace(0.5, 2, 11)
        normed = make_eval_env(HOPPER.replace(obs_loc=loc, obs_scale=scale), num_envs=1, observation_norm=True)
        raw = make_eval_env(HOPPER, num_envs=1)
        normed.set_seed(0)
        raw.set_seed(0)
        expected = (raw.reset()["observation"] - loc) / scale
        # the same float32 observation, normalised inside the env vs here: rounding of one subtract and divide
        torch.testing.assert_close(normed.reset()["observation"], expected, rtol=1e-6, atol=1e-6)
        normed.close()
        raw.close()

    def test_parallel_gives_one_process_per_env(self):
        env = make_eval_env(HOPPER, num_envs=2, parallel=True)  # the workers start on first use only
        assert isinstance(env, ParallelEnv) and env.batch_size == (2,)

    def test_an_env_of_other_sizes_is_refused_before_it_is_built(self):
        with pytest.warns(EvalEnvOverrideWarning, match="replaces the dataset's evaluation env 'Hopper-v5'"):
            with pytest.raises(OfflineDatasetError, match="observation size 17 in the env vs 11 in the data"):
                make_eval_env(HOPPER, env_id="HalfCheetah-v5", num_envs=1)

    def test_an_unknown_env_is_named(self):
        with pytest.warns(EvalEnvOverrideWarning):
            with pytest.raises(EvaluationEnvError, match="'NoSuchEnv-v0' is not registered with gymnasium") as error:
                make_eval_env(HOPPER, env_id="NoSuchEnv-v0", num_envs=1)
        if not register_robotics_envs():
            assert 'pip install "torchrl-dtql[robotics]"' in str(error.value)

    def test_a_dataset_that_names_no_env_needs_one(self):
        with pytest.raises(EvaluationEnvError, match="does not name the env it was recorded in"):
            make_eval_env(HOPPER.replace(env_id=None), num_envs=1)

    def test_at_least_one_env(self):
        with pytest.raises(ValueError, match="num_envs"):
            make_eval_env(HOPPER, num_envs=0)


def test_first_episode_returns_against_a_loop():
    """Each row's return and length up to (and with) its first done; rows never done count whole."""
    done = torch.tensor([[0, 0, 1, 0, 1], [1, 0, 0, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.bool)
    reward = torch.arange(15.0).reshape(3, 5)
    rollout = TensorDict({"next": {"done": done[..., None], "reward": reward[..., None]}}, batch_size=[3, 5])
    returns, lengths = first_episode_returns(rollout)
    expected_returns, expected_lengths = [], []
    for row in range(3):
        total, steps = 0.0, 0
        for t in range(5):
            total, steps = total + float(reward[row, t]), steps + 1
            if done[row, t]:
                break
        expected_returns.append(total)
        expected_lengths.append(steps)
    assert returns.dtype == torch.float64 and lengths.tolist() == expected_lengths
    assert returns.tolist() == expected_returns  # exact on purpose: small integers, exactly representable


class TestEvaluate:
    def test_episodes_are_plain_rollouts_from_the_seeded_env(self, policies):
        """Oracle: the env reseeded with seed + episode, one ``env.rollout`` until done under DETERMINISTIC."""
        env = make_single_eval_env("Hopper-v5", {}, "gymnasium", HOPPER, False)  # unbatched: one episode a rollout
        results = run_episodes(env, policies["mean"], episodes=3, max_steps=MAX_STEPS, seed=7)
        expected_returns, expected_lengths = [], []
        for episode in range(3):
            env.set_seed(7 + episode)
            with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
                rollout = env.rollout(MAX_STEPS, policies["mean"], break_when_any_done=True)
            expected_returns.append(float(rollout["next", "reward"].sum()))
            expected_lengths.append(rollout.shape[0])
        assert results.lengths.tolist() == expected_lengths
        # the same float32 rewards summed as [1, T] vs [T, 1]: the reduction order may round differently (~1e-7)
        np.testing.assert_allclose(results.returns.numpy(), expected_returns, rtol=1e-6)
        env.close()

    @pytest.mark.parametrize("mode", ["reranked", "diffusion_bc"])
    def test_the_same_seed_gives_the_same_evaluation_and_leaves_the_callers_rng(self, two_envs, policies, mode):
        torch.manual_seed(123)
        first = evaluate(two_envs, policies[mode], episodes=2, max_steps=MAX_STEPS, seed=3, info=HOPPER)
        after = torch.rand(4)
        second = evaluate(two_envs, policies[mode], episodes=2, max_steps=MAX_STEPS, seed=3, info=HOPPER)
        # exact on purpose: the same env seeds, the same private generator seed, the same computation
        assert first == second
        torch.manual_seed(123)
        torch.testing.assert_close(after, torch.rand(4), rtol=0, atol=0)  # exact: the caller's stream did not move
        other = evaluate(two_envs, policies[mode], episodes=2, max_steps=MAX_STEPS, seed=4, info=HOPPER)
        assert other["return"] != first["return"]

    def test_statistics_of_raw_and_normalized_returns(self, two_envs, policies):
        bar = tqdm.tqdm(total=0, file=io.StringIO())
        result = evaluate(two_envs, policies["mean"], episodes=3, max_steps=MAX_STEPS, seed=0, info=HOPPER,
                          progress=bar)  # fmt: skip
        raw = run_episodes(two_envs, policies["mean"], episodes=3, max_steps=MAX_STEPS, seed=0)
        assert result["episodes"] == 3  # 3 episodes on 2 envs: two rollouts, the fourth episode dropped
        assert result["episode_length"] == pytest.approx(float(raw.lengths.double().mean()))
        assert result["return"] == return_statistics(raw.returns.numpy())
        # a linear map of float64 returns: equal to float64 rounding
        normalized = 100 * (result["return"]["mean"] - HOPPER_MIN) / (HOPPER_MAX - HOPPER_MIN)
        assert result["normalized_score"]["mean"] == pytest.approx(normalized, rel=1e-12)
        stderr = 100 * result["return"]["stderr"] / (HOPPER_MAX - HOPPER_MIN)
        assert result["normalized_score"]["stderr"] == pytest.approx(stderr, rel=1e-12)
        # the bar counts every env step of both rollouts, skipped ones included
        assert bar.n == evaluation_env_steps(two_envs, 3, MAX_STEPS) == 2 * MAX_STEPS

    def test_no_reference_scores_means_no_normalized_score(self, two_envs, policies):
        result = evaluate(two_envs, policies["mean"], episodes=1, max_steps=5, seed=0)
        assert result["normalized_score"] == {"mean": None, "std": None, "stderr": None}
        assert result["return"]["std"] == 0.0 and result["episodes"] == 1

    def test_several_modes_on_the_same_episodes(self, two_envs, policies):
        bars = {}

        def progress(mode, total):
            bars[mode] = tqdm.tqdm(total=total, file=io.StringIO())
            return bars[mode]

        results = evaluate_policies(two_envs, policies, episodes=2, max_steps=MAX_STEPS, seed=5, info=HOPPER,
                                    progress=progress)  # fmt: skip
        assert list(results) == list(bars) == ["reranked", "mean", "diffusion_bc"]
        assert all(bar.n == bar.total == MAX_STEPS for bar in bars.values())
        # exact on purpose: evaluate_policies is evaluate, mode by mode, with the same arguments
        assert results["mean"] == evaluate(two_envs, policies["mean"], episodes=2, max_steps=MAX_STEPS, seed=5,
                                           info=HOPPER)  # fmt: skip

    def test_without_a_seed_the_env_continues_its_stream(self, policies):
        env = make_single_eval_env("Hopper-v5", {}, "gymnasium", HOPPER, False)
        env.set_seed(11)
        continued = run_episodes(env, policies["mean"], episodes=2, max_steps=MAX_STEPS, seed=None)
        env.set_seed(11)
        one_by_one = [run_episodes(env, policies["mean"], episodes=1, max_steps=MAX_STEPS, seed=None) for _ in range(2)]
        # exact on purpose: the same env stream, the same deterministic policy
        assert continued.returns.tolist() == [float(r.returns[0]) for r in one_by_one]
        env.close()


def test_score_table_final_and_best():
    def result(score, raw):
        return {"normalized_score": {"mean": score, "std": 1.0, "stderr": 0.5}, "return": {"mean": raw, "std": 2.0}}

    history = [
        {"step": 10, "modes": {"reranked": result(30.0, 900.0), "mean": result(None, 5.0)}},
        {"step": 20, "modes": {"reranked": result(40.0, 1200.0), "mean": result(None, 9.0)}},
        {"step": 30, "modes": {"reranked": result(35.0, 1000.0), "mean": result(None, 7.0)}},
    ]
    table = score_table(history, ["reranked", "mean", "diffusion_bc"])
    assert set(table) == {"reranked", "mean"}  # never evaluated: left out
    assert table["reranked"] == {
        "final_normalized_score": 35.0, "final_normalized_score_stderr": 0.5, "final_return": 1000.0,
        "final_return_std": 2.0, "final_step": 30, "best_normalized_score": 40.0, "best_return": 1200.0,
        "best_step": 20,
    }  # fmt: skip
    assert table["mean"]["best_step"] == 20 and table["mean"]["best_return"] == 9.0  # no scores: best by return


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", ["envs", "episodes", "history", "protocols", "__init__"])
def test_docstring_examples(name):
    module = importlib.import_module("torchrl_dtql.evaluation" + ("" if name == "__init__" else f".{name}"))
    assert doctest.testmod(module).failed == 0
