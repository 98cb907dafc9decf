"""The 2D trust-region study of DTQL: DTQL vs KL distillation (DQL-KL) vs diffusion BC on 2D bandits.

The DTQL paper's clearest argument is a picture (``dtql_spec.md`` section 7): on 2D bandit data, the diffusion
trust-region loss makes the one-step policy seek one high-reward mode *inside* the data, while KL distillation of
the diffusion model spreads probability mass outside it. This script redraws that picture with the package's real
pieces (``torchrl_dtql.toy.train``): ``dtql`` is :class:`~torchrl_dtql.DTQLLoss` trained by
:func:`~torchrl_dtql.dtql_update_step`, ``kl`` is :class:`~torchrl_dtql.objectives.kl_distill.KLDistillLoss`,
and ``bc`` is the :class:`~torchrl_dtql.EDMDiffusionActor` sampled iteratively.

As in the reference toy, DTQL trains its behaviour diffusion model from scratch along with the policy; the ``bc``
row is a diffusion model trained alone, once per dataset (it does not depend on the reward), and DQL-KL starts its
behaviour model, generator and fake-score model from it, as the D4RL ``agents/dql_kl.py`` does (see
``torchrl_dtql/toy/train.py`` for why). The state is a constant 0, every step uses the whole dataset, and every network uses
Adam with lr 3e-3.

Run it::

    python examples/toy_2d.py                                      # the whole grid (3 methods x 5 columns)
    python examples/toy_2d.py method=dtql dataset=25gaussians reward=far steps=800 output_dir=runs/far

Outputs (``output_dir``, each written atomically and refreshed after every cell): ``toy_2d.png`` (rows = methods,
columns = dataset x reward; the data coloured by reward, the policy's samples in red), ``metrics.json`` (per cell:
fraction of samples within 1.0 of the best mode, within 1.0 of a data point, mean reward, modes covered, CPU
seconds; plus the config), ``samples.npz`` (the plotted samples and data) and ``table.md``.
"""
from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

try:
    import torchrl_dtql  # noqa: F401
except ImportError:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hydra
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from torchrl_dtql.io import atomic_write, atomic_write_text  # noqa: E402
from torchrl_dtql.toy import make_toy_dataset, toy_dataset_names, toy_policy_metrics, toy_reward_names  # noqa: E402
from torchrl_dtql.toy.train import (  # noqa: E402
    make_toy_problem,
    pretrain_toy_diffusion,
    sample_toy_diffusion,
    sample_toy_policy,
    TOY_METHODS,
    ToyProblem,
    ToyTrainConfig,
    train_toy_dtql,
    train_toy_kl,
)

log = logging.getLogger(__name__)

FIGURE_NAME = "toy_2d.png"
METRICS_NAME = "metrics.json"
SAMPLES_NAME = "samples.npz"
TABLE_NAME = "table.md"
METHOD_LABELS = {"dtql": "DTQL (trust region)", "kl": "DQL-KL (score distillation)", "bc": "diffusion BC"}


# ----------------------------------------------------------------------------------------------- what to run
def selected_methods(cfg: DictConfig) -> list[str]:
    """The rows: ``method`` as a name, a comma-separated string or a list; ``null`` means all three."""
    if cfg.method is None:
        return list(TOY_METHODS)
    methods = cfg.method.split(",") if isinstance(cfg.method, str) else list(cfg.method)
    methods = [m.strip() for m in methods]
    unknown = [m for m in methods if m not in TOY_METHODS]
    if unknown:
        raise ValueError(f"Unknown method(s) {unknown}: choose from {list(TOY_METHODS)}.")
    return methods


def selected_columns(cfg: DictConfig) -> list[tuple[str, str]]:
    """The columns ``(dataset, reward)``: the ``grid`` filtered by ``dataset`` and ``reward`` when they are set.

    A ``dataset`` and ``reward`` both given always make one column, even if the grid does not list it.
    """
    grid = {name: list(rewards) for name, rewards in cfg.grid.items()}
    for name in ([cfg.dataset] if cfg.dataset else []) + list(grid):
        if name not in toy_dataset_names():
            raise ValueError(f"Unknown dataset {name!r}; registered: {toy_dataset_names()}.")
    for name in ([cfg.reward] if cfg.reward else []) + [r for rewards in grid.values() for r in rewards]:
        if name not in toy_reward_names():
            raise ValueError(f"Unknown reward {name!r}; registered: {toy_reward_names()}.")
    if cfg.dataset and cfg.reward:
        return [(cfg.dataset, cfg.reward)]
    if cfg.dataset:
        return [(cfg.dataset, reward) for reward in grid.get(cfg.dataset, toy_reward_names())]
    columns = [(dataset, reward) for dataset, rewards in grid.items() for reward in rewards]
    if cfg.reward:
        columns = [(dataset, reward) for dataset, reward in columns if reward == cfg.reward]
        if not columns:
            columns = [(dataset, cfg.reward) for dataset in grid]
    return columns


