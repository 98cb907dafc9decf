"""GPU check: one timed, offline protocol that says how fast DTQL is on a machine and what it scores there.

Run through ``benchmarks/gpu_check.sh`` (which sets the environment and a hard time limit); in one process, within
``--budget-s`` seconds, with no network:

1. **dataset**: regenerates the embedded default dataset (``embedded/hopper/medium-v0``: a shipped SAC actor rolled out
   in Hopper-v5) into a fresh folder, timed, and loads it into a replay buffer on the device;
2. **update**: update steps/s of :func:`torchrl_dtql.make_dtql_update_fn` at batch 256 and 2048, ``eager``,
   ``compiled`` (``compile=True``) and ``cudagraphs`` (``compile=True, cudagraphs=True`` with fused, capturable
   Adam), each on its own fresh networks and on batches sampled from the dataset;
3. **acting**: the latency of one action call in each acting mode (mean, Q-reranked, diffusion BC) at batch 1 and at
   the evaluation's batch of envs;
4. **training**: DTQL (hopper-medium-v2's preset) with the fastest update variant for the rest of the budget (a fifth
   of the steps pretraining), then an evaluation: steps done, steps/s and the normalized score.

A variant that cannot run here (CUDA graphs without CUDA, compilation in a CPU smoke run, a phase the remaining
budget cannot hold) is listed under ``skipped`` with its reason. The JSON (format in ``docs/benchmarks.md``, "GPU
check") is printed and written to ``--out`` after every phase, so a run killed by the time limit keeps what it did.

Examples::

    bash benchmarks/gpu_check.sh                  # on a CUDA machine: at most 8 minutes
    bash benchmarks/gpu_check.sh --smoke          # CPU or GPU, tiny sizes, under a minute (what CI runs)
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

try:
    import torchrl_dtql  # noqa: F401
except ImportError:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torch.optim.lr_scheduler import CosineAnnealingLR
from torchrl.objectives import SoftUpdate

from _common import best_time, Machine, REPO_ROOT, synchronize
from quality_methods import load_dtql_preset
from torchrl_dtql import DTQLLoss, make_dtql_modules, make_dtql_optimizers, make_dtql_update_fn
from torchrl_dtql.data import DEFAULT_DATASET, make_offline_replay_buffer
from torchrl_dtql.data.embedded import embedded_recipe, regenerate_embedded
from torchrl_dtql.evaluation import evaluate_policies, make_eval_env, normalized_returns
from torchrl_dtql.io import atomic_write_text
from torchrl_dtql.policies import make_acting_policies

RESULT_FORMAT = "torchrl_dtql.gpu_check/1"
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "gpu_check.json"
EVAL_SEED = 100  # the evaluation's env seed, as a seed-0 run of examples/dtql_offline.py
TRAIN_BATCH = 256  # the training phase's batch (hopper-medium-v2's)


class Sizes(argparse.Namespace):
    """The sizes of one check: the full protocol or the smoke run."""


FULL = dict(budget_s=450.0, dataset_steps=None, hidden_dim=None, batch_sizes=(256, 2048), timed_calls=50,
            warmup_calls=5, num_candidates=1024, eval_episodes=10, eval_max_steps=1000, eval_envs=10,
            eval_reserve_s=90.0, min_train_s=120.0, acting_calls=20)  # fmt: skip
SMOKE = dict(budget_s=40.0, dataset_steps=2000, hidden_dim=32, batch_sizes=(256, 2048), timed_calls=5,
             warmup_calls=2, num_candidates=16, eval_episodes=2, eval_max_steps=50, eval_envs=2,
             eval_reserve_s=8.0, min_train_s=10.0, acting_calls=3)  # fmt: skip


class Deadline:
    """Seconds left of a budget that started at construction.

    Examples:
        >>> Deadline(60.0).left() > 59.0
        True
    """

    def __init__(self, budget_s: float) -> None:
        self.start = time.perf_counter()
        self.budget_s = budget_s

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        return self.budget_s - self.elapsed()


class Report:
    """The check's JSON, written (atomically) and printed as it grows."""

    def __init__(self, path: Path, data: dict[str, Any]) -> None:
        self.path = path
        self.data = data

    def skip(self, what: str, reason: str) -> None:
        self.data["skipped"].append({"what": what, "reason": reason})
        print(f"[gpu_check] skipped {what}: {reason}", flush=True)

    def write(self, deadline: Deadline) -> None:
        self.data["total_seconds"] = deadline.elapsed()
        atomic_write_text(json.dumps(self.data, indent=2) + "\n", self.path)


