"""The 2D trust-region study: datasets, rewards, metrics, the learning tests of spec section 7, the example script.

The learning tests train the real DTQL pieces (``DTQLLoss``, ``make_dtql_modules``, ``dtql_update_step``) on the
25-Gaussians bandit with CPU-sized settings (``LEARNING``); the behaviour model of the BC test is pretrained once
per module.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from torchrl_dtql.toy import (
    best_modes,
    make_bandit_batch,
    make_toy_dataset,
    make_toy_reward,
    nearest_distance,
    register_toy_dataset,
    register_toy_reward,
    toy_action_spec,
    toy_dataset_names,
    toy_policy_metrics,
    toy_reward_names,
)
from torchrl_dtql.toy.datasets import GRID_CENTRES_25, toy_dataset_from_actions
from torchrl_dtql.toy.train import (
    make_toy_problem,
    pretrain_toy_diffusion,
    sample_toy_diffusion,
    sample_toy_policy,
    ToyTrainConfig,
    train_toy_dtql,
)

pytestmark = [
    pytest.mark.filterwarnings("error"),
    pytest.mark.filterwarnings("ignore:No target network updater"),
]

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "toy_2d.py"
NUM_SAMPLES = 1000
RIGHT_MODE = {"near": [(0.0, 0.0)], "hard": [(-10.0, 10.0)], "far": [(x, y) for x in (-10.0, 10.0) for y in (-10.0, 10.0)]}


# ----------------------------------------------------------------------------------------------- datasets
def test_registries_list_the_reference_datasets_and_rewards():
    assert {"25gaussians", "swissroll"} <= set(toy_dataset_names())
    assert {"near", "far", "hard", "same"} <= set(toy_reward_names())
    with pytest.raises(KeyError, match="registered"):
        make_toy_dataset("no-such-dataset")
    with pytest.raises(KeyError, match="registered"):
        make_toy_reward("no-such-reward")
    with pytest.raises(ValueError, match="already registered"):
        register_toy_dataset("25gaussians", lambda n, g=None: torch.zeros(n, 2))
    with pytest.raises(ValueError, match="already registered"):
        register_toy_reward("far", lambda a, d: a[:, 0])


def test_25_gaussians_is_a_balanced_grid_with_std_0_3():
    data = make_toy_dataset("25gaussians", 5000, generator=torch.Generator().manual_seed(0))
    assert data.actions.shape == (5000, 2)
    nearest = torch.cdist(data.actions, GRID_CENTRES_25).argmin(-1)
    assert torch.bincount(nearest, minlength=25).tolist() == [200] * 25
    offsets = data.actions - GRID_CENTRES_25[nearest]
    assert offsets.std().item() == pytest.approx(0.3, rel=0.05)
    assert sorted(set(GRID_CENTRES_25[:, 0].tolist())) == [-10.0, -5.0, 0.0, 5.0, 10.0]


def test_swiss_roll_spans_the_reference_spiral():
    data = make_toy_dataset("swissroll", 4000, generator=torch.Generator().manual_seed(0))
    radius = data.actions.norm(dim=-1)
    assert data.mode_centres is None
    assert radius.min().item() == pytest.approx(1.5 * math.pi, abs=0.3)
    assert radius.max().item() == pytest.approx(4.5 * math.pi, abs=0.3)


def test_same_seed_same_data_and_registered_datasets_work():
    first = make_toy_dataset("swissroll", 100, generator=torch.Generator().manual_seed(3))
    second = make_toy_dataset("swissroll", 100, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(first.actions, second.actions)
    register_toy_dataset(
        "test-corners", lambda n, g=None: torch.tensor([[1.0, 1.0], [-1.0, -1.0]]).repeat(n // 2, 1),
        mode_centres=[[1.0, 1.0], [-1.0, -1.0]], overwrite=True,
    )
    corners = make_toy_dataset("test-corners", 10)
    assert corners.mode_centres.shape == (2, 2)
    with pytest.raises(ValueError, match="expected"):
        make_toy_dataset("test-corners", 3)  # returns 2 rows, not 3


# ----------------------------------------------------------------------------------------------- rewards
def test_rewards_match_the_reference_definitions():
    data = torch.tensor([[0.0, 0.0], [3.0, 4.0], [-10.0, 10.0], [10.0, -10.0]])
    norm = data.norm(dim=-1)
    torch.testing.assert_close(make_toy_reward("far")(data, data), norm)
    torch.testing.assert_close(make_toy_reward("near")(data, data), norm.max() - norm)
    torch.testing.assert_close(make_toy_reward("hard")(data, data), torch.stack([norm[0], norm[1], 2 * norm[2], norm[3]]))
    torch.testing.assert_close(make_toy_reward("same")(data, data), torch.zeros(4))


def test_bandit_batch_and_action_spec():
    actions = torch.tensor([[1.0, -3.0], [0.5, 2.0]])
    batch = make_bandit_batch(actions, torch.tensor([1.0, 2.0]))
    assert torch.equal(batch["observation"], torch.zeros(2, 1))
    assert torch.equal(batch["next", "observation"], batch["observation"])
    assert batch["next", "reward"].tolist() == [[1.0], [2.0]]
    assert not batch["next", "terminated"].any() and not batch["next", "done"].any()
    spec = toy_action_spec(actions)
    assert spec.space.high.tolist() == [3.0, 3.0] and spec.space.low.tolist() == [-3.0, -3.0]


# ----------------------------------------------------------------------------------------------- metrics
def test_best_modes_follow_the_reward():
    data = make_toy_dataset("25gaussians", 250)
    assert best_modes(data, make_toy_reward("near")).tolist() == [[0.0, 0.0]]
    assert best_modes(data, make_toy_reward("hard")).tolist() == [[-10.0, 10.0]]
    assert sorted(map(tuple, best_modes(data, make_toy_reward("far")).tolist())) == sorted(RIGHT_MODE["far"])
    roll = make_toy_dataset("swissroll", 2000, generator=torch.Generator().manual_seed(0))
    assert best_modes(roll, make_toy_reward("far")).norm().item() == pytest.approx(roll.actions.norm(dim=-1).max().item())
    assert best_modes(roll, make_toy_reward("near")).norm().item() == pytest.approx(roll.actions.norm(dim=-1).min().item())


def test_metrics_count_hits_support_and_modes():
    data = make_toy_dataset("25gaussians", 2500, generator=torch.Generator().manual_seed(0))
    reward = make_toy_reward("hard")
    samples = torch.cat(
        [
            torch.tensor([[-10.0, 10.0]]).repeat(60, 1),  # the best mode
            torch.tensor([[5.0, 5.0]]).repeat(30, 1),  # another mode, in support
            torch.tensor([[2.5, 2.5]]).repeat(10, 1),  # between modes: out of support
        ]
    )
    metrics = toy_policy_metrics(samples, data, reward)
    assert metrics["fraction_best_mode"] == pytest.approx(0.6)
    assert metrics["fraction_in_support"] == pytest.approx(0.9)
    assert metrics["modes_covered"] == 2 and metrics["num_modes"] == 25
    assert metrics["mean_reward"] == pytest.approx(float(reward(samples, data.actions).mean()))
    json.dumps(metrics)  # JSON-ready
    assert nearest_distance(torch.tensor([[2.5, 2.5]]), GRID_CENTRES_25).item() == pytest.approx(math.hypot(2.5, 2.5))
    roll = make_toy_dataset("swissroll", 500)
    assert toy_policy_metrics(roll.actions[:50], roll, make_toy_reward("far"))["modes_covered"] is None


# ----------------------------------------------------------------------------------------------- learning
# CPU-sized settings, spec section 7.1 otherwise: full batch, Adam lr 3e-3 everywhere, expectile 0.95, an unclamped
# diffusion model with sigma_data 0.5 trained along with the policy, the action bound max|a|. Smaller: 250-500 points,
# 32/64-wide networks, discount 0 (Q = r), 200 critic pretraining steps, and the per-reward settings of
# examples/config/toy_2d.yaml (a narrow start; for `hard` a wide one, alpha ramped 1 -> 5; see
# torchrl_dtql/toy/train.py).
LEARNING_POINTS = {"near": 250, "far": 250, "hard": 500}  # `hard` centres reliably only with 20 points per mode
LEARNING_CONFIG = ToyTrainConfig(
    critic_pretrain_steps=200,
    discount=0.0,
    actor_hidden_dim=32,
    critic_hidden_dim=32,
    denoiser_hidden_dim=64,
    actor_init_log_std=-2.0,
)
PER_REWARD = {
    "near": dict(steps=700),
    "far": dict(steps=1100),
    "hard": dict(steps=2000, actor_init_log_std=0.0, alpha=1.0, alpha_end=5.0),
}
BC_CONFIG = dataclasses.replace(LEARNING_CONFIG, bc_steps=3000)


@pytest.fixture(scope="module")
def gaussians():
    """25-Gaussian datasets by size, drawn once per module."""
    sizes = sorted(set(LEARNING_POINTS.values()))
    return {n: make_toy_dataset("25gaussians", n, generator=torch.Generator().manual_seed(0)) for n in sizes}


def train_dtql_samples(data, reward: str, config: ToyTrainConfig) -> dict:
    problem = make_toy_problem(data, reward)
    torch.manual_seed(0)
    loss = train_toy_dtql(problem, config)
    return toy_policy_metrics(sample_toy_policy(loss, NUM_SAMPLES), data, problem.reward)


def test_diffusion_bc_covers_all_25_modes(gaussians):
    data = gaussians[500]
    torch.manual_seed(0)
    model = pretrain_toy_diffusion(make_toy_problem(data, "same"), BC_CONFIG)
    metrics = toy_policy_metrics(sample_toy_diffusion(model, NUM_SAMPLES), data, make_toy_reward("same"))
    assert metrics["modes_covered"] == 25, metrics
    assert metrics["fraction_in_support"] >= 0.85, metrics


@pytest.mark.parametrize("reward", ["near", "far", "hard"])
def test_dtql_one_step_policy_finds_the_right_mode_inside_the_data(gaussians, reward):
    data = gaussians[LEARNING_POINTS[reward]]
    metrics = train_dtql_samples(data, reward, dataclasses.replace(LEARNING_CONFIG, **PER_REWARD[reward]))
    assert sorted(map(tuple, metrics["best_modes"])) == sorted(RIGHT_MODE[reward])
    assert metrics["fraction_best_mode"] >= 0.9, metrics
    assert metrics["fraction_in_support"] >= 0.95, metrics


def test_without_the_trust_region_dtql_samples_leave_the_support():
    # On the 25 Gaussians the critic's maxima sit on the data's outer modes, so a Q-only policy happens to stay in
    # the support; on the swiss roll `far` pulls it past the outer arm into empty space.
    roll = make_toy_dataset("swissroll", 250, generator=torch.Generator().manual_seed(0))
    metrics = train_dtql_samples(roll, "far", dataclasses.replace(LEARNING_CONFIG, steps=500, alpha=0.0))
    assert metrics["fraction_in_support"] < 0.2, metrics


# ----------------------------------------------------------------------------------------------- the example
TINY = [
    "method=[dtql,kl,bc]",
    "dataset=25gaussians",
    "reward=hard",
    "steps=3",
    "seed=1",
    "num_points=100",
    "num_samples=50",
    "train.bc_steps=3",
    "train.critic_pretrain_steps=2",
    "train.actor_hidden_dim=8",
    "train.critic_hidden_dim=8",
    "train.denoiser_hidden_dim=8",
    "train.diffusion_num_steps=2",
]


def test_example_writes_a_figure_and_metrics_that_match_its_samples(tmp_path):
    out = tmp_path / "toy"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), *TINY, f"output_dir={out}"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figure = out / "toy_2d.png"
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp"))  # atomic writes left no temporaries behind
    summary = json.loads((out / "metrics.json").read_text())
    assert set(summary["cells"]) == {"dtql/25gaussians/hard", "kl/25gaussians/hard", "bc/25gaussians/hard"}
    assert summary["cpu_minutes"] > 0
    arrays = np.load(out / "samples.npz")
    data = toy_dataset_from_actions("25gaussians", torch.from_numpy(arrays["data__25gaussians"]))
    expected = make_toy_dataset("25gaussians", 100, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(data.actions, expected.actions)
    for key, metrics in summary["cells"].items():
        method, dataset, reward = key.split("/")
        samples = torch.from_numpy(arrays[f"{method}__{dataset}__{reward}"])
        assert samples.shape == (50, 2)
        recomputed = toy_policy_metrics(samples, data, make_toy_reward(reward))
        for name, value in recomputed.items():
            if isinstance(value, float):
                assert metrics[name] == pytest.approx(value, abs=1e-6), (key, name)
            else:
                assert metrics[name] == value, (key, name)
    assert "| dtql |" in (out / "table.md").read_text()


def load_example_module():
    spec = importlib.util.spec_from_file_location("toy_2d_example", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_selects_rows_and_columns_and_refuses_unknown_names():
    example = load_example_module()
    config = OmegaConf.load(REPO / "examples" / "config" / "toy_2d.yaml")
    assert example.selected_methods(config) == ["dtql", "kl", "bc"]
    assert example.selected_columns(config) == [
        ("25gaussians", "far"), ("25gaussians", "hard"), ("25gaussians", "near"), ("swissroll", "far"), ("swissroll", "near")
    ]
    config.method, config.dataset, config.reward = "kl", "swissroll", "hard"
    assert example.selected_methods(config) == ["kl"]
    assert example.selected_columns(config) == [("swissroll", "hard")]
    config.dataset = None
    config.reward = "near"
    assert example.selected_columns(config) == [("25gaussians", "near"), ("swissroll", "near")]
    config.method = "dqn"
    with pytest.raises(ValueError, match="dqn"):
        example.selected_methods(config)
    config.method, config.dataset = None, "moons"
    with pytest.raises(ValueError, match="moons"):
        example.selected_columns(config)