def column_config(cfg: DictConfig, base: ToyTrainConfig, dataset: str, reward: str) -> ToyTrainConfig:
    """``base`` with the column's ``column_overrides`` applied (unknown keys stop the run)."""
    per_dataset = cfg.column_overrides.get(dataset)
    per_column = per_dataset.get(reward) if per_dataset is not None else None
    overrides = OmegaConf.to_container(per_column, resolve=True) if per_column is not None else {}
    unknown = set(overrides) - {field.name for field in dataclasses.fields(ToyTrainConfig)}
    if unknown:
        raise ValueError(f"column_overrides.{dataset}.{reward} has unknown keys {sorted(unknown)}.")
    return dataclasses.replace(base, **overrides)


def cell_key(method: str, dataset: str, reward: str) -> str:
    """The name of a cell in ``metrics.json`` (``method/dataset/reward``)."""
    return f"{method}/{dataset}/{reward}"


def samples_key(*parts: str) -> str:
    """The name of an array in ``samples.npz`` (``method__dataset__reward`` or ``data__dataset``)."""
    return "__".join(parts)


# ----------------------------------------------------------------------------------------------- outputs
def write_json(path: Path, payload: dict[str, Any]) -> None:
    atomic_write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n", path)


def write_samples(path: Path, arrays: dict[str, np.ndarray]) -> None:
    atomic_write(path, lambda file: np.savez_compressed(file, **arrays))


def markdown_table(cells: dict[str, dict[str, Any]], methods: list[str], columns: list[tuple[str, str]]) -> str:
    """Rows = methods, columns = dataset/reward; each entry ``best-mode % / support % (mean reward)``."""
    header = "| method | " + " | ".join(f"{d} `{r}`" for d, r in columns) + " |"
    lines = [header, "|---" * (len(columns) + 1) + "|"]
    for method in methods:
        entries = []
        for dataset, reward in columns:
            m = cells.get(cell_key(method, dataset, reward))
            entries.append(
                "–"
                if m is None
                else f"{100 * m['fraction_best_mode']:.0f}% / {100 * m['fraction_in_support']:.0f}% "
                f"({m['mean_reward']:.1f})"
            )
        lines.append(f"| {method} | " + " | ".join(entries) + " |")
    return "\n".join(lines) + "\n"


def plot_grid(
    path: Path,
    problems: dict[tuple[str, str], ToyProblem],
    samples: dict[str, np.ndarray],
    cells: dict[str, dict[str, Any]],
    methods: list[str],
    columns: list[tuple[str, str]],
) -> None:
    """Rows = methods, columns = (dataset, reward): the data coloured by reward, the samples in red on top."""
    fig, axes = plt.subplots(
        len(methods), len(columns), figsize=(3.2 * len(columns), 3.1 * len(methods)), squeeze=False
    )
    for col, (dataset, reward) in enumerate(columns):
        problem = problems.get((dataset, reward))
        if problem is None:
            continue
        data = problem.data.actions.numpy()
        colours = problem.batch["next", "reward"].squeeze(-1).numpy()
        bound = problem.data.action_bound
        column_samples = [samples[k] for k in (samples_key(m, dataset, reward) for m in methods) if k in samples]
        extent = max([bound * 1.15] + [float(np.quantile(np.abs(s), 0.99)) * 1.05 for s in column_samples])
        extent = min(extent, 2.5 * bound)
        for row, method in enumerate(methods):
            ax = axes[row, col]
            ax.scatter(data[:, 0], data[:, 1], c=colours, s=2, cmap="viridis", linewidths=0, rasterized=True)
            key = samples_key(method, dataset, reward)
            if key in samples:
                points = samples[key]
                ax.scatter(points[:, 0], points[:, 1], c="red", s=3, alpha=0.35, linewidths=0, rasterized=True)
                m = cells[cell_key(method, dataset, reward)]
                ax.text(
                    0.02,
                    0.02,
                    f"best {100 * m['fraction_best_mode']:.0f}%  support {100 * m['fraction_in_support']:.0f}%",
                    transform=ax.transAxes,
                    fontsize=8,
                    bbox={"facecolor": "white", "alpha": 0.8, "linewidth": 0},
                )
            ax.set_xlim(-extent, extent)
            ax.set_ylim(-extent, extent)
            ax.set_aspect("equal")
            ax.tick_params(labelsize=7)
            if row == 0:
                ax.set_title(f"{dataset} · {reward}", fontsize=10)
            if col == 0:
                ax.set_ylabel(METHOD_LABELS.get(method, method), fontsize=10)
    fig.tight_layout()
    atomic_write(path, lambda file: fig.savefig(file, format="png", dpi=80))
    plt.close(fig)