# =====================================================================================================================
# 1. The dataset
# =====================================================================================================================


def regenerate_dataset(root: Path, num_steps: int | None) -> dict[str, Any]:
    """Regenerates the embedded default dataset into ``root`` (no network, no cache); returns what it made."""
    recipe = embedded_recipe(DEFAULT_DATASET)
    start = time.perf_counter()
    folder = regenerate_embedded(recipe, root, num_steps=num_steps, progress=False)
    return {"id": DEFAULT_DATASET, "env_id": recipe.env_id, "folder": str(folder), "requested_steps": num_steps
            or recipe.num_steps, "seconds": time.perf_counter() - start}  # fmt: skip


def dataset_summary(replay_buffer) -> dict[str, Any]:
    """Transitions, episodes and the behaviour policy's normalized score of a loaded dataset."""
    info = replay_buffer.metadata
    raw = float(np.mean(info.episode_returns)) if info.episode_returns is not None else None
    score = normalized_returns(info, np.asarray([raw])) if raw is not None else None
    return {"num_transitions": info.num_transitions, "num_episodes": info.num_episodes, "behaviour_return": raw,
            "behaviour_normalized_score": None if score is None else float(score[0])}  # fmt: skip


# =====================================================================================================================
# 2. Update steps/s
# =====================================================================================================================

VARIANTS = ("eager", "compiled", "cudagraphs")


def variant_skip_reason(variant: str, device: torch.device, smoke: bool, compile_in_smoke: bool) -> str | None:
    """Why ``variant`` does not run here (``None``: it runs).

    Examples:
        >>> variant_skip_reason("cudagraphs", torch.device("cpu"), smoke=False, compile_in_smoke=False)
        'CUDA graphs need a CUDA device; this run is on cpu'
    """
    if variant == "cudagraphs" and device.type != "cuda":
        return f"CUDA graphs need a CUDA device; this run is on {device.type}"
    if variant != "eager" and smoke and device.type != "cuda" and not compile_in_smoke:
        return "--smoke on CPU: torch.compile takes longer than the smoke budget here (pass --compile to include it)"
    return None


def make_dtql(info, hidden_dim: int | None, device: torch.device, preset, *, alpha: float | None = None) -> DTQLLoss:
    """A DTQL loss on the dataset's specs with the preset's coefficients (reference network sizes unless
    ``hidden_dim``)."""
    modules = make_dtql_modules(info.observation_spec, info.action_spec, hidden_dim=hidden_dim, device=device)
    loss = DTQLLoss(**modules, alpha=preset.alpha if alpha is None else alpha, expectile=preset.expectile,
                    gamma_nll=preset.gamma_nll, check_finite=False)  # fmt: skip
    loss.make_value_estimator(gamma=0.99)
    return loss.to(device)


def make_update(loss: DTQLLoss, variant: str, lr: float, device: torch.device):
    """``(update, optimizers, target_updater)`` of one variant: eager, compiled, or compiled in CUDA graphs."""
    graphs = variant == "cudagraphs"
    optimizers = make_dtql_optimizers(loss, lr=lr, fused=True, capturable=graphs)
    target_updater = SoftUpdate(loss, tau=0.005)
    update = make_dtql_update_fn(loss, optimizers, target_updater=target_updater, compile=variant != "eager",
                                 cudagraphs=graphs)  # fmt: skip
    return update, optimizers, target_updater


