"""examples/dtql_offline.py through its real command line, with tiny budgets on a tiny local Minari dataset.

Covers: the smoke run (summary.json, CSV logs, learning-curve PNG, exported policy), exact resume after a stop,
every task preset composing, the sweep aggregation over two seeds, and each bad input stopping early with a message
that names it.
"""
from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "examples" / "dtql_offline.py"
CONFIG_DIR = REPO / "examples" / "config"
DATASET_ID = "test/hopper/tiny-v0"

# A few pretraining and main steps, small networks, two short evaluation episodes per acting mode.
TINY = [
    f"replay_buffer.dataset={DATASET_ID}",
    "optim.pretrain_steps=3",
    "optim.gradient_steps=6",
    "optim.batch_size=32",
    "optim.lr_decay=true",
    "network.actor_hidden_dim=32",
    "network.critic_hidden_dim=32",
    "network.denoiser_hidden_dim=32",
    "policy.num_candidates=16",
    "logger.log_iter=1",
    "logger.eval_iter=3",
    "logger.eval_episodes=2",
    "logger.eval_max_steps=15",
    "env.eval_envs=2",
    "checkpoint.interval=4",
    "num_threads=1",
]


def write_tiny_hopper_dataset(root: Path, dataset_id: str = DATASET_ID) -> None:
    """4 random-action Hopper-v5 episodes of at most 40 steps (terminations included), with D4RL reference scores."""
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer

    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        env = gym.make("Hopper-v5")
        rng = np.random.default_rng(0)
        buffers = []
        for episode in range(4):
            observation, _ = env.reset(seed=episode)
            observations, actions, rewards, terminations, truncations = [observation], [], [], [], []
            for t in range(40):
                action = rng.uniform(-1, 1, size=3).astype(np.float32)
                observation, reward, terminated, truncated, _ = env.step(action)
                truncated = (truncated or t == 39) and not terminated
                observations.append(observation)
                actions.append(action)
                rewards.append(reward)
                terminations.append(terminated)
                truncations.append(truncated)
                if terminated or truncated:
                    break
            buffers.append(
                EpisodeBuffer(
                    id=episode,
                    seed=episode,
                    observations=np.asarray(observations),
                    actions=np.asarray(actions),
                    rewards=np.asarray(rewards),
                    terminations=np.asarray(terminations),
                    truncations=np.asarray(truncations),
                    infos={},
                )
            )
        minari.create_dataset_from_buffers(
            dataset_id=dataset_id,
            buffer=buffers,
            env="Hopper-v5",
            algorithm_name="random",
            author="test",
            author_email="test@example.com",
            code_permalink="https://example.com",
            description="tiny random Hopper dataset for the example tests",
            data_format="hdf5",
            ref_min_score=-20.272305,
            ref_max_score=3234.3,
        )
    finally:
        os.environ.pop("MINARI_DATASETS_PATH", None)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("dtql_example")
    write_tiny_hopper_dataset(root / "minari")
    return root


def run_script(workspace: Path, *overrides: str, tiny: bool = True) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "MINARI_DATASETS_PATH": str(workspace / "minari"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    args = [sys.executable, str(SCRIPT), *(TINY if tiny else []), *overrides]
    # cwd: hydra's own run folder (.hydra/, the job log) goes there, not into the repository
    return subprocess.run(args, cwd=workspace, env=env, capture_output=True, text=True, timeout=300)


def assert_ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-3000:]}"


def assert_fails_naming(result: subprocess.CompletedProcess, *fragments: str) -> str:
    message = result.stdout + result.stderr
    assert result.returncode != 0, message[-3000:]
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in:\n{message[-3000:]}"
    assert "Traceback" not in message, message[-3000:]  # a message, not a crash
    return message


@pytest.fixture(scope="module")
def finished_run(workspace) -> Path:
    """One complete tiny run (seed 0), shared by the smoke, resume, aggregation and bad-checkpoint tests."""
    output_dir = workspace / "run_seed0"
    result = run_script(workspace, f"output_dir={output_dir}", "seed=0")
    assert_ok(result)
    (output_dir / "stdout.txt").write_text(result.stdout)
    return output_dir


def copy_run(run: Path, destination: Path) -> Path:
    shutil.copytree(run, destination)
    return destination


