"""The self-tuning trust-region weight (``alpha="auto"``) against fixed alphas: a bandit study and a training plot.

``bandit``: the 8-mode ring bandit (``toy`` dataset ``ring``, reward ``angle``: best mode at angle 0, the neighbours
0.5 x the reward scale lower) at several reward scales, one DTQL per (setting, scale, seed), scored by the share of
1000 policy samples within 0.25 of the best mode. One JSON per cell under ``--out`` (a rerun skips finished cells),
then a Markdown table (mean and min over seeds).

``plot``: alpha, the policy's trust-region loss and its target over a run of ``examples/dtql_offline.py`` with
``loss.alpha=auto``, read from the run's ``dtql_offline.log``.

Usage::

    python studies/self_tuning_alpha.py bandit --alphas 1 8 auto --scales 0.125 1 8 --seeds 0 1 2
    python studies/self_tuning_alpha.py plot outputs/default/seed0/<run>/dtql_offline.log --out docs/images/x.png
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import time
from pathlib import Path

import torch

from torchrl_dtql.io import atomic_write, atomic_write_json
from torchrl_dtql.toy.datasets import make_toy_dataset, RING_CENTRES_8
from torchrl_dtql.toy.train import make_toy_problem, sample_toy_policy, ToyTrainConfig, train_toy_dtql

RESULTS = Path(__file__).resolve().parent / "results" / "self_tuning_alpha"
#: The learning test's settings (test/test_self_tuning_alpha.py): 512 points, 600 steps, small networks.
BANDIT_CONFIG = ToyTrainConfig(steps=600, critic_pretrain_steps=200, discount=0.0, actor_hidden_dim=32,
                               critic_hidden_dim=32, denoiser_hidden_dim=64, actor_init_log_std=-2.0)


def bandit_cell(alpha: float | str, reward_scale: float, seed: int) -> dict:
    """One DTQL run on the ring bandit; returns its share of samples at the best mode and the final alpha.

    Examples:
        >>> cell = bandit_cell("auto", 1.0, 0)  # doctest: +SKIP
        >>> cell["best_mode_share"] >= 0.85  # doctest: +SKIP
        True
    """
    torch.manual_seed(seed)
    data = make_toy_dataset("ring", 512, generator=torch.Generator().manual_seed(seed))
    problem = make_toy_problem(data, "angle", reward_scale=reward_scale)
    start = time.time()
    loss = train_toy_dtql(problem, dataclasses.replace(BANDIT_CONFIG, alpha=alpha))
    samples = sample_toy_policy(loss, 1000).detach()
    share = float(((samples - RING_CENTRES_8[0]).norm(dim=-1) < 0.25).float().mean())
    modes = torch.cdist(samples, RING_CENTRES_8).argmin(-1)
    return {"alpha": alpha, "reward_scale": reward_scale, "seed": seed, "best_mode_share": share,
            "mode_counts": torch.bincount(modes, minlength=8).tolist(), "final_alpha": float(loss.alpha),
            "seconds": time.time() - start}


def run_bandit(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    alphas = [a if a == "auto" else float(a) for a in args.alphas]
    for alpha in alphas:
        for scale in args.scales:
            for seed in args.seeds:
                path = out / f"bandit_alpha{alpha}_scale{scale}_seed{seed}.json"
                if path.exists():
                    continue
                cell = bandit_cell(alpha, scale, seed)
                atomic_write_json(cell, path)
                print(f"alpha={alpha} scale={scale} seed={seed}: {cell['best_mode_share']:.2f} at the best mode "
                      f"(final alpha {cell['final_alpha']:.3g}, {cell['seconds']:.0f} s)", flush=True)
    write_bandit_table(out)


def write_bandit_table(out: Path) -> str:
    """``bandit_table.md`` from every cell's JSON in ``out``: share at the best mode, mean (min) over seeds."""
    cells = [json.loads(p.read_text()) for p in sorted(out.glob("bandit_*.json"))]
    scales = sorted({c["reward_scale"] for c in cells})
    settings = sorted({str(c["alpha"]) for c in cells}, key=lambda a: (a == "auto", float(a) if a != "auto" else 0))
    lines = ["| alpha | " + " | ".join(f"reward scale {s:g}" for s in scales) + " |",
             "|---|" + "---|" * len(scales)]
    for setting in settings:
        row = []
        for scale in scales:
            shares = [c["best_mode_share"] for c in cells if str(c["alpha"]) == setting and c["reward_scale"] == scale]
            alphas = [c["final_alpha"] for c in cells if str(c["alpha"]) == setting and c["reward_scale"] == scale]
            extra = f", final alpha {statistics.mean(alphas):.3g}" if setting == "auto" and alphas else ""
            row.append(f"{statistics.mean(shares):.2f} (min {min(shares):.2f}, {len(shares)} seeds{extra})"
                       if shares else "-")
        lines.append(f"| {setting} | " + " | ".join(row) + " |")
    table = "\n".join(lines) + "\n"
    atomic_write(out / "bandit_table.md", lambda f: f.write(table.encode()))
    print(table)
    return table


_METRIC = re.compile(r"step (\d+): .*?train/trust_region=([-\d.e+]+).*?train/alpha=([-\d.e+]+), "
                     r"train/trust_region_target=([-\d.e+]+)")


def plot_log(args: argparse.Namespace) -> None:
    """alpha (log scale) and the trust-region loss against its target over the main phase of one run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [tuple(float(x) for x in m.groups()) for m in _METRIC.finditer(Path(args.log).read_text())]
    if not rows:
        raise SystemExit(f"{args.log}: no train/alpha lines (was the run made with loss.alpha=auto?)")
    step, trust_region, alpha, target = zip(*rows)
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(7, 5.5), sharex=True)
    top.plot(step, alpha, color="C0")
    top.set_yscale("log")
    top.set_ylabel("alpha (learnt)")
    top.set_title(args.title)
    bottom.plot(step, trust_region, color="C1", label="trust-region loss of the policy's actions")
    bottom.plot(step, target, color="C2", linestyle="--", label="target: ratio x BC loss of the data's actions")
    bottom.set_xlabel("gradient step (pretraining included)")
    bottom.set_ylabel("denoising loss")
    bottom.legend()
    for axis in (top, bottom):
        axis.grid(alpha=0.3)
    figure.tight_layout()
    atomic_write(Path(args.out), lambda f: figure.savefig(f, format="png", dpi=120))
    print(f"wrote {args.out}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    bandit = sub.add_parser("bandit", help="the ring-bandit study")
    bandit.add_argument("--alphas", nargs="+", default=["1", "8", "auto"])
    bandit.add_argument("--scales", nargs="+", type=float, default=[0.125, 1.0, 8.0])
    bandit.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    bandit.add_argument("--threads", type=int, default=1)
    bandit.add_argument("--out", default=str(RESULTS))
    plot = sub.add_parser("plot", help="alpha and the trust-region loss of one run")
    plot.add_argument("log")
    plot.add_argument("--out", required=True)
    plot.add_argument("--title", default="DTQL, loss.alpha=auto")
    args = parser.parse_args()
    if args.command == "bandit":
        torch.set_num_threads(args.threads)
        run_bandit(args)
    else:
        plot_log(args)


if __name__ == "__main__":
    main()
