"""Make D4RL-style MuJoCo datasets here, with TorchRL's own SAC, as genuine Minari datasets.

Usage::

    python -m torchrl_dtql.data.make_dataset --env Hopper-v5 --kinds medium medium-replay
    dtql-make-dataset --env HalfCheetah-v5 --kinds random medium medium-replay expert medium-expert

What it does, D4RL's recipe (Fu et al., 2020, section 5) on gymnasium ``-v5`` envs:

1. **Train a behaviour agent** with TorchRL's SAC (``SACLoss`` + ``Collector`` +
   ``TensorDictReplayBuffer``, see :mod:`torchrl_dtql.data.maker.sac`) for ``--sac-steps`` env steps.
   Every ``--eval-every`` steps the deterministic policy is evaluated on ``--eval-episodes``
   episodes and the actor is saved as a snapshot; the full state is checkpointed atomically, so
   re-running the same command after an interruption resumes (the env restarts its episode).
2. **Pick the policies.** ``expert`` = the snapshot with the best evaluation return.
   ``medium`` = the *first* snapshot whose evaluation return reaches the medium target,
   ``--medium-fraction`` (1/3) of the expert's evaluation return. When no kind needs the
   expert, the target is ``--medium-fraction`` x the D4RL ``ref_max_score`` of the task (or
   ``--medium-return`` if given) and training stops as soon as it is reached. ``random`` = the
   randomly initialised actor (step 0), as D4RL's random datasets.
   With ``--medium-score d4rl`` (or a normalized score) the medium policy is instead matched on
   what a dataset's behaviour score measures, the *sampled* policy's mean episode return: every
   evaluation also records ``--sampled-eval-steps`` sampled steps, training stops once that score
   passes the target by 3 points, and of the ``--selection-candidates`` snapshots nearest to the
   target, the one whose ``--selection-steps`` sampled steps come closest is the medium policy.
3. **Record** ``--dataset-steps`` transitions per policy kind with the *stochastic* policy, in
   full episodes (the last one cut and marked truncated); ``medium-replay`` = the SAC replay
   buffer up to the medium snapshot (random warm-up included), ``medium-expert`` = the medium
   and expert datasets concatenated.
4. **Write** each as a Minari dataset ``<namespace>/<env>/<kind>-v<version>``
   (``local/hopper/medium-v0``) with ``minari.create_dataset_from_buffers`` (no jax),
   ``ref_min_score``/``ref_max_score`` set (the D4RL references for hopper, halfcheetah,
   walker2d and ant; otherwise the random policy's and the expert's measured returns), plus a
   ``torchrl_dtql.json`` with the behaviour policy's returns. Existing datasets are kept.

Load the result with ``torchrl_dtql.data.make_offline_replay_buffer("local/hopper/medium-v0",
256)`` or ``minari.load_dataset("local/hopper/medium-v0")``.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import shlex
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Sequence

from torchrl_dtql.io import atomic_write_json, default_cache_dir

from ..local_ids import KINDS, dataset_id_for
from ..scores import D4RL_DATASET_SCORES, D4RL_REF_SCORES, task_family

__all__ = ["KINDS", "main", "parse_args", "dataset_id_for", "select_policies"]


def select_policies(evals: list, medium_target: float | None) -> dict:
    """Choose the expert and medium snapshots from an evaluation history (D4RL's rule).

    Args:
        evals: :class:`~torchrl_dtql.data.maker.sac.EvalRecord` list, in step order.
        medium_target: the return the medium policy must reach; ``None`` means
            ``expert_return / 3``.

    Returns:
        ``{"random": rec, "expert": rec, "medium": rec | None, "medium_target": float}``.

    Examples:
        >>> from torchrl_dtql.data.maker.sac import EvalRecord
        >>> ev = [EvalRecord(s, r, 0.0, 1.0, 0.0, f"a{s}") for s, r in [(0, 5), (10, 50), (20, 120), (30, 90)]]
        >>> sel = select_policies(ev, None)
        >>> sel["expert"].step, sel["medium"].step, sel["medium_target"]
        (20, 10, 40.0)
    """
    expert = max(evals, key=lambda e: (e.return_mean, e.step))
    target = expert.return_mean / 3.0 if medium_target is None else float(medium_target)
    medium = next((e for e in evals if e.step > 0 and e.return_mean >= target), None)
    return {"random": evals[0], "expert": expert, "medium": medium, "medium_target": target}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (see ``--help``)."""
    p = argparse.ArgumentParser(
        prog="dtql-make-dataset",
        description="Train a SAC behaviour agent (TorchRL) and record D4RL-style Minari datasets.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--env", required=True, help="gymnasium MuJoCo env id, e.g. Hopper-v5")
    p.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS, help="datasets to make")
    p.add_argument("--seed", type=int, default=0, help="seeds SAC, the envs and the recordings")
    p.add_argument("--sac-steps", type=int, default=1_000_000, help="SAC env-step budget")
    p.add_argument("--dataset-steps", type=int, default=1_000_000, help="transitions per recorded kind")
    p.add_argument("--init-random-steps", type=int, default=5_000, help="random warm-up steps of SAC")
    p.add_argument("--eval-every", type=int, default=5_000, help="env steps between evaluations/snapshots")
    p.add_argument("--eval-episodes", type=int, default=5, help="episodes per evaluation")
    p.add_argument("--frames-per-batch", type=int, default=1_000, help="collector batch")
    p.add_argument("--batch-size", type=int, default=256, help="SAC minibatch")
    p.add_argument("--hidden", type=int, nargs="+", default=[256, 256], help="MLP widths")
    p.add_argument("--utd-ratio", type=float, default=1.0, help="gradient updates per env step")
    p.add_argument("--lr", type=float, default=3e-4, help="Adam learning rate")
    p.add_argument("--medium-fraction", type=float, default=1 / 3, help="medium target / expert return")
    p.add_argument("--medium-return", type=float, default=None, help="absolute medium target (overrides)")
    p.add_argument("--medium-score", default=None, metavar="d4rl|SCORE",
                   help="match the sampled medium policy to this normalized score ('d4rl': D4RL's v2 medium "
                        "dataset of the task) instead of the deterministic return rule")
    p.add_argument("--sampled-eval-steps", type=int, default=10_000,
                   help="with --medium-score: sampled steps recorded at every evaluation")
    p.add_argument("--selection-candidates", type=int, default=3,
                   help="with --medium-score: snapshots re-measured before the medium one is chosen")
    p.add_argument("--selection-steps", type=int, default=50_000,
                   help="with --medium-score: sampled steps per re-measured snapshot")
    p.add_argument("--namespace", default="local", help="Minari namespace of the written ids")
    p.add_argument("--version", type=int, default=0, help="version suffix of the written ids")
    p.add_argument("--root", default=None, help="Minari root (default $MINARI_DATASETS_PATH or ~/.minari/datasets)")
    p.add_argument("--workdir", default=None, help="SAC work folder (default <cache>/make_dataset/<env>-seed<seed>)")
    p.add_argument("--export-actor", nargs=2, action="append", default=[], metavar=("KIND", "PATH"),
                   help="also copy the actor of KIND (random, medium, expert) to PATH")
    p.add_argument("--ship-recipes", default=None, metavar="DIR",
                   help="also write d4rl-like recipes (JSON + actor snapshots) of the medium and medium-replay kinds to "
                        "DIR, as torchrl_dtql/data/assets/d4rl_like/ ships them")
    p.add_argument("--replay-snapshots", type=int, default=10,
                   help="with --ship-recipes: at most this many snapshots approximate the medium-replay buffer")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads for SAC")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = p.parse_args(argv)
    if args.sac_steps % args.eval_every:
        p.error("--sac-steps must be a multiple of --eval-every")
    if args.eval_every % min(args.frames_per_batch, args.eval_every):
        p.error("--eval-every must be a multiple of --frames-per-batch")
    if args.medium_score is not None:
        if args.medium_return is not None:
            p.error("--medium-score and --medium-return are two ways to set one target: give one")
        if args.medium_score != "d4rl":
            try:
                args.medium_score = float(args.medium_score)
            except ValueError:
                p.error(f"--medium-score takes 'd4rl' or a normalized score, not {args.medium_score!r}")
    return args


