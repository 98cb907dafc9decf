"""The self-tuning trust-region weight (``alpha="auto"``) against fixed alphas: a bandit study and a training plot.

``bandit``: the 8-mode ring bandit (``toy`` dataset ``ring``, reward ``angle``: best mode at angle 0, the neighbours
0.5 x the reward scale lower) at several reward scales, one DTQL per (setting, scale, seed), scored by the share of
1000 policy samples within 0.25 of the best mode. One JSON per cell under ``--out`` (a rerun skips finished cells),
then a Markdown table (mean and min over seeds).

``toy``: the 2D study's grid (``examples/toy_2d.py``: 25 Gaussians ``far``/``hard``/``near``, swiss roll
``far``/``near``) with each column's own trust-region setting (``examples/config/toy_2d.yaml``: alpha 1, ``hard``
ramping it from 1 to 5) against ``alpha="auto"`` as it comes, over seeds: the share of 1000 policy samples at the
best mode and in the data's support, and their mean reward. One JSON per cell, then a Markdown table.

``plot``: alpha, the policy's trust-region loss and its target over a run of ``examples/dtql_offline.py`` with
``loss.alpha=auto``, read from the run's ``dtql_offline.log``.

Usage::

    python studies/self_tuning_alpha.py bandit --alphas 1 8 auto --scales 0.125 1 8 --seeds 0 1 2
    python studies/self_tuning_alpha.py toy --seeds 0 1 2          # about 80 s per cell on one free core
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
from omegaconf import OmegaConf

from torchrl_dtql.io import atomic_write, atomic_write_json
from torchrl_dtql.toy.datasets import make_toy_dataset, RING_CENTRES_8
from torchrl_dtql.toy.metrics import toy_policy_metrics
from torchrl_dtql.toy.train import make_toy_problem, sample_toy_policy, ToyTrainConfig, train_toy_dtql

RESULTS = Path(__file__).resolve().parent / "results" / "self_tuning_alpha"
TOY_2D_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "config" / "toy_2d.yaml"
#: ``toy``'s settings: each column's own (the 2D study's figure) and ``alpha="auto"`` with its defaults.
TOY_SETTINGS = ("column", "auto")
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


def toy_grid_config(dataset: str, reward: str) -> tuple[ToyTrainConfig, int, int]:
    """The 2D study's ``ToyTrainConfig`` for one column (``train`` + ``steps`` + its ``column_overrides``), its
    dataset size and its number of policy samples, read from ``examples/config/toy_2d.yaml``."""
    cfg = OmegaConf.load(TOY_2D_CONFIG)
    overrides = (OmegaConf.to_container(cfg.column_overrides, resolve=True).get(dataset) or {}).get(reward) or {}
    config = ToyTrainConfig(steps=cfg.steps, **OmegaConf.to_container(cfg.train, resolve=True))
    return dataclasses.replace(config, **overrides), cfg.num_points, cfg.num_samples


def toy_columns() -> list[tuple[str, str]]:
    """The 2D study's figure columns, ``(dataset, reward)``, in its order."""
    grid = OmegaConf.to_container(OmegaConf.load(TOY_2D_CONFIG).grid)
    return [(dataset, reward) for dataset, rewards in grid.items() for reward in rewards]


def toy_cell(setting: str, dataset: str, reward: str, seed: int) -> dict:
    """DTQL on one 2D column with the column's own alpha (``"column"``) or ``alpha="auto"``; its sample metrics.

    Examples:
        >>> cell = toy_cell("auto", "25gaussians", "near", 0)  # doctest: +SKIP
        >>> cell["fraction_best_mode"], cell["final_alpha"]  # doctest: +SKIP
        (1.0, 0.56...)
    """
    config, num_points, num_samples = toy_grid_config(dataset, reward)
    if setting == "auto":
        config = dataclasses.replace(config, alpha="auto", alpha_end=None)
    data = make_toy_dataset(dataset, num_points, generator=torch.Generator().manual_seed(seed))
    problem = make_toy_problem(data, reward)
    torch.manual_seed(seed)
    start = time.process_time()
    loss = train_toy_dtql(problem, config)
    metrics = toy_policy_metrics(sample_toy_policy(loss, num_samples).detach(), data, problem.reward)
    return {"setting": setting, "dataset": dataset, "reward": reward, "seed": seed, **metrics,
            "alpha": config.alpha, "alpha_end": config.alpha_end, "final_alpha": float(loss.alpha),
            "steps": config.steps, "cpu_seconds": time.process_time() - start}