def measure_update(replay_buffer, info, variant: str, batch_size: int, sizes: Sizes, device: torch.device,
                   preset) -> dict[str, Any]:  # fmt: skip
    """Steps/s of one variant at one batch size (main-phase steps; warm-up calls compile and capture first)."""
    torch.manual_seed(0)
    loss = make_dtql(info, sizes.hidden_dim, device, preset)
    update, _, _ = make_update(loss, variant, preset.lr, device)
    batches = [replay_buffer.sample(batch_size) for _ in range(4)]
    state = {"i": 0}

    def step() -> TensorDictBase:
        state["i"] = (state["i"] + 1) % len(batches)
        return update(batches[state["i"]], pretrain=False)

    start = time.perf_counter()
    for _ in range(sizes.warmup_calls):
        step()
    synchronize(device)
    warmup_s = time.perf_counter() - start
    seconds = best_time(step, calls=sizes.timed_calls, device=device)
    return {"variant": variant, "batch_size": batch_size, "ms_per_step": 1e3 * seconds, "steps_per_s": 1 / seconds,
            "warmup_s": warmup_s, "timed_calls": sizes.timed_calls}  # fmt: skip


# =====================================================================================================================
# 3. Action latency
# =====================================================================================================================


def measure_acting(info, sizes: Sizes, device: torch.device, preset, compile: bool) -> list[dict[str, Any]]:
    """ms per action call of each acting mode (fresh networks: latency does not depend on the weights)."""
    torch.manual_seed(0)
    loss = make_dtql(info, sizes.hidden_dim, device, preset)
    rows = []
    for compiled in (False, True) if compile else (False,):
        policies = make_acting_policies(loss, ["mean", "reranked", "diffusion_bc"],
                                        num_candidates=sizes.num_candidates, compile=compiled)  # fmt: skip
        for batch in (1, sizes.eval_envs):
            observation = torch.randn(batch, info.observation_size, device=device)
            for mode, policy in policies.items():
                if compiled and mode != "reranked":  # compile=True compiles the reranking only
                    continue
                td = TensorDict(observation=observation, batch_size=[batch])
                with torch.no_grad():
                    for _ in range(2):  # warm-up (compilation)
                        policy(td.clone())
                    seconds = best_time(lambda: policy(td.clone()), calls=sizes.acting_calls, device=device)
                rows.append({"mode": mode, "compiled": compiled, "batch_size": batch, "ms": 1e3 * seconds,
                             "num_candidates": sizes.num_candidates if mode == "reranked" else None})  # fmt: skip
    return rows


# =====================================================================================================================
# 4. Training for the rest of the budget
# =====================================================================================================================


def fastest_variant(rows: list[dict[str, Any]], batch_size: int) -> str:
    """The variant with the most steps/s at ``batch_size`` (eager when nothing else was measured)."""
    at_batch = [row for row in rows if row["batch_size"] == batch_size]
    return max(at_batch, key=lambda row: row["steps_per_s"])["variant"] if at_batch else "eager"