class TestSmoke:
    def test_summary(self, finished_run):
        summary = json.loads((finished_run / "summary.json").read_text())
        assert summary["dataset"] == DATASET_ID and summary["env"] == "Hopper-v5"
        assert summary["gradient_steps"] == 6 and summary["pretrain_steps"] == 3 and summary["seed"] == 0
        assert summary["seeds"] == {"torch_numpy_random": 0, "replay_buffer": 0, "eval": 100}
        assert summary["steps_per_second"] > 0 and summary["wall_time_s"] > 0
        assert summary["versions"]["torchrl"] and summary["versions"]["torch"]
        # evaluations at main-phase steps 3 and 6 (the end), both acting modes, final = last, best = max
        assert [record["step"] for record in summary["evaluations"]] == [3, 6]
        scores = [record["modes"]["reranked"]["normalized_score"]["mean"] for record in summary["evaluations"]]
        assert summary["final_normalized_score"] == pytest.approx(scores[-1])
        assert summary["best_normalized_score"] == pytest.approx(max(scores))
        assert set(summary["scores"]) == {"reranked", "mean"}
        final = summary["evaluations"][-1]["modes"]["mean"]
        assert final["episodes"] == 2 and 1 <= final["episode_length"] <= 15
        ref_min, ref_max = -20.272305, 3234.3  # the dataset's reference scores
        expected = 100 * (final["return"]["mean"] - ref_min) / (ref_max - ref_min)
        assert final["normalized_score"]["mean"] == pytest.approx(expected)
        assert summary["behaviour_normalized_score"] is not None
        assert "DTQL on test/hopper/tiny-v0" in (finished_run / "stdout.txt").read_text()

    def test_csv_logs(self, finished_run):
        (experiment,) = (finished_run / "logs").iterdir()
        scalars = experiment / "scalars"
        pretrain_rows = (scalars / "pretrain" / "loss_diffusion.csv").read_text().split()
        assert [int(row.split(",")[0]) for row in pretrain_rows] == [1, 2, 3]
        actor_rows = (scalars / "train" / "loss_actor.csv").read_text().split()
        assert [int(row.split(",")[0]) for row in actor_rows] == [4, 5, 6, 7, 8, 9]
        assert all(math.isfinite(float(row.split(",")[1])) for row in actor_rows)
        eval_rows = (scalars / "eval" / "reranked" / "normalized_score.csv").read_text().split()
        assert [int(row.split(",")[0]) for row in eval_rows] == [6, 9]  # logged at the global step
        assert (scalars / "time" / "update.csv").exists()

    def test_learning_curve_png(self, finished_run):
        png = (finished_run / "learning_curve.png").read_bytes()
        assert png.startswith(b"\x89PNG") and len(png) > 5_000

    def test_exported_policy_acts_on_raw_env_observations(self, finished_run):
        import gymnasium as gym

        from torchrl_dtql.export import load_policy

        act = load_policy(finished_run / "policy.pt2")
        assert act.metadata["env_id"] == "Hopper-v5" and act.metadata["num_candidates"] == 16
        env = gym.make("Hopper-v5")
        observation, _ = env.reset(seed=0)
        action = act(observation)  # float64 numpy straight from gymnasium
        assert action.shape == env.action_space.shape and env.action_space.contains(action.astype(np.float32))
        env.close()

    def test_checkpoint_and_config_record(self, finished_run):
        payload = torch.load(finished_run / "checkpoints" / "last.pt", weights_only=True)
        assert payload["step"] == 9 and payload["config"]["loss"]["alpha"] == 5.0
        assert "replay_buffer" in payload["rng"] and len(payload["schedulers"]) == 3
        assert "gradient_steps: 6" in (finished_run / "config.yaml").read_text()


def test_resume_is_bit_identical(workspace, finished_run):
    """Stopped after step 5 (pretraining 3 + main 2), resumed: the same parameters, bit for bit, as the straight run."""
    output_dir = workspace / "run_stopped"
    stopped = run_script(workspace, f"output_dir={output_dir}", "seed=0", "checkpoint.stop_at_step=5")
    assert_ok(stopped)
    assert "Stopped at step 5" in stopped.stdout and not (output_dir / "summary.json").exists()
    assert torch.load(output_dir / "checkpoints" / "last.pt", weights_only=True)["step"] == 5

    resumed = run_script(workspace, f"output_dir={output_dir}", "seed=0", "resume=true")
    assert_ok(resumed)
    assert "Resuming from" in resumed.stdout

    straight = torch.load(finished_run / "checkpoints" / "last.pt", weights_only=True)
    after_resume = torch.load(output_dir / "checkpoints" / "last.pt", weights_only=True)
    assert straight["loss"].keys() == after_resume["loss"].keys()
    for key, value in straight["loss"].items():
        assert torch.equal(value, after_resume["loss"][key]), key
    for name, state in straight["optimizers"].items():
        for index, tensors in state["state"].items():
            for stat in ("exp_avg", "exp_avg_sq"):
                assert torch.equal(tensors[stat], after_resume["optimizers"][name]["state"][index][stat])
    summary_straight = json.loads((finished_run / "summary.json").read_text())
    summary_resumed = json.loads((output_dir / "summary.json").read_text())
    assert summary_resumed["evaluations"] == summary_straight["evaluations"]
    assert summary_resumed["resumed_from_step"] == 5
    # the CSV log continues without duplicated steps
    (experiment,) = (output_dir / "logs").iterdir()
    rows = (experiment / "scalars" / "train" / "loss_actor.csv").read_text().split()
    steps = [int(row.split(",")[0]) for row in rows]
    assert steps == [4, 5, 6, 7, 8, 9]


