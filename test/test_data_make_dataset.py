"""The dataset maker (tiny budgets), the embedded dataset, and the MinariExperienceReplay pre-fill."""
from __future__ import annotations

import json
import os
import signal
import time
from dataclasses import replace

import numpy as np
import pytest
import torch

from _data_common import write_minari
from torchrl_dtql.data import DEFAULT_DATASET, load_offline_dataset
from torchrl_dtql.data import embedded as embedded_mod
from torchrl_dtql.data.make_dataset import KINDS, dataset_id_for, main, parse_args
from torchrl_dtql.data.sac import SACBehaviourTrainer, SACConfig, load_behaviour_actor

pytestmark = pytest.mark.filterwarnings("error")

TINY = [
    "--env", "Hopper-v5", "--seed", "3", "--sac-steps", "400", "--eval-every", "200",
    "--frames-per-batch", "100", "--init-random-steps", "100", "--dataset-steps", "150",
    "--eval-episodes", "1", "--hidden", "16", "--batch-size", "16", "--utd-ratio", "0.1", "--no-progress",
]


def _tiny_config(**kw) -> SACConfig:
    args = parse_args(TINY)
    base = dict(env_id=args.env, seed=args.seed, total_steps=args.sac_steps, init_random_steps=args.init_random_steps,
                frames_per_batch=args.frames_per_batch, batch_size=args.batch_size, hidden_sizes=tuple(args.hidden),
                eval_every=args.eval_every, eval_episodes=args.eval_episodes, utd_ratio=args.utd_ratio)
    base.update(kw)
    return SACConfig(**base)


def test_maker_writes_minari_datasets_and_resumes(tmp_path):
    import minari

    root, work = tmp_path / "minari", tmp_path / "work"
    # An "interrupted" run: the trainer stops after 200 of the 400 steps.
    SACBehaviourTrainer(_tiny_config(), work).train(progress=False, until_step=200)
    assert [e["step"] for e in json.loads((work / "evals.json").read_text())["evals"]] == [0, 200]

    summary = main(TINY + ["--root", str(root), "--workdir", str(work), "--medium-return=-1e9"])
    # It resumed: one more evaluation, 400 ordered transitions in the replay record.
    assert summary["sac"]["evals"][-1][0] == 400 and len(summary["sac"]["evals"]) == 3
    replay = SACBehaviourTrainer(_tiny_config(), work).replay_data()
    assert replay["step"].tolist() == list(range(400))
    assert (replay["episode"][1:] >= replay["episode"][:-1]).all()

    import os

    os.environ["MINARI_DATASETS_PATH"] = str(root)
    try:
        for kind in KINDS:
            ds = minari.load_dataset(dataset_id_for("Hopper-v5", kind))
            meta = ds.storage.metadata
            assert (meta["ref_min_score"], meta["ref_max_score"]) == (-20.272305, 3234.3)
            assert ds.spec.env_spec.id == "Hopper-v5"
            expected = {"random": 150, "medium": 150, "expert": 150, "medium-expert": 300, "medium-replay": 200}
            assert ds.total_steps == expected[kind], kind
        # The whole loading path on a made dataset; returns match Minari's own episodes.
        td, info = load_offline_dataset(dataset_id_for("Hopper-v5", "medium"))
        ds = minari.load_dataset(dataset_id_for("Hopper-v5", "medium"))
        np.testing.assert_allclose(info.episode_returns, [ep.rewards.sum() for ep in ds.iterate_episodes()], rtol=1e-5)
        assert info.extra["maker"]["num_transitions"] == 150
        assert info.extra["maker"]["return_mean"] == pytest.approx(float(np.mean(info.episode_returns)), rel=1e-6)
        # medium-replay is the replay record up to the medium snapshot (step 200).
        td_mr, _ = load_offline_dataset(dataset_id_for("Hopper-v5", "medium-replay"))
        torch.testing.assert_close(td_mr["observation"], replay["observation"][:200])
        torch.testing.assert_close(td_mr["next", "reward"], replay["next", "reward"][:200])
        assert torch.equal(td_mr["next", "terminated"], replay["next", "terminated"][:200])
    finally:
        del os.environ["MINARI_DATASETS_PATH"]
    assert summary["sac"]["medium_step"] == 200
    side = json.loads((root / "local/hopper/medium-v0/torchrl_dtql.json").read_text())
    assert side["num_transitions"] == 150 and "normalized_score" in side

    # Running again keeps what exists and trains nothing.
    t0 = time.time()
    again = main(TINY + ["--root", str(root), "--workdir", str(work), "--medium-return=-1e9"])
    assert again["datasets"] == {} and time.time() - t0 < 10


