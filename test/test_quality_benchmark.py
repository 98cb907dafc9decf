"""benchmarks/quality.py end to end, at a tiny budget on the embedded default dataset: every method trains and
writes its JSON, a rerun skips finished runs, a stopped run resumes from its checkpoint to the very result of an
uninterrupted one, other settings are refused, and the table and the curves are written.

The runs are real (the package's data, losses, update steps, policies and evaluation; TorchRL's IQL and TD3+BC),
only small: 16-wide networks, 4 + 6 gradient steps at batch 32, 2 evaluation episodes of at most 10 env steps.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _processes import wait_for_line

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))

import quality  # noqa: E402
from quality_methods import dataset_family_and_kind, load_dtql_preset, PresetError  # noqa: E402

DATASET = "embedded/hopper/medium-v0"
TINY = [
    "--datasets", DATASET, "--seeds", "0", "--pretrain-steps", "4", "--steps", "6", "--batch-size", "32",
    "--eval-every", "3", "--eval-episodes", "2", "--eval-max-steps", "10", "--eval-envs", "2",
    "--num-candidates", "4", "--diffusion-steps", "2", "--hidden-dim", "16", "--no-compile", "--threads", "1",
    "--checkpoint-every", "100", "--train-log-every", "2", "--device", "cpu",
]  # fmt: skip
EXPECTED_MODES = {"dtql": ["reranked", "mean", "diffusion_bc"], "dtql-auto": ["reranked", "mean"],
                  "dtql-qscale": ["reranked", "mean"], "iql": ["mean"], "td3bc": ["mean"]}  # fmt: skip


def run_json(out: Path, method: str, seed: int = 0) -> dict:
    return json.loads((out / "runs" / "embedded-hopper-medium-v0" / method / f"seed{seed}.json").read_text())


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """Every method once, uninterrupted, in one results folder."""
    out = tmp_path_factory.mktemp("quality")
    outcomes = quality.main([*TINY, "--out", str(out)])
    return out, outcomes


def test_every_method_trains_and_writes_its_json(finished):
    out, outcomes = finished
    assert set(outcomes.values()) == {"complete"} and len(outcomes) == len(EXPECTED_MODES)
    for method, modes in EXPECTED_MODES.items():
        record = run_json(out, method)
        assert record["status"] == "complete" and record["method"] == method and record["modes"] == modes
        assert record["steps_done"] == record["total_steps"] == 10
        assert record["eval_seed"] == 100
        # evaluations after 3 and 6 main-phase steps (run steps 7 and 10), in every mode of the method
        assert [e["step"] for e in record["evaluations"]] == [7, 10]
        for evaluation in record["evaluations"]:
            assert list(evaluation["modes"]) == modes
            for result in evaluation["modes"].values():
                assert isinstance(result["normalized_score"]["mean"], float)
                assert result["normalized_score"]["stderr"] >= 0 and result["episodes"] == 2
        assert record["scores"][modes[0]]["final_step"] == 10
        assert record["steps_per_second"] > 0 and record["wall_time_s"] > record["train_time_s"] > 0
        assert record["dataset_info"]["behaviour"]["normalized_score"] is not None
        assert record["settings"] and record["machine"]["torch_threads"] == 1
    assert run_json(out, "iql")["settings"]["temperature"] == 3.0  # TorchRL's recipe, not IQLLoss's default 1.0
    # DTQL's evaluations record the trust-region weight: the preset's, and the one alpha="auto" has learnt so far
    assert {e["alpha"] for e in run_json(out, "dtql")["evaluations"]} == {run_json(out, "dtql")["settings"]["alpha"]}
    assert all(e["alpha"] > 0 for e in run_json(out, "dtql-auto")["evaluations"])
    assert "alpha" not in run_json(out, "td3bc")["evaluations"][0]
    assert run_json(out, "td3bc")["settings"]["alpha"] == 2.5
    assert run_json(out, "dtql")["settings"]["alpha"] == 5.0  # hopper-medium-v2's preset
    assert run_json(out, "dtql-auto")["settings"]["alpha"] == "auto"
    qscale = run_json(out, "dtql-qscale")
    assert (qscale["settings"]["alpha"], qscale["settings"]["auto_alpha"]) == ("auto", "q_scale")
    assert all(e["alpha"] > 0 for e in qscale["evaluations"]) and "auto_alpha" not in run_json(out, "dtql")["settings"]
    assert not list((out / "checkpoints").rglob("*.pt")), "a finished run's checkpoint is removed"


def test_dtql_runs_log_their_trust_region_over_training(finished):
    """Every 2 steps of the main phase (steps 5-10; the pretraining's 4 steps train no actor), the trust-region
    loss and the Q of the policy's actions; the weight where alpha="auto" sets it, and the multiplier's target."""
    out, _ = finished
    for method, keys in {"dtql": {"trust_region", "min_q_actor"},
                         "dtql-qscale": {"alpha", "trust_region", "min_q_actor"},
                         "dtql-auto": {"alpha", "trust_region", "trust_region_target", "min_q_actor"}}.items():
        log = run_json(out, method)["train_log"]
        assert [entry["step"] for entry in log] == [6, 8, 10], method
        assert all(set(entry) == {"step", *keys} for entry in log), method
        assert all(entry["trust_region"] > 0 for entry in log), method
    qscale = run_json(out, "dtql-qscale")
    assert [entry["alpha"] for entry in qscale["train_log"]][-1] == qscale["evaluations"][-1]["alpha"]
    import quality_report

    # the plot's alpha: what q_scale set at each logged step, and the preset's own value for the fixed-alpha run
    steps, alphas, _ = quality_report.train_log_curve([run_json(out, "dtql")], "alpha")
    assert steps.tolist() == [6, 8, 10] and alphas.tolist() == [5.0] * 3
    assert run_json(out, "iql")["train_log"] is None and run_json(out, "td3bc")["train_log"] is None


def test_a_rerun_skips_finished_runs(finished):
    out, _ = finished
    before = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.json")}
    outcomes = quality.main([*TINY, "--out", str(out)])
    assert set(outcomes.values()) == {"skipped: complete"}
    assert {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("*.json")} == before


def test_other_settings_are_refused(finished, capsys):
    out, _ = finished
    with pytest.raises(SystemExit, match="other settings"):
        quality.main([*TINY, "--out", str(out), "--steps", "9"])


@pytest.mark.parametrize("method", ["dtql", "td3bc"])
def test_a_stopped_run_resumes_from_its_checkpoint_to_the_uninterrupted_result(finished, tmp_path, method, capsys):
    """Stopped at step 8 (after one evaluation), as a kill after a checkpoint leaves it: a checkpoint and a JSON
    with status "stopped". The rerun continues from step 8, and ends with the evaluations of the uninterrupted run
    number for number (CPU, one thread: exact resume restores every weight, optimizer moment and RNG state)."""
    args = [*TINY, "--methods", method, "--out", str(tmp_path)]
    assert quality.main([*args, "--stop-at-step", "8"]) == {f"embedded-hopper-medium-v0/{method}/seed0": "stopped"}
    stopped = run_json(tmp_path, method)
    assert stopped["status"] == "stopped" and stopped["steps_done"] == 8
    assert [e["step"] for e in stopped["evaluations"]] == [7]
    assert (tmp_path / "checkpoints" / "embedded-hopper-medium-v0" / method / "seed0.pt").is_file()
    capsys.readouterr()
    assert quality.main(["--list", *args]) == {f"embedded-hopper-medium-v0/{method}/seed0": "stopped"}
    assert "(8 of 10 steps recorded)" in capsys.readouterr().out

    assert set(quality.main(args).values()) == {"complete"}
    resumed, uninterrupted = run_json(tmp_path, method), run_json(finished[0], method)
    assert resumed["resumed_at"] == [8] and resumed["status"] == "complete"
    assert [e["modes"] for e in resumed["evaluations"]] == [e["modes"] for e in uninterrupted["evaluations"]]
    assert resumed["train_log"] == uninterrupted["train_log"]


def test_table_and_curves_are_written(finished):
    out, _ = finished
    table = (out / "table.md").read_text()
    for label in ("DTQL, Q-reranked (preset alpha)", "DTQL, mean action (alpha auto, multiplier)",
                  "DTQL, Q-reranked (alpha auto, q_scale: the default)", "IQL (TorchRL IQLLoss)",
                  "TD3+BC (TorchRL TD3BCLoss)", "diffusion BC", "behaviour policy (dataset)"):  # fmt: skip
        assert label in table
    assert "4 + 6 gradient steps per run at batch 32" in table
    for png in (out / "curves_embedded-hopper-medium-v0.png", out / "trust_region_embedded-hopper-medium-v0.png"):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert quality.main(["--table", "--out", str(out)]) == {}


def test_the_readme_shows_the_committed_benchmark():
    """The README's table is the report of the committed run JSONs, as ``quality.py --table`` writes it now."""
    import quality_report

    runs = quality_report.load_runs(quality.DEFAULT_OUT)
    readme = (REPO / "README.md").read_text()
    block = quality_report.readme_block(runs)
    assert block in readme, "README's quality table is stale: run `python benchmarks/quality.py --table` and commit"
    assert quality_report.replace_readme_block(readme, block) == readme


def test_a_dataset_that_is_not_shipped_is_refused_before_any_training(tmp_path):
    with pytest.raises(SystemExit, match="walker2d/medium-v0.*available: .*d4rl-like/hopper/medium-v0"):
        quality.main([*TINY[:1], "d4rl-like/walker2d/medium-v0", *TINY[2:], "--out", str(tmp_path)])
    assert not (tmp_path / "runs").exists()


def test_dataset_ids_name_their_preset():
    assert dataset_family_and_kind("d4rl-like/halfcheetah/medium-v0") == ("halfcheetah", "medium")
    preset = load_dtql_preset("d4rl-like/walker2d/medium-v0")
    assert (preset.alpha, preset.lr, preset.lr_decay, preset.expectile) == (5.0, 3e-4, True, 0.7)
    with pytest.raises(PresetError, match="<namespace>/<family>/<kind>-v<N>"):
        load_dtql_preset("/data/hopper.hdf5")
    with pytest.raises(PresetError, match="does not exist"):
        load_dtql_preset("local/ant/medium-v0")


def test_ctrl_c_checkpoints_the_run_in_progress(tmp_path):
    """SIGINT (Ctrl-C) in the middle of a run: the step in progress ends, the run is checkpointed and recorded as
    stopped, the process exits with 130 and says how to continue; nothing of the run is lost."""
    args = [sys.executable, str(REPO / "benchmarks" / "quality.py"), *TINY, "--methods", "iql", "--steps", "1000000",
            "--out", str(tmp_path)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}  # this checkout's package, whatever is installed
    process = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lock = tmp_path / "checkpoints" / "embedded-hopper-medium-v0" / "iql" / "seed0.lock"
    first_record = tmp_path / "runs" / "embedded-hopper-medium-v0" / "iql" / "seed0.json"  # the first evaluation's
    deadline = time.monotonic() + 120
    while not first_record.exists() and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)  # in the training loop
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr[-3000:]
    assert "Continue with" in stderr
    record = run_json(tmp_path, "iql")
    assert record["status"] == "stopped" and record["steps_done"] >= 1
    checkpoint = tmp_path / "checkpoints" / "embedded-hopper-medium-v0" / "iql" / "seed0.pt"
    assert read_step(checkpoint) == record["steps_done"]
    assert not lock.exists()