def test_sweep_aggregation_over_two_seeds(workspace, finished_run, tmp_path):
    second = workspace / "run_seed1"
    assert_ok(run_script(workspace, f"output_dir={second}", "seed=1", "export.enabled=false", "logger.plot=false"))
    sweep = tmp_path / "sweep"
    copy_run(finished_run, sweep / "a")
    copy_run(second, sweep / "b")

    spec = importlib.util.spec_from_file_location("aggregate_sweeps", REPO / "examples" / "aggregate_sweeps.py")
    aggregate_sweeps = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(aggregate_sweeps)
    plot = tmp_path / "curves.png"
    assert aggregate_sweeps.main([str(sweep), "--modes", "primary", "mean", "--plot", str(plot)]) == 0
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    finals = [json.loads((sweep / run / "summary.json").read_text())["final_normalized_score"] for run in "ab"]
    mean = float(np.mean(finals))
    stderr = float(np.std(finals, ddof=1) / np.sqrt(2))
    markdown = (sweep / "results.md").read_text()
    assert f"{mean:.1f} ± {stderr:.1f}" in markdown and "| default | test/hopper/tiny-v0 | 2 |" in markdown
    rows = (sweep / "results.csv").read_text().splitlines()
    header, row = rows[0].split(","), rows[1].split(",")
    assert len(rows) == 2
    values = dict(zip(header, row))
    assert values["seeds"] == "0;1" and values["num_seeds"] == "2"
    assert float(values["primary_final_mean"]) == pytest.approx(mean)
    assert float(values["primary_final_stderr"]) == pytest.approx(stderr)
    assert values["mean_best_mean"] != ""
    # the plotted curve is the per-step mean over the two seeds
    groups = aggregate_sweeps.group_runs(aggregate_sweeps.find_summaries([sweep]))
    steps, means, _ = aggregate_sweeps.learning_curves(next(iter(groups.values())), "primary")
    assert means[-1] == pytest.approx(mean)


def test_d4rl_hdf5_file_given_by_relative_path(workspace):
    """A D4RL-format file named relative to the launch folder; the env (Hopper-v5) is inferred from its name."""
    import h5py

    rng = np.random.default_rng(0)
    n = 64
    with h5py.File(workspace / "hopper-tiny.hdf5", "w") as file:
        file["observations"] = rng.normal(size=(n, 11))
        file["actions"] = rng.uniform(-1, 1, size=(n, 3)).astype(np.float32)
        file["rewards"] = rng.normal(size=n).astype(np.float32)
        file["terminals"] = np.isin(np.arange(n), [20, 50])
        file["timeouts"] = np.isin(np.arange(n), [35, 63])
    output_dir = workspace / "run_hdf5"
    result = run_script(
        workspace,
        "replay_buffer.dataset=hopper-tiny.hdf5",
        f"output_dir={output_dir}",
        "export.enabled=false",
        "logger.plot=false",
        "logger.backend=",
    )
    assert_ok(result)
    summary = json.loads((output_dir / "summary.json").read_text())
    assert summary["env"] == "Hopper-v5"
    assert summary["dataset_source"] == str(workspace / "hopper-tiny.hdf5")
    assert summary["config"]["replay_buffer"]["dataset"] == "hopper-tiny.hdf5"
    assert summary["final_normalized_score"] is not None  # D4RL hopper references, from the file name
    assert not (output_dir / "logs").exists()  # logger.backend= : no logger


