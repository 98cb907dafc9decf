"""examples/dtql_offline.py through its real command line, with tiny budgets on a tiny local Minari dataset.

Covers: the smoke run (summary.json, CSV logs, learning-curve PNG, exported policy), exact resume after a stop,
every task preset composing, the sweep aggregation over two seeds, and each bad input stopping early with a message
that names it.
"""
from __future__ import annotations

import doctest
import functools
import importlib.util
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from _processes import wait_for_line

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


def script_command(workspace: Path, *overrides: str, tiny: bool = True) -> tuple[list[str], dict[str, str]]:
    env = {
        **os.environ,
        "MINARI_DATASETS_PATH": str(workspace / "minari"),
        "HF_HUB_OFFLINE": "1",
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
    }
    return [sys.executable, str(SCRIPT), *(TINY if tiny else []), *overrides], env


def run_script(
    workspace: Path, *overrides: str, tiny: bool = True, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    args, env = script_command(workspace, *overrides, tiny=tiny)
    # cwd: hydra's own run folder (.hydra/) goes there, not into the repository
    return subprocess.run(args, cwd=cwd or workspace, env=env, capture_output=True, text=True, timeout=300)


def popen_script(workspace: Path, *overrides: str) -> subprocess.Popen:
    """The script started in the background (to send it signals), its output captured as text."""
    args, env = script_command(workspace, *overrides)
    return subprocess.Popen(args, cwd=workspace, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


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
    (output_dir / "stderr.txt").write_text(result.stderr)
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
        assert summary["primary_mode"] == "reranked"  # the default preset's first acting mode
        scores = [record["modes"]["reranked"]["normalized_score"]["mean"] for record in summary["evaluations"]]
        assert summary["final_normalized_score"] == pytest.approx(scores[-1])
        assert summary["best_normalized_score"] == pytest.approx(max(scores))
        assert set(summary["scores"]) == {"reranked", "mean", "diffusion_bc"}  # the default preset's three modes
        final = summary["evaluations"][-1]["modes"]["mean"]
        assert final["episodes"] == 2 and 1 <= final["episode_length"] <= 15
        ref_min, ref_max = -20.272305, 3234.3  # the dataset's reference scores
        expected = 100 * (final["return"]["mean"] - ref_min) / (ref_max - ref_min)
        assert final["normalized_score"]["mean"] == pytest.approx(expected)
        assert summary["behaviour_normalized_score"] is not None
        assert summary["behaviour_episodes"] == 4
        # 9 of the paper's 1.05M steps: a smoke run, and the report says so beside the behaviour policy
        assert summary["budget"]["fraction"] == pytest.approx(9 / 1_050_000) and summary["budget"]["smoke"]
        stdout = (finished_run / "stdout.txt").read_text()
        assert "DTQL on test/hopper/tiny-v0" in stdout and "SMOKE BUDGET" in stdout
        assert "behaviour policy (dataset)" in stdout and "against the behaviour policy" in stdout
        assert "diffusion BC, same steps" in stdout and "against diffusion BC" in stdout
        stderr = summary["final_normalized_score_stderr"]
        assert utils_module().format_score(summary["final_normalized_score"], stderr) in stdout

    def test_evaluation_shows_its_own_progress(self, finished_run):
        """Evaluation runs under its own labelled bar (env steps), so the training bar never sits frozen unlabelled."""
        progress = (finished_run / "stderr.txt").read_text()
        assert "eval reranked" in progress and "eval mean" in progress and "env step" in progress

    def test_log_file_has_the_run_log(self, finished_run):
        """The console's lines and the training metrics (every logger.log_iter steps) go to dtql_offline.log."""
        text = (finished_run / "dtql_offline.log").read_text()
        assert "eval at main-phase step 3:" in text and "DTQL on test/hopper/tiny-v0" in text
        assert "step 9: train/loss_qvalue=" in text and "train/loss_actor=" in text
        assert "step 9: train/" not in (finished_run / "stdout.txt").read_text()  # metrics: the file only

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
        assert payload["step"] == 9 and payload["config"]["loss"]["alpha"] == 20.0
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


# Long enough to be interrupted mid-way (a few hundred steps/s with these tiny networks), no evaluation on the way.
INTERRUPTIBLE = ["optim.gradient_steps=1500", "logger.log_iter=10", "logger.eval_iter=100000", "checkpoint.interval=0"]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_checkpoints_and_resume_continues_in_the_same_folder(workspace, sig):
    """Ctrl-C (SIGINT) or `kill` (SIGTERM), sent as a real signal to the command line: the step in progress ends,
    a checkpoint is written, the run says how to resume and exits with 128 + signal; resume=true then finishes the
    run in the same folder, with one log folder whose CSV rows continue where the checkpoint stopped."""
    output_dir = workspace / f"interrupted_{sig.name}"
    process = popen_script(workspace, f"output_dir={output_dir}", *INTERRUPTIBLE)
    wait_for_line(output_dir / "dtql_offline.log", "step 50: train/", process)
    process.send_signal(sig)
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 128 + sig, stderr[-3000:]
    assert "Traceback" not in stderr, stderr[-3000:]
    assert f"({sig.name})" in stdout and "resume=true" in stdout and f"output_dir={output_dir}" in stdout
    stopped_at = torch.load(output_dir / "checkpoints" / "last.pt", weights_only=True)["step"]
    assert 50 <= stopped_at < 1503 and f"Stopped at step {stopped_at}" in stdout
    assert not (output_dir / "summary.json").exists()

    resumed = run_script(workspace, f"output_dir={output_dir}", *INTERRUPTIBLE, "resume=true")
    assert_ok(resumed)
    summary = json.loads((output_dir / "summary.json").read_text())
    assert summary["resumed_from_step"] == stopped_at and summary["evaluations"][-1]["step"] == 1500
    (experiment,) = (output_dir / "logs").iterdir()  # the resumed run logs into the same experiment
    rows = (experiment / "scalars" / "train" / "loss_actor.csv").read_text().split()
    steps = [int(row.split(",")[0]) for row in rows]
    assert steps == list(range(10, 1501, 10)) + [1503]
    log_text = (output_dir / "dtql_offline.log").read_text()
    assert f"Stopped at step {stopped_at}" in log_text and f"at step {stopped_at}." in log_text


def test_a_stop_while_the_dataset_regenerates_exits_at_once(workspace, tmp_path):
    """SIGTERM while the default dataset regenerates on first use (a fresh cache: half a minute or more of rollouts,
    nothing to checkpoint) ends the run within seconds with 143, says so, and caches no dataset."""
    cache, output_dir = tmp_path / "cache", tmp_path / "run"
    args, env = script_command(workspace, f"output_dir={output_dir}", tiny=False)
    stderr_path = tmp_path / "stderr.txt"
    with stderr_path.open("w") as stderr_file:
        process = subprocess.Popen(args, cwd=tmp_path, env={**env, "TORCHRL_DTQL_CACHE": str(cache)},
                                   stdout=subprocess.PIPE, stderr=stderr_file, text=True)  # fmt: skip
        wait_for_line(stderr_path, "regenerating", process, timeout=120)
        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        stdout, _ = process.communicate(timeout=60)
    assert process.returncode == 143, stderr_path.read_text()[-3000:]
    assert time.monotonic() - signalled < 20, "the regeneration should not run to its end"
    assert "Stopped (SIGTERM) before training" in stdout and "Traceback" not in stderr_path.read_text()
    assert not (output_dir / "checkpoints" / "last.pt").exists() and not (output_dir / "summary.json").exists()
    assert not list(cache.rglob("*.hdf5")) and not list(cache.rglob("*.h5")), "no dataset cached from a stopped run"


def test_resume_alone_continues_the_newest_run_of_the_task(workspace, tmp_path):
    """`resume=true` without output_dir continues the newest hydra run folder of this task and seed, instead of
    starting from step 0 in a new timestamped folder beside the dead one."""
    launch = tmp_path / "launch"
    launch.mkdir()
    stopped = run_script(workspace, "checkpoint.stop_at_step=5", cwd=launch)
    assert_ok(stopped)
    (run_dir,) = (launch / "outputs" / "default" / "seed0").iterdir()
    time.sleep(1.1)  # hydra names run folders by the second
    resumed = run_script(workspace, "resume=true", cwd=launch)
    assert_ok(resumed)
    assert f"Resuming from {run_dir / 'checkpoints' / 'last.pt'} at step 5." in resumed.stdout
    assert [path.name for path in (launch / "outputs" / "default" / "seed0").iterdir()] == [run_dir.name]
    assert json.loads((run_dir / "summary.json").read_text())["resumed_from_step"] == 5


def test_readme_main_job_block_is_the_committed_run():
    """The README's end-of-run report is the committed summary's, formatted by the code, for the current defaults."""
    spec = importlib.util.spec_from_file_location("main_job_block", REPO / "docs" / "main_job_block.py")
    main_job_block = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main_job_block)
    assert main_job_block.check() == []


def test_main_job_benchmark_tables_its_seeds_and_skips_finished_ones(workspace, tmp_path):
    """benchmarks/main_job.py runs the example once per seed (two at a time), tables DTQL, BC and the behaviour policy
    as mean +/- s.e. over seeds, skips finished seeds on a rerun and refuses to mix results of other overrides."""
    out = tmp_path / "main_job"
    _, env = script_command(workspace)
    overrides = [*TINY, "logger.plot=false", "export.enabled=false"]
    command = [sys.executable, str(REPO / "benchmarks" / "main_job.py"), "--seeds", "0", "1", "--jobs", "2",
               "--out", str(out)]  # fmt: skip
    first = subprocess.run([*command, "--", *overrides], cwd=workspace, env=env, capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    summaries = [json.loads((out / f"seed{seed}.json").read_text()) for seed in (0, 1)]
    assert [s["seed"] for s in summaries] == [0, 1] and summaries[0]["benchmark_overrides"] == overrides
    table = (out / "table.md").read_text()
    for mode, label in (("reranked", "DTQL, Q-reranked"), ("mean", "DTQL, mean action"),
                        ("diffusion_bc", "diffusion BC, same steps")):  # fmt: skip
        finals = [s["scores"][mode]["final_normalized_score"] for s in summaries]
        mean, stderr = np.mean(finals), np.std(finals, ddof=1) / np.sqrt(2)
        assert f"| {label} | {mean:.1f} +/- {stderr:.1f} | {finals[0]:.1f} / {finals[1]:.1f} |" in table
    assert f"| behaviour policy (the dataset's 4 episodes) | {summaries[0]['behaviour_normalized_score']:.1f} |" in table

    again = subprocess.run([*command, "--", *overrides], cwd=workspace, env=env, capture_output=True, text=True,
                           timeout=600)  # fmt: skip
    assert again.returncode == 0 and "seed 0:" not in again.stdout  # nothing rerun
    assert (out / "table.md").read_text() == table

    other = subprocess.run([*command, "--", *overrides, "loss.alpha=2"], cwd=workspace, env=env,
                           capture_output=True, text=True, timeout=600)  # fmt: skip
    assert other.returncode != 0 and "loss.alpha: checkpoint=" in other.stderr


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

    def test_a_key_added_with_plus_is_refused_with_the_nearest_key(self, workspace):
        """Following hydra's hint (`+optim.gradient_step=10`) must not start a run that ignores the setting."""
        result = run_script(workspace, "+optim.gradient_step=10", f"output_dir={workspace / 'plus_key'}")
        assert_fails_naming(result, "unknown config key 'optim.gradient_step'", "did you mean 'optim.gradient_steps'")
        assert not (workspace / "plus_key" / "checkpoints").exists()

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

    def test_unknown_env_is_named(self, workspace):
        """The package evaluator's EvaluationEnvError is a user error: one line, no traceback."""
        assert_fails_naming(
            run_script(workspace, "env.name=NoSuchEnv-v0", f"output_dir={workspace / 'unknown_env'}"),
            "'NoSuchEnv-v0' is not registered with gymnasium",
        )

    def test_unknown_eval_mode_is_named(self, workspace):
        assert_fails_naming(
            run_script(workspace, "logger.eval_modes=[reranked,argmax]", f"output_dir={workspace / 'bad_mode'}"),
            "logger.eval_modes=['reranked', 'argmax']: choose among ['reranked', 'mean', 'diffusion_bc']",
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
        message = assert_fails_naming(result, "refusing to resume", "loss.alpha: checkpoint=20.0, now=2.0")
        assert "logger.eval_iter" not in message  # reporting settings may change on resume

    def test_existing_run_is_not_overwritten_without_resume(self, workspace, finished_run):
        run = copy_run(finished_run, workspace / "existing")
        assert_fails_naming(run_script(workspace, f"output_dir={run}"), "already holds a checkpoint", "resume=true")


def test_every_task_preset_composes():
    """All 21 presets compose with the base config, carry the spec's numbers, and name a dataset; the locomotion
    presets name their env, the AntMaze, Adroit and Kitchen ones (and the default, on a d4rl-like set) leave it to the
    dataset's evaluation spec."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    presets = sorted(path.stem for path in (CONFIG_DIR / "task").glob("*.yaml"))
    assert len(presets) == 21 and "default" in presets
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        configs = {name: compose("config", overrides=[f"task={name}", "output_dir=/tmp/x"]) for name in presets}
    utils = utils_module()
    for name, cfg in configs.items():
        utils.check_config_keys(cfg)  # presets only set keys that config.yaml defines
        resolved = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
        assert resolved["task_name"] == name
        assert resolved["replay_buffer"]["dataset"]
        from_dataset = name.startswith(("antmaze", "pen", "kitchen")) or name == "default"  # a Minari eval spec
        assert (resolved["env"]["name"] is None) == from_dataset, name
        assert resolved["replay_buffer"]["goal_terminals"] == name.startswith("antmaze"), name
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
    assert configs["default"].replay_buffer.dataset == "d4rl-like/halfcheetah/medium-replay-v0"
    assert configs["default"].loss.alpha == 20.0 and configs["default"].env.name is None


def load_example_utils():
    spec = importlib.util.spec_from_file_location("dtql_example_utils", REPO / "examples" / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def utils_module():
    return load_example_utils()


def test_example_utils_docstring_examples():
    """The examples in utils.py's docstrings (config-key check, checkpoint interval, budget, score format) hold."""
    assert doctest.testmod(utils_module()).failed == 0


def test_default_checkpoint_interval_is_a_tenth_of_the_run_at_most_50k():
    from omegaconf import OmegaConf

    def interval(pretrain: int, main: int, configured: int | None = None) -> int:
        cfg = {"checkpoint": {"interval": configured}, "optim": {"pretrain_steps": pretrain, "gradient_steps": main}}
        return utils_module().checkpoint_interval(OmegaConf.create(cfg))

    assert interval(1000, 2000) == 300 and interval(3, 6) == 1 and interval(50_000, 1_000_000) == 50_000
    assert interval(1000, 2000, configured=0) == 0 and interval(1000, 2000, configured=7) == 7


@pytest.mark.parametrize("compile_", [False, True])
def test_cosine_decay_of_the_three_learning_rates(compile_):
    """Each optimizer follows its own cosine to 0 over the main phase, compiled update or not."""
    from omegaconf import OmegaConf

    from torchrl_dtql import DTQLLoss, make_dtql_modules

    utils = load_example_utils()
    cfg = OmegaConf.create(
        {"compile": compile_, "optim": {"lr": 1e-4, "critic_lr": 3e-4, "alpha_lr": 3e-3, "lr_decay": True,
                                         "gradient_steps": 4}}
    )
    optimizers = utils.make_optimizers(cfg, DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=8), alpha=1.0))
    schedulers = utils.make_lr_schedulers(cfg, optimizers)
    for step in range(1, 5):
        for optimizer in optimizers.network_optimizers():
            optimizer.step()
        for scheduler in schedulers:
            scheduler.step()
        factor = (1 + math.cos(math.pi * step / 4)) / 2
        rates = [float(optimizer.param_groups[0]["lr"]) for optimizer in optimizers.network_optimizers()]
        assert rates == pytest.approx([3e-4 * factor, 1e-4 * factor, 1e-4 * factor], rel=1e-6, abs=1e-12)


@pytest.mark.slow
def test_compiled_update_runs(workspace):
    output_dir = workspace / "compiled"
    assert_ok(run_script(workspace, f"output_dir={output_dir}", "compile=true", "export.enabled=false"))
    summary = json.loads((output_dir / "summary.json").read_text())
    assert summary["config"]["compile"] is True and summary["final_normalized_score"] is not None


@pytest.mark.parametrize("auto_alpha", ["q_scale", "multiplier"])
def test_auto_alpha_trains_logs_and_checkpoints_its_rule(workspace, auto_alpha):
    """``loss.alpha=auto``: the run logs the weight it used beside the trust-region loss; the default q_scale rule
    saves its alpha_per_q and builds no alpha optimizer, the multiplier logs its target and saves log(alpha) and its
    optimizer."""
    import torch

    output_dir = workspace / f"auto_alpha_{auto_alpha}"
    assert_ok(run_script(workspace, f"output_dir={output_dir}", "loss.alpha=auto", f"loss.auto_alpha={auto_alpha}",
                         "export.enabled=false"))  # fmt: skip
    log = (output_dir / "dtql_offline.log").read_text()
    assert "train/alpha=" in log and "train/trust_region=" in log
    checkpoint = max((output_dir / "checkpoints").glob("*.pt"), key=lambda path: path.stat().st_mtime)
    payload = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if auto_alpha == "q_scale":
        assert float(payload["loss"]["alpha_per_q"]) == pytest.approx(0.1) and "log_alpha" not in payload["loss"]
        assert set(payload["optimizers"]) == {"critic", "diffusion", "actor"}
    else:
        assert "train/trust_region_target=" in log
        assert "log_alpha" in payload["loss"] and bool(payload["loss"]["alpha_initialized"])
        assert set(payload["optimizers"]) == {"critic", "diffusion", "actor", "alpha"}
# ---------------------------------------------------------------------------------------------------------------------
# The AntMaze and Kitchen presets on tiny Minari datasets recorded here (test/_robotics_data.py), end to end
# ---------------------------------------------------------------------------------------------------------------------

#: TINY without its dataset: the robotics runs name their own.
TINY_ROBOTICS = [override for override in TINY if not override.startswith("replay_buffer.dataset=")]


@pytest.fixture(scope="module")
def robotics_workspace(tmp_path_factory) -> Path:
    pytest.importorskip("gymnasium_robotics", reason='gymnasium-robotics is not installed: pip install -e ".[tests]"')
    import _robotics_data
    import mujoco
    from packaging.version import Version

    root = tmp_path_factory.mktemp("dtql_example_robotics")
    _robotics_data.write_antmaze(root / "minari")
    if Version(mujoco.__version__) < Version("3.12"):  # FrankaKitchen-v1 builds (test_robotics_eval.py says why)
        _robotics_data.write_kitchen(root / "minari")
    _robotics_data.record_dataset(
        root / "minari", "test/missing/env-v0", "AdroitHandPen-v1", {"max_episode_steps": 10}, steps=3,
        eval_env_id="MissingEnv-v0", eval_entry_point="torchrl_dtql_missing_pkg.envs:MissingEnv", refs=None,
    )  # fmt: skip
    return root


def run_robotics_preset(workspace: Path, task: str, dataset: str) -> tuple[dict, str]:
    output_dir = workspace / task
    result = run_script(workspace, *TINY_ROBOTICS, f"task={task}", f"replay_buffer.dataset={dataset}",
                        "optim.batch_size=32", f"output_dir={output_dir}", tiny=False)  # fmt: skip
    assert_ok(result)
    return json.loads((output_dir / "summary.json").read_text()), result.stdout + result.stderr


def test_antmaze_preset_evaluates_in_the_datasets_env_as_d4rl_scores_it(robotics_workspace):
    from _robotics_data import EVAL_MAZE

    summary, output = run_robotics_preset(robotics_workspace, "antmaze-umaze-v0", "test/antmaze/umaze-v1")
    eval_env = summary["eval_env"]
    assert eval_env["env_id"] == summary["env"] == "AntMaze_UMaze-v4" and eval_env["protocol"] == "antmaze"
    assert eval_env["kwargs"]["maze_map"] == EVAL_MAZE and eval_env["sources"]["maze_map"] == "dataset"
    assert eval_env["kwargs"]["max_episode_steps"] == 700 and eval_env["sources"]["max_episode_steps"] == "dataset"
    assert eval_env["kwargs"]["continuing_task"] is False and eval_env["sources"]["continuing_task"].startswith(
        "protocol")  # fmt: skip
    assert "Evaluation env: AntMaze_UMaze-v4 [dataset], kwargs maze_map=" in output
    for record in summary["evaluations"]:
        for result in record["modes"].values():
            # D4RL: 100 x the success rate; two episodes, so 0, 50 or 100
            assert result["protocol"] == "antmaze"
            assert result["normalized_score"]["mean"] == pytest.approx(100 * result["success"]["mean"])
            assert result["normalized_score"]["mean"] in (0.0, 50.0, 100.0)
    assert summary["config"]["replay_buffer"]["goal_terminals"] is True


def test_kitchen_preset_counts_completed_subtasks(robotics_workspace):
    import mujoco
    from packaging.version import Version

    if Version(mujoco.__version__) >= Version("3.12"):
        pytest.skip(f"FrankaKitchen-v1 does not build with mujoco {mujoco.__version__}: pip install -e \".[tests]\"")
    summary, output = run_robotics_preset(robotics_workspace, "kitchen-partial-v0", "test/kitchen/partial-v2")
    eval_env = summary["eval_env"]
    assert eval_env["env_id"] == "FrankaKitchen-v1" and eval_env["protocol"] == "kitchen"
    assert eval_env["kwargs"]["tasks_to_complete"] == ["microwave", "kettle", "light switch", "slide cabinet"]
    assert eval_env["kwargs"]["remove_task_when_completed"] is True and eval_env["kwargs"]["max_episode_steps"] == 280
    final = summary["evaluations"][-1]["modes"]["reranked"]
    assert final["normalized_score"]["mean"] == pytest.approx(100 * final["tasks_completed"]["mean"] / 4)
    assert "protocol kitchen" in output


def test_a_dataset_whose_eval_env_is_not_installed_stops_naming_the_package(robotics_workspace):
    dataset = "replay_buffer.dataset=test/missing/env-v0"
    result = run_script(robotics_workspace, *TINY_ROBOTICS, "task=pen-human-v1", dataset, tiny=False)
    message = assert_fails_naming(result, "'MissingEnv-v0'", "needs the package 'torchrl_dtql_missing_pkg'")
    assert "DTQL" not in message.split("error:")[-1] and "step 1" not in message  # stopped before training