def read_step(path: Path) -> int:
    from torchrl_dtql.checkpoint import read_checkpoint

    return read_checkpoint(path)["step"]


def test_a_stop_while_the_dataset_regenerates_exits_at_once(tmp_path):
    """SIGTERM while the first run's dataset is still being regenerated (a fresh cache: a minute or more of rollouts
    with nothing to checkpoint) ends the process within seconds, with 143, no run record and no dataset cached."""
    cache, log = tmp_path / "cache", tmp_path / "stderr.txt"
    args = [sys.executable, str(REPO / "benchmarks" / "quality.py"), *TINY, "--methods", "iql",
            "--out", str(tmp_path / "out")]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO), "TORCHRL_DTQL_CACHE": str(cache)}
    with log.open("w") as stderr_file:
        process = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=stderr_file, text=True)
        wait_for_line(log, "regenerating", process, timeout=60)
        stopped_at = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=60)
    stderr = log.read_text()
    assert process.returncode == 143, stderr[-3000:]
    assert time.monotonic() - stopped_at < 20, "the regeneration should not run to its end"
    assert "no run had started" in stderr and "Continue with" in stderr
    assert not list((tmp_path / "out" / "runs").rglob("*.json"))
    assert not list((tmp_path / "out" / "checkpoints").rglob("*.lock"))
    assert not list(cache.rglob("*.hdf5")) and not list(cache.rglob("*.h5")), "no dataset cached from a stopped run"
