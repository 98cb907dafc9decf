"""The quality benchmark's report: one Markdown table over every finished run, one PNG of learning curves per dataset.

Reads the run JSONs that ``quality.py`` writes under ``<out>/runs/`` and writes ``<out>/table.md`` and
``<out>/curves_<dataset>.png`` (and ``<out>/trust_region_<dataset>.png``: DTQL's alpha and trust-region loss over
training, from the runs' training logs). Each row is a method evaluated in one acting mode; its diffusion BC row is
the ``dtql`` runs' own diffusion model, sampled (``diffusion_bc`` mode). Per seed the final score is the last
evaluation's mean normalized score and the best is the highest over the run's evaluations; the table gives their
mean +/- one standard error over the seeds (n-1 in the variance; no error with one seed).

Run alone (``python benchmarks/quality.py --table`` does the same)::

    python benchmarks/quality_report.py benchmarks/results/quality
"""
from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from quality_methods import dataset_slug
from torchrl_dtql.io import atomic_write, atomic_write_text

#: The README's copy of the summary lies between these lines (``python benchmarks/quality.py --table`` rewrites it).
README_START, README_END = "<!-- quality-table:start -->", "<!-- quality-table:end -->"

#: (method, acting mode) -> the row's label, in table order.
ROWS: dict[tuple[str, str], str] = {
    ("dtql", "reranked"): "DTQL, Q-reranked (preset alpha)",
    ("dtql", "mean"): "DTQL, mean action (preset alpha)",
    ("dtql-auto", "reranked"): "DTQL, Q-reranked (alpha auto, multiplier)",
    ("dtql-auto", "mean"): "DTQL, mean action (alpha auto, multiplier)",
    ("dtql-qscale", "reranked"): "DTQL, Q-reranked (alpha auto, q_scale: the default)",
    ("dtql-qscale", "mean"): "DTQL, mean action (alpha auto, q_scale: the default)",
    ("iql", "mean"): "IQL (TorchRL IQLLoss)",
    ("td3bc", "mean"): "TD3+BC (TorchRL TD3BCLoss)",
    ("dtql", "diffusion_bc"): "diffusion BC (DTQL run's EDM model, sampled)",
}


# =====================================================================================================================
# Reading and summarising runs
# =====================================================================================================================


def load_runs(out: Path) -> list[dict[str, Any]]:
    """Every run JSON under ``<out>/runs/`` (finished or not), sorted by dataset, method and seed."""
    runs = [json.loads(path.read_text()) for path in sorted((Path(out) / "runs").rglob("*.json"))]
    return sorted(runs, key=lambda run: (run["dataset"], run["method"], run["seed"]))