def train_and_evaluate(replay_buffer, info, variant: str, rate: float, seconds: float, sizes: Sizes,
                       device: torch.device, preset) -> dict[str, Any]:  # fmt: skip
    """DTQL for about ``seconds`` (planned from the measured ``rate``, stopped at the time if slower), then one
    evaluation in the reranked and mean modes."""
    planned = max(10, int(rate * seconds * 0.9))
    pretrain_steps = planned // 5
    main_steps = planned - pretrain_steps
    torch.manual_seed(0)
    loss = make_dtql(info, sizes.hidden_dim, device, preset)
    update, optimizers, _ = make_update(loss, variant, preset.lr, device)
    schedulers = ([CosineAnnealingLR(o, T_max=main_steps) for o in optimizers.network_optimizers()]
                  if preset.lr_decay else [])  # fmt: skip
    replay_buffer.set_rng(torch.Generator(device=replay_buffer.storage.device).manual_seed(0))
    stop_at = time.perf_counter() + seconds
    start, done = time.perf_counter(), 0
    for step in range(planned):
        update(replay_buffer.sample(), pretrain=step < pretrain_steps)
        if step >= pretrain_steps:
            for scheduler in schedulers:
                scheduler.step()
        done = step + 1
        if done % 100 == 0 and time.perf_counter() > stop_at:
            break
    synchronize(device)
    train_s = time.perf_counter() - start
    policies = make_acting_policies(loss, ["reranked", "mean"], num_candidates=sizes.num_candidates)
    env = make_eval_env(info, num_envs=max(1, min(sizes.eval_envs, sizes.eval_episodes)))
    start = time.perf_counter()
    results = evaluate_policies(env, policies, episodes=sizes.eval_episodes, max_steps=sizes.eval_max_steps,
                                seed=EVAL_SEED, info=info, device=device)  # fmt: skip
    env.close()
    return {
        "variant": variant,
        "preset": preset.task,
        "batch_size": TRAIN_BATCH,
        "planned_steps": planned,
        "pretrain_steps": min(done, pretrain_steps),
        "main_steps": max(0, done - pretrain_steps),
        "steps_done": done,
        "train_seconds": train_s,
        "steps_per_s": done / train_s if train_s > 0 else None,
        "eval_seconds": time.perf_counter() - start,
        "eval_episodes": sizes.eval_episodes,
        "eval_max_steps": sizes.eval_max_steps,
        "scores": {mode: {"normalized_score": r["normalized_score"], "return": r["return"],
                          "episode_length": r["episode_length"]} for mode, r in results.items()},  # fmt: skip
    }


# =====================================================================================================================
# The protocol
# =====================================================================================================================


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes and steps, under a minute on a CPU")
    parser.add_argument("--budget-s", type=float, default=None, help="seconds for the whole check (450; smoke 40)")
    parser.add_argument("--device", default=None, help="default: cuda when present, else cpu")
    parser.add_argument("--compile", action="store_true", help="with --smoke on CPU: measure the compiled variant")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice; 1 for --smoke on CPU, where two threads on a "
                             "busy machine can be 30x slower than one)")
    parser.add_argument("--out", type=Path, default=None,
                        help=f"the JSON (default {DEFAULT_OUT.relative_to(REPO_ROOT)}; smoke: gpu_check_smoke.json)")
    args = parser.parse_args(argv)
    sizes = Sizes(**(SMOKE if args.smoke else FULL))
    if args.budget_s is not None:
        sizes.budget_s = args.budget_s
    args.sizes = sizes
    args.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device} but CUDA is not available here; leave --device unset.")
    if args.threads is None and args.smoke and args.device.type == "cpu":
        args.threads = 1
    args.out = args.out or (DEFAULT_OUT.with_name("gpu_check_smoke.json") if args.smoke else DEFAULT_OUT)
    return args


def header(args: argparse.Namespace) -> dict[str, Any]:
    machine = Machine.describe(args.device, {})
    return {
        "format": RESULT_FORMAT,
        "smoke": args.smoke,
        "budget_s": args.sizes.budget_s,
        "device": str(args.device),
        "machine": {**machine.__dict__, "platform": platform.platform()},
        "versions": {name: str(__import__(name).__version__) for name in ("torch", "torchrl", "tensordict",
                                                                          "torchrl_dtql")},  # fmt: skip
        "sizes": {key: value for key, value in vars(args.sizes).items()},
        "dataset": None,
        "update": [],
        "acting": [],
        "training": None,
        "skipped": [],
        "phase_seconds": {},
        "total_seconds": 0.0,
    }