def run_toy(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for dataset, reward in toy_columns():
            for setting in args.settings:
                path = out / f"toy_{setting}_{dataset}_{reward}_seed{seed}.json"
                if path.exists():
                    continue
                cell = toy_cell(setting, dataset, reward, seed)
                atomic_write_json(cell, path)
                print(f"{setting} {dataset}/{reward} seed {seed}: best mode {cell['fraction_best_mode']:.2f}, "
                      f"support {cell['fraction_in_support']:.2f}, reward {cell['mean_reward']:.1f} "
                      f"(final alpha {cell['final_alpha']:.3g}, {cell['cpu_seconds']:.0f} CPU s)", flush=True)
    write_toy_table(out)


def write_toy_table(out: Path) -> str:
    """``toy_table.md`` from the ``toy_*.json`` cells in ``out``: per column and setting, the mean over seeds of the
    share at the best mode / in the support and the mean reward (with the per-seed best-mode shares)."""
    cells = [json.loads(p.read_text()) for p in sorted(out.glob("toy_*.json"))]
    columns = [c for c in toy_columns() if any((x["dataset"], x["reward"]) == c for x in cells)]
    lines = ["| alpha | " + " | ".join(f"{d} `{r}`" for d, r in columns) + " |", "|---|" + "---|" * len(columns)]
    for setting in TOY_SETTINGS:
        row = []
        for dataset, reward in columns:
            key = (setting, dataset, reward)
            group = [c for c in cells if (c["setting"], c["dataset"], c["reward"]) == key]
            group.sort(key=lambda c: c["seed"])
            if not group:
                row.append("-")
                continue
            best, support, reward_mean = (statistics.mean(c[k] for c in group)
                                          for k in ("fraction_best_mode", "fraction_in_support", "mean_reward"))
            per_seed = " / ".join(f"{c['fraction_best_mode']:.0%}" for c in group)
            extra = f", alpha {statistics.mean(c['final_alpha'] for c in group):.2g}" if setting == "auto" else ""
            row.append(f"{best:.0%} / {support:.0%} ({reward_mean:.1f}; best mode per seed {per_seed}{extra})")
        label = "each column's own (1; `hard`: 1 to 5)" if setting == "column" else '`"auto"` (q_scale)'
        lines.append(f"| {label} | " + " | ".join(row) + " |")
    table = "\n".join(lines) + "\n"
    atomic_write(out / "toy_table.md", lambda f: f.write(table.encode()))
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
    toy = sub.add_parser("toy", help="the 2D study's grid: each column's alpha against alpha='auto'")
    toy.add_argument("--settings", nargs="+", default=list(TOY_SETTINGS), choices=TOY_SETTINGS)
    toy.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    toy.add_argument("--threads", type=int, default=1)
    toy.add_argument("--out", default=str(RESULTS))
    plot = sub.add_parser("plot", help="alpha and the trust-region loss of one run")
    plot.add_argument("log")
    plot.add_argument("--out", required=True)
    plot.add_argument("--title", default="DTQL, loss.alpha=auto")
    args = parser.parse_args()
    if args.command == "plot":
        plot_log(args)
        return
    torch.set_num_threads(args.threads)
    {"bandit": run_bandit, "toy": run_toy}[args.command](args)


if __name__ == "__main__":
    main()
