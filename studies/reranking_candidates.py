"""How does the final score depend on the number of Q-reranking candidates? Evaluates trained runs with N candidates.

The paper's evaluation policy draws ``N = 1024`` actions from the one-step policy per state and picks one with
``softmax(min Q_target / T)``; scoring those candidates is most of the cost of an action. This study reloads the
final checkpoint of finished ``examples/dtql_offline.py`` runs and evaluates the *same* trained networks with
``N`` in ``--candidates`` (``N = 1`` is one plain sample of the stochastic policy, no reranking) and with the
deterministic mean action, on the same evaluation episodes (env seeds ``seed + 100``, as the example). It prints a
Markdown table (mean +/- standard error over runs of each run's mean normalized score), and writes it with a JSON of
every number and a PNG.

Example::

    python studies/reranking_candidates.py /work/runs/hc_quality/seed0 /work/runs/hc_quality/seed1 \\
        --candidates 1 16 64 1024 --episodes 10 --out studies/results/reranking_candidates

Choosing the cheaper setting afterwards is one override: ``policy.num_candidates=64`` (training and evaluation) or
``export.num_candidates=64`` (the exported policy only).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import torch
from omegaconf import OmegaConf
from tqdm import tqdm

from torchrl_dtql.checkpoint import read_checkpoint
from torchrl_dtql.evaluation import evaluate
from torchrl_dtql.policies import make_acting_policy

REPO_ROOT = Path(__file__).resolve().parents[1]
EVAL_SEED_OFFSET = 100  # the example evaluates in envs seeded seed + 100


def load_example_builders() -> ModuleType:
    """``examples/utils.py``, loaded from its file: the example's config-driven builders of the dataset, the
    networks and the evaluation envs, so that the study rebuilds exactly what a run trained and evaluated in."""
    spec = importlib.util.spec_from_file_location("dtql_example_utils", REPO_ROOT / "examples" / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", nargs="+", type=Path, help="output_dir folders of finished dtql_offline.py runs")
    parser.add_argument("--candidates", type=int, nargs="+", default=[1, 16, 64, 1024])
    parser.add_argument("--episodes", type=int, default=10, help="evaluation episodes per run and setting")
    parser.add_argument("--temperature", type=float, default=None, help="softmax temperature; default: the run's")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, required=True, help="output prefix: <out>.json, <out>.md, <out>.png")
    return parser.parse_args(argv)


def evaluate_run(run: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Mean normalized score of one run's final networks for every candidate count and for the mean action."""
    checkpoint = read_checkpoint(run / "checkpoints" / "last.pt")
    cfg = OmegaConf.create(checkpoint["config"])
    device = torch.device("cpu")
    example = load_example_builders()
    info = example.make_replay_buffer(cfg, device).metadata
    loss = example.make_loss(cfg, info, device)
    loss.load_state_dict(checkpoint["loss"])
    env = example.make_eval_env_from_config(cfg, info)
    temperature = cfg.policy.temperature if args.temperature is None else args.temperature
    policies = {
        f"N={n}": make_acting_policy(
            loss, "reranked", num_candidates=n, temperature=temperature, use_target_qvalue=cfg.policy.use_target_qvalue
        )
        for n in args.candidates
    }
    policies["mean action"] = make_acting_policy(loss, "mean")
    results = {}
    for name, policy in tqdm(policies.items(), desc=run.name, leave=False):
        start = time.perf_counter()
        stats = evaluate(
            env, policy, episodes=args.episodes, max_steps=cfg.logger.eval_max_steps, seed=cfg.seed + EVAL_SEED_OFFSET,
            info=info, device=device,
        )  # fmt: skip
        results[name] = {"normalized_score": stats["normalized_score"]["mean"], "seconds": time.perf_counter() - start}
    env.close()
    return {"run": str(run), "seed": cfg.seed, "step": checkpoint["step"], "dataset": cfg.replay_buffer.dataset,
            "temperature": temperature, "results": results}  # fmt: skip


def table(runs: list[dict[str, Any]]) -> tuple[str, dict[str, tuple[float, float]]]:
    """Markdown table: per setting, mean +/- standard error over runs, each run's score, and evaluation seconds."""
    names = list(runs[0]["results"])
    summary = {}
    lines = [
        "| acting | normalized score (mean +/- s.e.) | per seed | eval seconds per run |",
        "|---|---|---|---|",
    ]
    for name in names:
        scores = np.array([run["results"][name]["normalized_score"] for run in runs], dtype=float)
        seconds = np.mean([run["results"][name]["seconds"] for run in runs])
        stderr = float(scores.std(ddof=1) / np.sqrt(len(scores))) if len(scores) > 1 else 0.0
        summary[name] = (float(scores.mean()), float(stderr))
        per_seed = " / ".join(f"{score:.1f}" for score in scores)
        spread = f" +/- {stderr:.1f}" if len(scores) > 1 else ""
        lines.append(f"| {name} | {scores.mean():.1f}{spread} | {per_seed} | {seconds:.0f} |")
    return "\n".join(lines), summary


def plot(summary: dict[str, tuple[float, float]], candidates: list[int], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(5.5, 3.6))
    means = np.array([summary[f"N={n}"][0] for n in candidates])
    errors = np.array([summary[f"N={n}"][1] for n in candidates])
    axis.errorbar(candidates, means, yerr=errors, marker="o", capsize=3, label="Q-reranked, N candidates")
    mean_action, mean_error = summary["mean action"]
    axis.axhline(mean_action, color="tab:orange", linestyle="--", label=f"mean action ({mean_action:.1f})")
    axis.set_xscale("log", base=2)
    axis.set_xticks(candidates, [str(n) for n in candidates])
    axis.set_xlabel("candidates per state (N)")
    axis.set_ylabel("normalized score")
    axis.set_title(title, fontsize=9)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    runs = [evaluate_run(run, args) for run in tqdm(args.runs, desc="runs")]
    markdown, summary = table(runs)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    title = f"{runs[0]['dataset']}: final networks of {len(runs)} runs, {args.episodes} episodes each"
    args.out.with_suffix(".json").write_text(json.dumps({"runs": runs, "summary": summary}, indent=2))
    args.out.with_suffix(".md").write_text(f"{title}\n\n{markdown}\n")
    plot(summary, args.candidates, args.out.with_suffix(".png"), title)
    print(title)
    print(markdown)


if __name__ == "__main__":
    main()