def medium_score_target(env_id: str, medium_score: str | float) -> tuple[float, float]:
    """``(normalized score, raw return)`` the sampled medium policy must match.

    Examples:
        >>> medium_score_target("Hopper-v5", "d4rl")[0]
        44.3
    """
    family = task_family(env_id)
    if family not in D4RL_REF_SCORES or family in ("antmaze", "kitchen"):
        raise SystemExit(f"--medium-score needs D4RL reference scores for {env_id}; there are none for '{family}'.")
    if medium_score == "d4rl":
        if (family, "medium") not in D4RL_DATASET_SCORES:
            raise SystemExit(f"D4RL has no gym medium dataset for '{family}': give --medium-score a number.")
        medium_score = D4RL_DATASET_SCORES[(family, "medium")]
    lo, hi = D4RL_REF_SCORES[family]
    return float(medium_score), lo + float(medium_score) / 100.0 * (hi - lo)


def select_sampled_medium(trainer, evals: list, target_return: float, *, candidates: int, steps: int,
                          seed: int) -> tuple[object, list[dict]]:
    """The snapshot whose sampled policy's mean return is nearest ``target_return``.

    The ``candidates`` evaluations nearest the target (by their short sampled evaluation) are
    re-measured on ``steps`` sampled steps each (own env seed, own RNG scope); the nearest wins.
    Returns ``(eval record, [{"step", "return_mean"}...])``.
    """
    from torchrl_dtql.data.maker.behaviour_actor import load_behaviour_actor

    from .recording import actor_sampler, record_episodes

    measured = [e for e in evals if e.step > 0 and e.stochastic_return_mean is not None]
    if not measured:
        raise SystemExit("No sampled evaluations recorded: the SAC work folder was made without --medium-score.")
    nearest = sorted(measured, key=lambda e: abs(e.stochastic_return_mean - target_return))[:candidates]
    report = []
    for rec in nearest:
        actor, _ = load_behaviour_actor(trainer.workdir / rec.snapshot)
        _, stats = record_episodes(trainer.config.env_id, actor_sampler(actor), steps, seed=seed + rec.step,
                                   progress=False)
        report.append({"step": rec.step, "return_mean": stats.return_mean})
        _log(f"medium candidate step {rec.step}: sampled return {stats.return_mean:.1f} over {steps} steps "
             f"(target {target_return:.1f})")
    best = min(report, key=lambda r: abs(r["return_mean"] - target_return))
    return next(e for e in nearest if e.step == best["step"]), report