def run_phase(report: Report, deadline: Deadline, name: str, fn: Callable[[], Any]) -> Any:
    """Runs one phase, records its seconds, writes the JSON."""
    start = time.perf_counter()
    print(f"[gpu_check] {name} ({deadline.left():.0f} s of the budget left)", flush=True)
    result = fn()
    report.data["phase_seconds"][name] = time.perf_counter() - start
    report.write(deadline)
    return result


def update_phase(report: Report, deadline: Deadline, args: argparse.Namespace, replay_buffer, preset) -> None:
    sizes, info = args.sizes, replay_buffer.metadata
    for batch_size in sizes.batch_sizes:
        for variant in VARIANTS:
            reason = variant_skip_reason(variant, args.device, args.smoke, args.compile)
            if reason is None and deadline.left() < sizes.eval_reserve_s + sizes.min_train_s:
                reason = f"out of budget ({deadline.left():.0f} s left, kept for training and its evaluation)"
            if reason is not None:
                report.skip(f"update {variant} batch {batch_size}", reason)
                continue
            row = measure_update(replay_buffer, info, variant, batch_size, sizes, args.device, preset)
            report.data["update"].append(row)
            print(f"[gpu_check]   {variant:>10} batch {batch_size:>5}: {row['steps_per_s']:8.1f} steps/s "
                  f"(warm-up {row['warmup_s']:.1f} s)", flush=True)  # fmt: skip


def acting_phase(report: Report, deadline: Deadline, args: argparse.Namespace, replay_buffer, preset) -> None:
    """Action latency, with the compiled reranking where compilation fits (not in a CPU smoke run)."""
    sizes = args.sizes
    reason = None
    if args.smoke and args.device.type != "cuda" and not args.compile:
        reason = "--smoke on CPU: torch.compile takes longer than the smoke budget"
    elif deadline.left() < sizes.eval_reserve_s + sizes.min_train_s + 60:
        reason = f"out of budget ({deadline.left():.0f} s left, kept for training and its evaluation)"
    if reason is not None:
        report.skip("acting reranked (compiled)", reason)
    report.data["acting"] = measure_acting(replay_buffer.metadata, sizes, args.device, preset, reason is None)


def training_phase(report: Report, deadline: Deadline, args: argparse.Namespace, replay_buffer, preset) -> None:
    """DTQL with the fastest variant measured at the training batch, for the budget left but the evaluation's."""
    variant = fastest_variant(report.data["update"], TRAIN_BATCH)
    rate = next(row["steps_per_s"] for row in report.data["update"]
                if row["variant"] == variant and row["batch_size"] == TRAIN_BATCH)  # fmt: skip
    seconds = max(1.0, deadline.left() - args.sizes.eval_reserve_s)
    report.data["training"] = train_and_evaluate(replay_buffer, replay_buffer.metadata, variant, rate, seconds,
                                                 args.sizes, args.device, preset)  # fmt: skip


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=".*No target network updater.*")
    deadline = Deadline(args.sizes.budget_s)
    report = Report(args.out, header(args))
    preset = load_dtql_preset(DEFAULT_DATASET)
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as root:
        made = run_phase(report, deadline, "dataset", lambda: regenerate_dataset(Path(root), args.sizes.dataset_steps))
        replay_buffer = make_offline_replay_buffer(made["folder"], TRAIN_BATCH, device=args.device)
        report.data["dataset"] = {**made, **dataset_summary(replay_buffer)}
        report.write(deadline)
        for name, phase in (("update", update_phase), ("acting", acting_phase), ("training", training_phase)):
            run_phase(report, deadline, name, lambda: phase(report, deadline, args, replay_buffer, preset))
    report.write(deadline)
    print(json.dumps(report.data, indent=2))
    print(f"[gpu_check] wrote {args.out} in {deadline.elapsed():.0f} s", flush=True)
    return report.data


if __name__ == "__main__":
    main()