# ----------------------------------------------------------------------------------------------- one cell
def run_cell(
    method: str, problem: ToyProblem, bc_model: torch.nn.Module | None, config: ToyTrainConfig, num_samples: int
) -> torch.Tensor:
    """Returns ``num_samples`` actions at state 0 of: the trained ``bc_model`` sampled iteratively (``bc``), DTQL
    trained with its behaviour model from scratch (``dtql``), or DQL-KL started from ``bc_model`` (``kl``)."""
    if method == "bc":
        return sample_toy_diffusion(bc_model, num_samples)
    if method == "dtql":
        return sample_toy_policy(train_toy_dtql(problem, config), num_samples)
    return sample_toy_policy(train_toy_kl(problem, config, diffusion=bc_model), num_samples)


@hydra.main(config_path="config", config_name="toy_2d", version_base="1.3")
def main(cfg: DictConfig) -> None:
    # Set up
    torch.set_num_threads(cfg.num_threads)
    output_dir = Path(hydra.utils.to_absolute_path(cfg.output_dir))
    output_dir.mkdir(parents=True, exist_ok=True)
    methods = selected_methods(cfg)
    columns = selected_columns(cfg)
    base_config = ToyTrainConfig(steps=cfg.steps, **OmegaConf.to_container(cfg.train))
    run_start_cpu, run_start_wall = time.process_time(), time.perf_counter()
    log.info("methods %s, columns %s, output %s", methods, columns, output_dir)

    cells: dict[str, dict[str, Any]] = {}
    samples: dict[str, np.ndarray] = {}
    problems: dict[tuple[str, str], ToyProblem] = {}
    datasets_info: dict[str, dict[str, Any]] = {}

    def write_outputs() -> None:
        payload = {
            "cells": cells,
            "datasets": datasets_info,
            "methods": methods,
            "columns": [list(column) for column in columns],
            "cpu_minutes": (time.process_time() - run_start_cpu) / 60,
            "wall_minutes": (time.perf_counter() - run_start_wall) / 60,
            "num_threads": cfg.num_threads,
            "torch_version": torch.__version__,
            "config": OmegaConf.to_container(cfg, resolve=True),
            "files": {"figure": FIGURE_NAME, "samples": SAMPLES_NAME, "table": TABLE_NAME},
        }
        write_samples(output_dir / SAMPLES_NAME, samples)
        plot_grid(output_dir / FIGURE_NAME, problems, samples, cells, methods, columns)
        atomic_write_text(markdown_table(cells, methods, columns), output_dir / TABLE_NAME)
        write_json(output_dir / METRICS_NAME, payload)

    for dataset in dict.fromkeys(d for d, _ in columns):
        # Data, and the diffusion BC model (trained once: it does not depend on the reward); kl starts from it
        data = make_toy_dataset(dataset, cfg.num_points, generator=torch.Generator().manual_seed(cfg.seed))
        samples[samples_key("data", dataset)] = data.actions.numpy()
        datasets_info[dataset] = {"num_points": cfg.num_points, "action_bound": data.action_bound}
        bc_model = None
        if "bc" in methods or "kl" in methods:
            torch.manual_seed(cfg.seed)
            start_cpu = time.process_time()
            bc_model = pretrain_toy_diffusion(make_toy_problem(data, "same"), base_config)
            datasets_info[dataset].update(
                bc_steps=base_config.bc_steps, bc_train_cpu_seconds=time.process_time() - start_cpu
            )
            log.info("%s: bc model trained in %.0f CPU s", dataset, datasets_info[dataset]["bc_train_cpu_seconds"])

        for reward in [r for d, r in columns if d == dataset]:
            problem = make_toy_problem(data, reward)
            problems[(dataset, reward)] = problem
            config = column_config(cfg, base_config, dataset, reward)
            for method in methods:
                # Train and sample one cell
                torch.manual_seed(cfg.seed)
                start_cpu, start_wall = time.process_time(), time.perf_counter()
                actions = run_cell(method, problem, bc_model, config, cfg.num_samples)
                metrics = toy_policy_metrics(actions, data, problem.reward)
                metrics.update(
                    steps=config.bc_steps if method == "bc" else config.steps,
                    alpha=None if method == "bc" else config.alpha,
                    actor_init_log_std=config.actor_init_log_std if method == "dtql" else None,
                    cpu_seconds=time.process_time() - start_cpu,
                    wall_seconds=time.perf_counter() - start_wall,
                )
                key = cell_key(method, dataset, reward)
                cells[key] = metrics
                samples[samples_key(method, dataset, reward)] = actions.numpy()
                log.info(
                    "%s: best mode %.3f, support %.3f, mean reward %.2f, modes %s (%.0f CPU s)",
                    key,
                    metrics["fraction_best_mode"],
                    metrics["fraction_in_support"],
                    metrics["mean_reward"],
                    metrics["modes_covered"],
                    metrics["cpu_seconds"],
                )
                write_outputs()

    log.info("done in %.1f CPU minutes\n%s", (time.process_time() - run_start_cpu) / 60, markdown_table(cells, methods, columns))


if __name__ == "__main__":
    main()