def test_maker_random_only_trains_nothing(tmp_path):
    import minari

    summary = main(TINY + ["--kinds", "random", "--root", str(tmp_path / "m"), "--workdir", str(tmp_path / "w")])
    assert summary["sac"]["steps"] == 0
    ds = minari.MinariDataset(tmp_path / "m" / "local/hopper/random-v0" / "data")
    assert ds.total_steps == 150


def _interrupt_after_step(monkeypatch, at_step: int) -> None:
    """Sends this process a real SIGINT right after the SAC update that follows env step ``at_step``."""
    update = SACBehaviourTrainer._update

    def update_then_interrupt(self, loss, updater, optimizers, rb, num_updates):
        update(self, loss, updater, optimizers, rb, num_updates)
        if len(rb) == at_step:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(SACBehaviourTrainer, "_update", update_then_interrupt)


def test_ctrl_c_checkpoints_the_sac_run_where_it_is_and_the_same_command_continues(tmp_path, monkeypatch, capsys):
    """Ctrl-C between two evaluations (step 300 of 400; evaluations at 200 and 400) loses nothing: the batch finishes,
    the whole state is checkpointed at step 300, the command exits 130 naming how to continue, and running it again
    trains to the end with every env step recorded exactly once."""
    argv = [*TINY, "--medium-return=-1e9", "--root", str(tmp_path / "m"),
            "--workdir", str(tmp_path / "w")]  # fmt: skip
    _interrupt_after_step(monkeypatch, 300)
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    assert stopped.value.code == 130
    assert "Stopped (SIGINT) at SAC step 300" in capsys.readouterr().err
    trainer = SACBehaviourTrainer(_tiny_config(), tmp_path / "w")
    assert trainer.replay_data()["step"].tolist() == list(range(300))
    assert [e.step for e in trainer.load_evals()] == [0, 200]

    monkeypatch.undo()
    summary = main(argv)
    assert [step for step, _ in summary["sac"]["evals"]] == [0, 200, 400]
    assert trainer.replay_data()["step"].tolist() == list(range(400))


def test_maker_rejects_a_changed_config(tmp_path):
    SACBehaviourTrainer(_tiny_config(), tmp_path).train(progress=False, until_step=0)
    with pytest.raises(ValueError, match="different settings"):
        SACBehaviourTrainer(_tiny_config(lr=1e-3), tmp_path).train(progress=False)


def test_every_option_parses():
    args = parse_args([
        "--env", "Walker2d-v5", "--kinds", "random", "medium", "--seed", "1", "--sac-steps", "20000",
        "--dataset-steps", "10", "--init-random-steps", "7", "--eval-every", "10000", "--eval-episodes", "2",
        "--frames-per-batch", "500", "--batch-size", "8", "--hidden", "64", "64", "64", "--utd-ratio", "0.5",
        "--lr", "0.001", "--medium-fraction", "0.25", "--medium-return", "900.5", "--namespace", "mine",
        "--version", "2", "--root", "/r", "--workdir", "/w", "--export-actor", "medium", "/a.pt",
        "--threads", "2", "--no-progress",
    ])
    assert (args.sac_steps, args.hidden, args.utd_ratio, args.medium_return) == (20000, [64, 64, 64], 0.5, 900.5)
    assert args.export_actor == [["medium", "/a.pt"]] and args.kinds == ["random", "medium"]
    with pytest.raises(SystemExit):
        parse_args(["--env", "Hopper-v5", "--sac-steps", "1001", "--eval-every", "1000"])


_SHIPPED_RECIPE = embedded_mod.embedded_recipe


def _embedded_recipe(num_steps: int):
    return replace(_SHIPPED_RECIPE(), num_steps=num_steps)


def test_embedded_regeneration_is_deterministic(tmp_path):
    from torchrl_dtql.data import load_minari

    recipe = _embedded_recipe(300)
    a = embedded_mod.regenerate_embedded(recipe, tmp_path / "a", progress=False)
    torch.manual_seed(123)  # the global RNG state must not matter
    b = embedded_mod.regenerate_embedded(recipe, tmp_path / "b", progress=False)
    td_a, _ = load_minari(a)
    td_b, _ = load_minari(b)
    assert td_a.shape == (300,)
    # bit-identical on purpose: the same rollout code, seeds and machine (regeneration is deterministic per machine)
    for key in td_a.keys(True, True):
        assert torch.equal(td_a[key], td_b[key]), key
    actor, meta = load_behaviour_actor(recipe.actor_path)
    assert meta["env_id"] == "Hopper-v5" and meta["observation_size"] == 11