def replay_segments(evals: list, medium_step: int, init_random_steps: int, max_snapshots: int) -> list[tuple]:
    """``[(eval record | None, steps), ...]``: the SAC run's replay buffer up to ``medium_step`` approximated by
    uniform random actions for the warm-up, then at most ``max_snapshots`` snapshots, each for the steps until the
    next one.

    Examples:
        >>> from types import SimpleNamespace as R
        >>> evals = [R(step=s) for s in range(0, 90_000, 5_000)]
        >>> [(None if e is None else e.step, n) for e, n in replay_segments(evals, 85_000, 5_000, 8)]
        [(None, 5000), (5000, 10000), (15000, 10000), (25000, 10000), (35000, 10000), (45000, 10000), (55000, 10000), (65000, 10000), (75000, 10000)]
    """
    steps = [e.step for e in evals if init_random_steps <= e.step < medium_step]
    stride = max(1, math.ceil(len(steps) / max_snapshots))
    chosen = [e for e in evals if e.step in steps[::stride]]
    bounds = [e.step for e in chosen] + [medium_step]
    return [(None, init_random_steps)] + [(e, bounds[i + 1] - bounds[i]) for i, e in enumerate(chosen)]


def ship_recipes(out: Path, workdir: Path, evals: list, medium, *, env_id: str, refs, seed: int, dataset_steps: int,
                 init_random_steps: int, max_snapshots: int, summary: dict) -> None:
    """Write the ``d4rl-like`` recipes of ``medium`` (the medium actor, ``dataset_steps`` steps, the maker's
    recording seed) and ``medium-replay`` (:func:`replay_segments`) with their actor files, into ``out``."""
    family = task_family(env_id)
    actors = out / family
    actors.mkdir(parents=True, exist_ok=True)

    def copy(rec) -> str:
        name = f"{family}/actor_{rec.step:08d}.pt"
        shutil.copyfile(workdir / rec.snapshot, out / name)
        return name

    made_by = "python -m torchrl_dtql.data.make_dataset " + " ".join(summary["argv"])
    common = {"env_id": env_id, "ref_min_score": refs[0], "ref_max_score": refs[1]}
    medium_info = {"what": f"{env_id} SAC actor at step {medium.step}, its sampled return matched to D4RL's medium",
                   "made_by": made_by, "sac_env_steps": medium.step,
                   "sac_train_minutes": round(evals[-1].wall_time_s / 60, 1)}
    atomic_write_json({**common, "actor": copy(medium), "num_steps": dataset_steps,
                       "seed": seed + 1000 * (1 + 1), "info": medium_info}, out / f"{family}_medium.json")
    segments = [{"actor": None if rec is None else copy(rec), "num_steps": n}
                for rec, n in replay_segments(evals, medium.step, init_random_steps, max_snapshots)]
    replay_info = {"what": f"{env_id} SAC run's replay buffer up to step {medium.step}, approximated by "
                           f"{len(segments) - 1} snapshots after {init_random_steps} random warm-up steps",
                   "made_by": made_by}
    atomic_write_json({**common, "segments": segments, "seed": seed + 5000, "info": replay_info},
                      out / f"{family}_medium-replay.json")
    _log(f"shipped d4rl-like recipes of {env_id} to {out}")