class TestBadInput:
    def test_typo_in_an_override_names_the_key(self, workspace):
        message = assert_fails_naming(run_script(workspace, "optim.gradeint_steps=3"), "gradeint_steps")
        assert "not in struct" in message or "Could not override" in message

    def test_unknown_task_preset_names_it_and_lists_presets(self, workspace):
        result = run_script(workspace, "task=hopper-medum-v2", tiny=False)
        assert_fails_naming(result, "hopper-medum-v2", "hopper-medium-v2")

    def test_incompatible_dataset_and_env(self, workspace):
        assert_fails_naming(
            run_script(workspace, "env.name=HalfCheetah-v5", f"output_dir={workspace / 'bad_env'}"),
            "HalfCheetah-v5",
            DATASET_ID,
            "observation size",
        )

    def test_missing_dataset_is_named(self, workspace):
        assert_fails_naming(
            run_script(workspace, "replay_buffer.dataset=test/hopper/absent-v0", f"output_dir={workspace / 'bad_ds'}"),
            "test/hopper/absent-v0",
        )

    def test_unwritable_output_folder(self, workspace):
        blocker = workspace / "a_file"
        blocker.write_text("not a folder")
        result = run_script(workspace, f"output_dir={blocker / 'run'}")
        assert_fails_naming(result, str(blocker / "run"), "not a writable")

    def test_corrupt_checkpoint(self, workspace, finished_run):
        run = copy_run(finished_run, workspace / "corrupt")
        checkpoint = run / "checkpoints" / "last.pt"
        checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
        assert_fails_naming(run_script(workspace, f"output_dir={run}", "resume=true"), str(checkpoint), "corrupt")

    def test_mismatched_checkpoint_names_the_keys(self, workspace, finished_run):
        run = copy_run(finished_run, workspace / "mismatch")
        result = run_script(workspace, f"output_dir={run}", "resume=true", "loss.alpha=2.0", "logger.eval_iter=2")
        message = assert_fails_naming(result, "refusing to resume", "loss.alpha: checkpoint=5.0, now=2.0")
        assert "logger.eval_iter" not in message  # reporting settings may change on resume

    def test_existing_run_is_not_overwritten_without_resume(self, workspace, finished_run):
        run = copy_run(finished_run, workspace / "existing")
        assert_fails_naming(run_script(workspace, f"output_dir={run}"), "already holds a checkpoint", "resume=true")


def test_every_task_preset_composes():
    """All 21 presets compose with the base config, carry the spec's numbers, and name a dataset and an env."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    presets = sorted(path.stem for path in (CONFIG_DIR / "task").glob("*.yaml"))
    assert len(presets) == 21 and "default" in presets
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        configs = {name: compose("config", overrides=[f"task={name}", "output_dir=/tmp/x"]) for name in presets}
    for name, cfg in configs.items():
        resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        assert resolved["task_name"] == name
        assert resolved["replay_buffer"]["dataset"] and resolved["env"]["name"]
        assert resolved["loss"]["alpha"] > 0
    hopper = configs["hopper-medium-v2"]
    assert (hopper.loss.alpha, hopper.optim.lr, hopper.optim.lr_decay) == (5.0, 1e-4, True)
    assert (hopper.optim.gradient_steps, hopper.optim.pretrain_steps) == (1_000_000, 50_000)
    assert hopper.optim.batch_size == 256
    assert hopper.replay_buffer.dataset == "mujoco/hopper/medium-v0" and hopper.env.name == "Hopper-v5"
    antmaze = configs["antmaze-large-diverse-v0"]
    assert (antmaze.loss.alpha, antmaze.loss.expectile, antmaze.loss.gamma_nll) == (0.5, 0.9, 1.0)
    assert (antmaze.optim.batch_size, antmaze.optim.gradient_steps) == (2048, 300_000)
    assert antmaze.replay_buffer.reward_shift == -1.0
    assert antmaze.logger.eval_episodes == 100
    pen = configs["pen-cloned-v1"]
    assert (pen.loss.alpha, pen.optim.lr, pen.optim.lr_decay) == (1500.0, 1e-5, False)
    assert pen.optim.gradient_steps == 200_000
    assert configs["default"].replay_buffer.dataset == "embedded/hopper/medium-v0"


def load_example_utils():
    spec = importlib.util.spec_from_file_location("dtql_example_utils", REPO / "examples" / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("compile_", [False, True])
def test_cosine_decay_of_the_three_learning_rates(compile_):
    """Each optimizer follows its own cosine to 0 over the main phase, compiled update or not."""
    from omegaconf import OmegaConf

    from torchrl_dtql import DTQLLoss, make_dtql_modules

    utils = load_example_utils()
    cfg = OmegaConf.create(
        {"compile": compile_, "optim": {"lr": 1e-4, "critic_lr": 3e-4, "lr_decay": True, "gradient_steps": 4}}
    )
    optimizers = utils.make_optimizers(cfg, DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=8), alpha=1.0))
    schedulers = utils.make_lr_schedulers(cfg, optimizers)
    for step in range(1, 5):
        for optimizer in optimizers:
            optimizer.step()
        for scheduler in schedulers:
            scheduler.step()
        factor = (1 + math.cos(math.pi * step / 4)) / 2
        rates = [float(optimizer.param_groups[0]["lr"]) for optimizer in optimizers]
        assert rates == pytest.approx([3e-4 * factor, 1e-4 * factor, 1e-4 * factor], rel=1e-6, abs=1e-12)


@pytest.mark.slow
def test_compiled_update_runs(workspace):
    output_dir = workspace / "compiled"
    assert_ok(run_script(workspace, f"output_dir={output_dir}", "compile=true", "export.enabled=false"))
    summary = json.loads((output_dir / "summary.json").read_text())
    assert summary["config"]["compile"] is True and summary["final_normalized_score"] is not None