def mean_and_stderr(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and standard error (``std(ddof=1) / sqrt(n)``; ``None`` for fewer than two values).

    Examples:
        >>> mean_and_stderr([1.0, 3.0]), mean_and_stderr([2.0]), mean_and_stderr([])
        ((2.0, 1.0), (2.0, None), (None, None))
    """
    if not values:
        return None, None
    array = np.asarray(values, dtype=np.float64)
    stderr = float(array.std(ddof=1) / math.sqrt(len(array))) if len(array) > 1 else None
    return float(array.mean()), stderr


def format_mean(mean: float | None, stderr: float | None) -> str:
    """``12.3 +/- 0.4`` (``n/a`` when there is no mean).

    Examples:
        >>> format_mean(12.34, 0.456), format_mean(7.0, None), format_mean(None, None)
        ('12.3 +/- 0.5', '7.0', 'n/a')
    """
    if mean is None:
        return "n/a"
    return f"{mean:.1f}" if stderr is None else f"{mean:.1f} +/- {stderr:.1f}"


def run_scores(run: Mapping[str, Any], mode: str) -> tuple[float, float] | None:
    """``(final, best)`` mean normalized score of one run in one mode (``None`` if never evaluated or unscored)."""
    scores = run.get("scores", {}).get(mode)
    if not scores or scores["final_normalized_score"] is None:
        return None
    return scores["final_normalized_score"], scores["best_normalized_score"]


def group_rows(runs: Iterable[Mapping[str, Any]]) -> dict[tuple[str, str, str], list[Mapping[str, Any]]]:
    """``{(dataset, method, mode): [finished runs]}`` for the rows of :data:`ROWS` (plus any unknown mode)."""
    groups: dict[tuple[str, str, str], list] = {}
    for run in runs:
        if run.get("status") != "complete":
            continue
        for mode in run["modes"]:
            groups.setdefault((run["dataset"], run["method"], mode), []).append(run)
    return groups


def row_label(method: str, mode: str) -> str:
    return ROWS.get((method, mode), f"{method}, {mode}")


def row_order(key: tuple[str, str, str]) -> tuple:
    dataset, method, mode = key
    rows = list(ROWS)
    return (dataset, rows.index((method, mode)) if (method, mode) in rows else len(rows), method, mode)


def summarise(key: tuple[str, str, str], runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """One table row: final and best over seeds, steps/s and wall time (means over the seeds)."""
    dataset, method, mode = key
    scores = [score for score in (run_scores(run, mode) for run in runs) if score is not None]
    rates = [run["steps_per_second"] for run in runs if run.get("steps_per_second")]
    walls = [run["wall_time_s"] for run in runs if run.get("wall_time_s")]
    return {
        "dataset": dataset,
        "method": method,
        "mode": mode,
        "label": row_label(method, mode),
        "seeds": sorted(run["seed"] for run in runs),
        "final": mean_and_stderr([final for final, _ in scores]),
        "best": mean_and_stderr([best for _, best in scores]),
        "steps_per_second": float(np.mean(rates)) if rates else None,
        "wall_time_s": float(np.mean(walls)) if walls else None,
    }


def summary_rows(runs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Every row of the report (:func:`summarise` of each finished group), in table order."""
    groups = group_rows(runs)
    return [summarise(key, groups[key]) for key in sorted(groups, key=row_order)]


def behaviour_scores(runs: Iterable[Mapping[str, Any]]) -> dict[str, float | None]:
    """``{dataset: behaviour normalized score}`` as the runs' JSONs recorded it."""
    return {run["dataset"]: run["dataset_info"]["behaviour"]["normalized_score"] for run in runs}


# =====================================================================================================================
# The Markdown table
# =====================================================================================================================


def budget_line(runs: Sequence[Mapping[str, Any]]) -> str:
    """The budget and evaluation protocol of the runs (they share one, or the line lists each)."""
    budgets = sorted({json.dumps({k: run["config"][k] for k in ("pretrain_steps", "steps", "batch_size",
                                  "eval_every", "eval_episodes", "eval_max_steps", "num_candidates")}, sort_keys=True)
                      for run in runs})  # fmt: skip
    lines = []
    for text in budgets:
        b = json.loads(text)
        lines.append(
            f"{b['pretrain_steps']:,} + {b['steps']:,} gradient steps per run at batch {b['batch_size']} (DTQL's first "
            f"{b['pretrain_steps']:,} train only its critic and diffusion model); {b['eval_episodes']} evaluation "
            f"episodes of at most {b['eval_max_steps']} steps every {b['eval_every']:,} main-phase steps and at the "
            f"end, env seeds seed + 100 for every method; DTQL reranks {b['num_candidates']} candidates"
        )
    return "; ".join(lines) if lines else "no runs yet"


def machine_text(machine: Mapping[str, Any]) -> str:
    """One machine, as the table's header names it."""
    gpu = f" {machine['gpu']}" if machine.get("gpu") else ""
    return (f"{machine['cpu']} ({machine['cpu_count']} cores), {machine['torch_threads']} torch thread(s) per run, "
            f"{machine['device']}{gpu}")


def machine_line(runs: Sequence[Mapping[str, Any]]) -> str:
    machines = sorted({machine_text(run["machine"]) for run in runs})
    return "; ".join(machines) if machines else "n/a"


def summary_lines(runs: Sequence[Mapping[str, Any]], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """How many runs, the budget, the machine, the settings and the final scores by method x dataset: the part of
    the report that the README shows too."""
    datasets = list(dict.fromkeys(run["dataset"] for run in runs))
    behaviour = behaviour_scores(runs)
    finished = sum(run.get("status") == "complete" for run in runs)
    unfinished = f" ({len(runs) - finished} unfinished, left out)" if len(runs) > finished else ""
    lines = [
        f"Written by `benchmarks/quality.py` from {finished} finished run(s){unfinished}. Normalized scores "
        "(D4RL scale: 0 random, 100 expert), mean +/- one standard error over seeds.",
        "",
        f"* Budget: {budget_line(runs)}.",
        f"* Machine: {machine_line(runs)}.",
        "* Settings: DTQL from its task preset (examples/config/task/<family>-<kind>-v2.yaml); IQL and TD3+BC as "
        "TorchRL's offline recipes configure them (benchmarks/quality_methods.py: IQL_RECIPE, TD3BC_RECIPE); "
        "diffusion BC is the DTQL runs' own EDM model, trained by the BC loss for every step of the run, sampled.",
        "",
        "Final normalized score (in brackets: the best evaluation of the run, mean over seeds; n: seeds finished):",
        "",
        "| method | " + " | ".join(datasets) + " |",
        "|---|" + "---|" * len(datasets),
        "| behaviour policy (dataset) | " + " | ".join(format_mean(behaviour.get(d), None) for d in datasets) + " |",
    ]
    labels = sorted({(row["method"], row["mode"]) for row in rows}, key=lambda key: row_order(("", *key)))
    by_key = {(row["dataset"], row["method"], row["mode"]): row for row in rows}
    for method, mode in labels:
        cells = []
        for dataset in datasets:
            row = by_key.get((dataset, method, mode))
            cells.append("-" if row is None else
                         f"{format_mean(*row['final'])} (best {format_mean(*row['best'])}; n={len(row['seeds'])})")
        lines.append(f"| {row_label(method, mode)} | " + " | ".join(cells) + " |")
    return lines


def markdown_table(runs: Sequence[Mapping[str, Any]]) -> str:
    """The report: the budget and machine, final scores by method x dataset, then every row in full."""
    rows = summary_rows(runs)
    behaviour = behaviour_scores(runs)
    lines = ["# Quality benchmark: DTQL against TorchRL's IQL and TD3+BC, and diffusion BC", ""]
    lines += summary_lines(runs, rows)
    lines += [
        "",
        "## Every row",
        "",
        "| dataset | behaviour | method | seeds | final | best | steps/s | wall time (min) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        rate = "n/a" if row["steps_per_second"] is None else f"{row['steps_per_second']:.1f}"
        wall = "n/a" if row["wall_time_s"] is None else f"{row['wall_time_s'] / 60:.1f}"
        seeds = ",".join(str(seed) for seed in row["seeds"])
        cells = [row["dataset"], format_mean(behaviour.get(row["dataset"]), None), row["label"], seeds,
                 format_mean(*row["final"]), format_mean(*row["best"]), rate, wall]
        lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "steps/s: gradient steps per second of training time (evaluations and checkpoints excluded, compilation "
        "included), averaged over seeds; the diffusion BC row repeats its DTQL run's. Wall time: the whole run.",
        "",
    ]
    return "\n".join(lines)


# =====================================================================================================================
# Learning curves
# =====================================================================================================================


def step_curve(points: Iterable[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(steps, mean, stderr)`` over the values given at each step (one per seed that reached it).

    Examples:
        >>> steps, means, errors = step_curve([(10, 1.0), (10, 3.0), (20, 5.0)])
        >>> steps.tolist(), means.tolist(), errors.tolist()
        ([10, 20], [2.0, 5.0], [1.0, 0.0])
    """
    by_step: dict[int, list[float]] = {}
    for step, value in points:
        by_step.setdefault(step, []).append(value)
    steps = np.array(sorted(by_step))
    stats = [mean_and_stderr(by_step[step]) for step in steps]
    means = np.array([mean for mean, _ in stats])
    errors = np.array([0.0 if stderr is None else stderr for _, stderr in stats])
    return steps, means, errors


def curve(runs: Sequence[Mapping[str, Any]], mode: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(steps, mean, stderr)`` of the normalized score over the seeds that reached each evaluation step."""
    scores = ((record["step"], record["modes"].get(mode, {}).get("normalized_score", {}).get("mean"))
              for run in runs for record in run["evaluations"])  # fmt: skip
    return step_curve((step, score) for step, score in scores if score is not None)


def train_log_curve(runs: Sequence[Mapping[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(steps, mean, stderr)`` of one training-log value (``alpha``, ``trust_region``...) over the seeds; a fixed
    alpha, which the log does not repeat, is the run's setting at each logged step."""
    def value(run: Mapping[str, Any], entry: Mapping[str, Any]) -> float | None:
        if key == "alpha" and key not in entry and isinstance(run["settings"].get("alpha"), (int, float)):
            return float(run["settings"]["alpha"])
        return entry.get(key)

    points = ((entry["step"], value(run, entry)) for run in runs for entry in run.get("train_log") or [])
    return step_curve((step, v) for step, v in points if v is not None)


def plot_curves(runs: Sequence[Mapping[str, Any]], dataset: str, path: Path) -> Path:
    """One PNG: the normalized score of every row on ``dataset`` against gradient steps, +/- one s.e. over seeds
    (unfinished runs included up to where they are), and the behaviour policy's score."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    on_dataset = [run for run in runs if run["dataset"] == dataset]
    figure, axis = plt.subplots(figsize=(7.0, 4.2))
    keys = sorted({(run["method"], mode) for run in on_dataset for mode in run["modes"]},
                  key=lambda key: row_order((dataset, *key)))  # fmt: skip
    for method, mode in keys:
        steps, means, errors = curve([run for run in on_dataset if run["method"] == method], mode)
        if len(steps) == 0:
            continue
        axis.plot(steps, means, marker="o", markersize=3, label=row_label(method, mode))
        axis.fill_between(steps, means - errors, means + errors, alpha=0.15)
    behaviour = behaviour_scores(on_dataset).get(dataset)
    if behaviour is not None:
        axis.axhline(behaviour, color="gray", linestyle="--", label="behaviour policy (dataset)")
    if on_dataset:
        axis.axvline(on_dataset[0]["config"]["pretrain_steps"], color="lightgray", linestyle=":",
                     label="end of DTQL pretraining")  # fmt: skip
    axis.set_xlabel("gradient steps")
    axis.set_ylabel("normalized score")
    axis.set_title(f"{dataset}: mean +/- s.e. over seeds")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7)
    figure.tight_layout()
    atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=110))
    plt.close(figure)
    return path


def plot_trust_region(runs: Sequence[Mapping[str, Any]], dataset: str, path: Path) -> Path:
    """One PNG of how each DTQL method's trust region moves over training on ``dataset``, mean +/- s.e. over seeds:
    the weight alpha (a preset's is flat; log scale when the alphas are orders of magnitude apart) and the
    trust-region loss of the policy's actions (dashed: the multiplier's target)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    on_dataset = [run for run in runs if run["dataset"] == dataset and run.get("train_log")]
    figure, axes = plt.subplots(1, 2, figsize=(10.0, 3.8))
    methods = sorted({run["method"] for run in on_dataset}, key=lambda m: row_order((dataset, m, "reranked")))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, method in enumerate(methods):
        label = row_label(method, "reranked").replace("DTQL, Q-reranked ", "DTQL ")
        of_method = [run for run in on_dataset if run["method"] == method]
        color = palette[index % len(palette)]  # one colour per method, on both panels
        for axis, key in zip(axes, ("alpha", "trust_region")):
            steps, means, errors = train_log_curve(of_method, key)
            if len(steps):
                axis.plot(steps, means, color=color, label=label)
                axis.fill_between(steps, means - errors, means + errors, color=color, alpha=0.15)
        steps, targets, _ = train_log_curve(of_method, "trust_region_target")  # the multiplier's constraint
        if len(steps):
            axes[1].plot(steps, targets, linestyle="--", color=color, label=f"{label}: target")
    low, high = axes[0].get_ylim()
    if low > 0 and high / low > 10:  # alphas orders of magnitude apart (a preset's 1 beside q_scale's 50)
        axes[0].set_yscale("log")
    for axis, ylabel in zip(axes, ("alpha (trust-region weight)", "trust-region loss of the policy's actions")):
        axis.set_xlabel("gradient steps")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if any(line.get_linestyle() == "--" for line in axes[1].get_lines()):
        axes[1].legend(fontsize=7)
    figure.suptitle(f"{dataset}: DTQL's trust region over training, mean +/- s.e. over seeds", fontsize=10)
    figure.tight_layout()
    atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=110))
    plt.close(figure)
    return path


def readme_block(runs: Sequence[Mapping[str, Any]]) -> str:
    """The README's copy of the report's summary (:func:`summary_lines`) over the finished runs, between its markers.

    Examples:
        >>> readme_block([]).splitlines()[0] == README_START
        True
    """
    runs = [run for run in runs if run.get("status") == "complete"]  # what is committed, not what is running
    rows = summary_rows(runs)
    return "\n".join([README_START, *summary_lines(runs, rows), README_END])


def replace_readme_block(readme: str, block: str) -> str:
    """``readme`` with its block between :data:`README_START` and :data:`README_END` replaced by ``block``."""
    start, end = readme.find(README_START), readme.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"the README has no {README_START} ... {README_END} block to replace")
    return readme[:start] + block + readme[end + len(README_END):]


def write_report(out: Path, readme: Path | None = None) -> list[Path]:
    """``<out>/table.md``, one ``<out>/curves_<dataset>.png`` per dataset with an evaluation and one
    ``<out>/trust_region_<dataset>.png`` per dataset with a DTQL training log, and the summary block of ``readme`` when
    given; returns the paths written."""
    out = Path(out)
    runs = load_runs(out)
    written = [atomic_write_text(markdown_table(runs), out / "table.md")]
    if readme is not None:
        text = Path(readme).read_text()
        written.append(atomic_write_text(replace_readme_block(text, readme_block(runs)), Path(readme)))
    for dataset in dict.fromkeys(run["dataset"] for run in runs):
        if any(run["evaluations"] for run in runs if run["dataset"] == dataset):
            written.append(plot_curves(runs, dataset, out / f"curves_{dataset_slug(dataset)}.png"))
        if any(run.get("train_log") for run in runs if run["dataset"] == dataset):
            written.append(plot_trust_region(runs, dataset, out / f"trust_region_{dataset_slug(dataset)}.png"))
    return written


if __name__ == "__main__":
    for written_path in write_report(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("benchmarks/results/quality")):
        print(f"wrote {written_path}")