def _log(msg: str) -> None:
    print(f"[make_dataset] {msg}", flush=True)


def main(argv: Sequence[str] | None = None) -> dict:
    """Run the maker; returns the summary also written to ``<workdir>/summary.json``."""
    import torch

    from torchrl_dtql.data.maker.behaviour_actor import load_behaviour_actor
    from torchrl_dtql.data.maker.sac import SACBehaviourTrainer, SACConfig

    from .recording import actor_sampler, minari_dataset_exists, record_episodes, replay_to_episode_buffers
    from .recording import RecordStats, write_minari_dataset

    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    kinds = list(dict.fromkeys(args.kinds))
    family = task_family(args.env)
    refs = D4RL_REF_SCORES.get(family) if family in ("hopper", "halfcheetah", "walker2d", "ant") else None
    need_expert = bool({"expert", "medium-expert"} & set(kinds)) or (
        {"medium", "medium-replay"} & set(kinds) and args.medium_return is None and refs is None
    )
    need_medium = bool({"medium", "medium-replay", "medium-expert"} & set(kinds))
    sampled_target = None
    if args.medium_score is not None:
        score, sampled_target = medium_score_target(args.env, args.medium_score)
        lo, hi = D4RL_REF_SCORES[family]
        stop_sampled = lo + (score + 3.0) / 100.0 * (hi - lo)
        need_expert = bool({"expert", "medium-expert"} & set(kinds))
        _log(f"medium target: sampled policy at normalized {score:.1f} (return {sampled_target:.1f})")
    if args.medium_return is not None:
        medium_target = args.medium_return
    elif need_expert:
        medium_target = None  # a fraction of the trained expert, known after training
    else:
        medium_target = args.medium_fraction * refs[1] if refs else None
    workdir = Path(args.workdir) if args.workdir else default_cache_dir() / "make_dataset" / f"{args.env}-seed{args.seed}"
    ids = {k: dataset_id_for(args.env, k, args.namespace, args.version) for k in kinds}
    todo = [k for k in kinds if not minari_dataset_exists(ids[k], args.root)]
    for k in kinds:
        if k not in todo:
            _log(f"{ids[k]} exists, kept")
    summary: dict = {"env": args.env, "seed": args.seed, "argv": list(argv) if argv is not None else sys.argv[1:],
                     "workdir": str(workdir), "datasets": {}}

    # 1. Train (or resume) the behaviour agent.
    cfg = SACConfig(
        env_id=args.env,
        seed=args.seed,
        total_steps=args.sac_steps,
        init_random_steps=args.init_random_steps,
        frames_per_batch=args.frames_per_batch,
        utd_ratio=args.utd_ratio,
        batch_size=args.batch_size,
        hidden_sizes=tuple(args.hidden),
        lr=args.lr,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        stop_return=None if need_expert or not need_medium or sampled_target is not None else medium_target,
        stochastic_eval_steps=args.sampled_eval_steps if sampled_target is not None else 0,
        stop_stochastic_return=stop_sampled if sampled_target is not None and not need_expert else None,
    )
    trainer = SACBehaviourTrainer(cfg, workdir)
    exported = {kind for kind, _ in args.export_actor}
    needs_training = bool(set(todo) - {"random"}) or bool(exported - {"random"})
    t0 = time.time()
    if needs_training:
        evals = trainer.train(progress=not args.no_progress)
        if trainer.stopped_by is not None:
            command = ["python", "-m", "torchrl_dtql.data.make_dataset", *(sys.argv[1:] if argv is None else argv)]
            print(f"\nStopped ({trainer.stopped_by}) at SAC step {trainer.stopped_at_step}; checkpoint written to "
                  f"{trainer.checkpoint_path}. Continue with the same command:\n  {shlex.join(command)}",
                  file=sys.stderr)
            sys.exit(128 + signal.Signals[trainer.stopped_by].value)
    elif "random" in todo or "random" in exported:
        evals = trainer.train(progress=False, until_step=0)  # only the step-0 (random) actor
    else:
        evals = trainer.load_evals()
    if not evals:
        _log("nothing to do")
        return summary
    train_time = evals[-1].wall_time_s
    _log(f"SAC: {evals[-1].step} env steps, {train_time / 60:.1f} min of training "
         f"({time.time() - t0:.0f} s in this call); best eval return "
         f"{max(e.return_mean for e in evals):.1f}")
    if medium_target is None:
        medium_target = args.medium_fraction * max(e.return_mean for e in evals)
    sel = select_policies(evals, medium_target)
    if sampled_target is not None and need_medium:
        sel["medium"], candidates = select_sampled_medium(
            trainer, evals, sampled_target, candidates=args.selection_candidates, steps=args.selection_steps,
            seed=args.seed + 30_000)
        sel["medium_target"] = sampled_target
        summary["medium_candidates"] = candidates
    if need_medium and sel["medium"] is None:
        raise SystemExit(
            f"No snapshot reached the medium target {sel['medium_target']:.1f} within {cfg.total_steps} SAC "
            f"steps (best {sel['expert'].return_mean:.1f}); raise --sac-steps or lower --medium-return."
        )
    summary["sac"] = {"steps": evals[-1].step, "train_time_s": train_time,
                      "evals": [(e.step, round(e.return_mean, 1)) for e in evals],
                      "medium_target": sel["medium_target"],
                      "medium_step": sel["medium"].step if sel["medium"] else None,
                      "expert_step": sel["expert"].step}

    # Reference scores: D4RL's for known families, else measured here.
    if refs is None:
        rand_bufs, rand_stats = record_episodes(args.env, None, 10_000, args.seed + 7, progress=False)
        refs = (rand_stats.return_mean, sel["expert"].return_mean)
        _log(f"no D4RL reference for {args.env}: using random {refs[0]:.1f} / expert {refs[1]:.1f}")
    summary["ref_scores"] = list(refs)

    def norm(r: float) -> float:
        return 100.0 * (r - refs[0]) / (refs[1] - refs[0])

    for kind, path in args.export_actor:
        if kind not in ("random", "medium", "expert") or sel.get(kind) is None:
            raise SystemExit(f"--export-actor: no {kind} policy")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(workdir / sel[kind].snapshot, path)
        _log(f"exported the {kind} actor (step {sel[kind].step}) to {path}")

    if args.ship_recipes:
        ship_recipes(Path(args.ship_recipes), workdir, evals, sel["medium"], env_id=args.env, refs=refs,
                     seed=args.seed, dataset_steps=args.dataset_steps, init_random_steps=args.init_random_steps,
                     max_snapshots=args.replay_snapshots, summary=summary)

    # 2. Record and write.
    recorded: dict = {}

    def rollouts(kind: str):
        if kind not in recorded:
            rec = sel[kind]
            actor, _ = load_behaviour_actor(workdir / rec.snapshot)
            seed = args.seed + 1000 * (1 + ("random", "medium", "expert").index(kind))
            recorded[kind] = record_episodes(args.env, actor_sampler(actor), args.dataset_steps, seed,
                                             progress=not args.no_progress, desc=f"record {kind}")
        return recorded[kind]

    for kind in todo:
        t_kind = time.time()
        if kind in ("random", "medium", "expert"):
            bufs, stats = rollouts(kind)
            policy = {"snapshot_step": sel[kind].step, "eval_return_deterministic": sel[kind].return_mean}
        elif kind == "medium-replay":
            bufs = replay_to_episode_buffers(trainer.replay_data(), upto_step=sel["medium"].step)
            stats = RecordStats.from_buffers(bufs, 0.0)
            policy = {"replay_upto_step": sel["medium"].step}
        else:  # medium-expert
            (mb, _), (eb, _) = rollouts("medium"), rollouts("expert")
            bufs = [dataclasses.replace(b, id=i) for i, b in enumerate(mb + eb)]
            stats = RecordStats.from_buffers(bufs, 0.0)
            policy = {"medium_step": sel["medium"].step, "expert_step": sel["expert"].step}
        meta = {
            "kind": kind, "env_id": args.env, "seed": args.seed, "behaviour": policy,
            "num_transitions": stats.num_transitions, "num_episodes": stats.num_episodes,
            "return_mean": stats.return_mean, "return_std": stats.return_std,
            "normalized_score": norm(stats.return_mean), "ref_scores": list(refs),
            "made_by": "python -m torchrl_dtql.data.make_dataset " + " ".join(summary["argv"]),
        }
        path = write_minari_dataset(
            ids[kind], bufs, env_id=args.env, ref_min_score=refs[0], ref_max_score=refs[1],
            algorithm_name=f"SAC (torchrl) {kind}", root=args.root, extra_metadata=meta,
            description=f"D4RL-style {kind} dataset of {args.env} made by torchrl_dtql.data.make_dataset.",
        )
        meta["seconds"] = time.time() - t_kind
        meta["path"] = str(path)
        summary["datasets"][ids[kind]] = meta
        _log(f"{ids[kind]}: {stats.num_episodes} episodes, {stats.num_transitions} transitions, return "
             f"{stats.return_mean:.1f} +- {stats.return_std:.1f} (normalized {norm(stats.return_mean):.1f}), "
             f"{meta['seconds']:.0f} s")
    atomic_write_json(summary, workdir / "summary.json")
    return summary


if __name__ == "__main__":  # pragma: no cover
    main()