def test_default_dataset_is_regenerated_once_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHRL_DTQL_CACHE", str(tmp_path))
    monkeypatch.setattr(embedded_mod, "embedded_recipe", lambda dataset_id=DEFAULT_DATASET: _embedded_recipe(200))
    td, info = load_offline_dataset(DEFAULT_DATASET)
    assert info.dataset_id == DEFAULT_DATASET and info.source_kind == "embedded" and info.env_id == "Hopper-v5"
    assert td.shape == (200,) and info.action_spec.shape == (3,)
    assert str(tmp_path) in info.source_path
    data_file = next(tmp_path.rglob("main_data.hdf5"))
    mtime = data_file.stat().st_mtime_ns
    td2, _ = load_offline_dataset(DEFAULT_DATASET)
    assert data_file.stat().st_mtime_ns == mtime and torch.equal(td2["observation"], td["observation"])  # same file


def test_the_cache_is_not_served_under_another_mujoco_release(tmp_path, monkeypatch):
    """Two MuJoCo releases roll the same recipe out into different episodes: their caches must be two folders."""
    monkeypatch.setenv("TORCHRL_DTQL_CACHE", str(tmp_path))
    monkeypatch.setattr(embedded_mod, "embedded_recipe", lambda dataset_id=DEFAULT_DATASET: _embedded_recipe(100))
    _, info = load_offline_dataset(DEFAULT_DATASET)
    monkeypatch.setattr(embedded_mod, "_mujoco_version", lambda: "0.0.1")  # as if MuJoCo had been upgraded
    _, other = load_offline_dataset(DEFAULT_DATASET)
    assert other.source_path != info.source_path
    assert len(list(tmp_path.rglob("main_data.hdf5"))) == 2


def test_first_use_regeneration_leaves_the_callers_rng_alone(tmp_path, monkeypatch):
    """A seeded run must train the same whether the embedded dataset is cached or regenerated on first use."""
    monkeypatch.setenv("TORCHRL_DTQL_CACHE", str(tmp_path))
    monkeypatch.setattr(embedded_mod, "embedded_recipe", lambda dataset_id=DEFAULT_DATASET: _embedded_recipe(200))
    torch.manual_seed(0)
    load_offline_dataset(DEFAULT_DATASET)  # regenerates (first use)
    after_regeneration = torch.rand(4)
    torch.manual_seed(0)
    load_offline_dataset(DEFAULT_DATASET)  # cached
    after_cached_load = torch.rand(4)
    torch.manual_seed(0)
    # exact on purpose: the same generator, seeded the same way, must be at the same point of its stream
    assert torch.equal(after_regeneration, after_cached_load) and torch.equal(after_cached_load, torch.rand(4))


@pytest.mark.slow
def test_full_default_dataset(tmp_path, monkeypatch):
    from torchrl_dtql.data import get_normalized_score, make_offline_replay_buffer

    monkeypatch.setenv("TORCHRL_DTQL_CACHE", str(tmp_path))
    rb = make_offline_replay_buffer(DEFAULT_DATASET, 256)
    recipe = embedded_mod.embedded_recipe()
    assert len(rb) == recipe.num_steps
    score = get_normalized_score(rb.metadata, float(np.mean(rb.metadata.episode_returns)))
    assert 20.0 < score < 80.0


def test_prefilled_minari_experience_replay_has_the_values(tmp_path, monkeypatch):
    from torchrl.data.datasets import MinariExperienceReplay

    from torchrl_dtql.data import make_minari_experience_replay, prefill_minari_experience_replay

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    ds = write_minari("test/hopper/tiny-v0")
    td, _ = load_offline_dataset("test/hopper/tiny-v0")
    root = tmp_path / "torchrl_cache"
    prefill_minari_experience_replay("test/hopper/tiny-v0", root)
    rb = MinariExperienceReplay("test/hopper/tiny-v0", batch_size=4, root=root, download=False)
    data = rb[:]
    minari_sum = sum(float(ep.rewards.sum()) for ep in ds.iterate_episodes())
    # The regression: TorchRL's own converter gives all zeros here.
    assert data["observation"].abs().sum() > 0
    assert data["next", "reward"].double().sum().item() == pytest.approx(minari_sum, rel=1e-6)
    # exact on purpose: both read the same float32 values from the same file and copy them, no arithmetic
    assert torch.equal(data["next", "observation"], td["next", "observation"])
    assert torch.equal(data["next", "truncated"], td["next", "truncated"])
    assert rb.metadata["action_space"].shape == (3,)
    rb2 = make_minari_experience_replay("test/hopper/tiny-v0", 4, root=root)
    assert torch.equal(rb2[:]["action"], td["action"])
