"""Gathers the ``summary.json`` files of many ``dtql_offline.py`` runs into the paper's results table.

Each row is one group of runs (by default one task: same ``task_name`` and dataset) and reports, over its seeds, the
mean +/- standard error of the normalized score at the end of training (``final``, what the paper reports) and of the
best evaluation (``best``), for the primary acting mode (Q-reranked) and optionally others. Written as Markdown and
CSV::

    python examples/aggregate_sweeps.py multirun/2026-11-21_10-00-00
    python examples/aggregate_sweeps.py runs/ --modes reranked mean --group-by task_name loss.alpha \\
        --markdown results.md --csv results.csv

Without ``--markdown``/``--csv`` the files go to ``<first folder>/results.md`` and ``results.csv``; the Markdown is
also printed. ``--plot curves.png`` adds the learning curves (mean +/- s.e. over seeds per acting mode, one panel per
group, the behaviour policy's score dashed).
"""
from __future__ import annotations

import argparse
import csv
import io
import json
import math
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["find_summaries", "group_runs", "aggregate", "learning_curves", "plot_groups", "to_markdown", "to_csv", "main"]

DEFAULT_GROUP_BY = ("task_name", "dataset")


def find_summaries(folders: Sequence[str | Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Every ``summary.json`` below the given folders (or the files themselves), parsed.

    Raises:
        FileNotFoundError: a folder does not exist, or no summary was found at all.
    """
    paths: list[Path] = []
    for folder in map(Path, folders):
        if not folder.exists():
            raise FileNotFoundError(f"{str(folder)!r} does not exist.")
        paths += [folder] if folder.is_file() else sorted(folder.rglob("summary.json"))
    if not paths:
        raise FileNotFoundError(f"No summary.json found under {[str(f) for f in folders]}: have the runs finished?")
    summaries = []
    for path in paths:
        try:
            summaries.append((path, json.loads(path.read_text())))
        except json.JSONDecodeError as err:
            warnings.warn(f"Skipping {path}: not valid JSON ({err}).", stacklevel=2)
    return summaries


def _lookup(summary: Mapping[str, Any], key: str) -> Any:
    """A top-level summary key, or a dotted config key (``loss.alpha``)."""
    if key in summary:
        return summary[key]
    node: Any = summary.get("config", {})
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(f"{key!r} is neither a summary.json key nor a config key of the runs.")
        node = node[part]
    return node


def group_runs(
    summaries: Sequence[tuple[Path, Mapping[str, Any]]], group_by: Sequence[str] = DEFAULT_GROUP_BY
) -> dict[tuple, list[tuple[Path, Mapping[str, Any]]]]:
    """Runs grouped by the values of ``group_by``; a repeated seed in a group keeps the newest file (with a warning)."""
    groups: dict[tuple, dict[Any, tuple[Path, Mapping[str, Any]]]] = {}
    for path, summary in summaries:
        key = tuple(_lookup(summary, name) for name in group_by)
        runs = groups.setdefault(key, {})
        seed = summary.get("seed")
        if seed in runs:
            older, newer = sorted([runs[seed], (path, summary)], key=lambda run: run[0].stat().st_mtime)
            warnings.warn(f"Seed {seed} of {key} appears twice; keeping {newer[0]}, ignoring {older[0]}.", stacklevel=2)
            runs[seed] = newer
        else:
            runs[seed] = (path, summary)
    return {key: [runs[seed] for seed in sorted(runs, key=str)] for key, runs in sorted(groups.items(), key=str)}


def _mean_stderr(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    variance = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return mean, math.sqrt(variance / len(values))


def _mode_scores(summary: Mapping[str, Any], mode: str) -> tuple[float | None, float | None]:
    if mode == "primary":
        return summary.get("final_normalized_score"), summary.get("best_normalized_score")
    row = summary.get("scores", {}).get(mode)
    if row is None:
        return None, None
    return row.get("final_normalized_score"), row.get("best_normalized_score")


def aggregate(
    groups: Mapping[tuple, Sequence[tuple[Path, Mapping[str, Any]]]],
    group_by: Sequence[str] = DEFAULT_GROUP_BY,
    modes: Sequence[str] = ("primary",),
) -> list[dict[str, Any]]:
    """One row per group: seeds, and mean / standard error over seeds of the final and best scores per mode.

    The standard error is ``std(ddof=1) / sqrt(n)``, ``None`` with a single seed.
    """
    rows = []
    for key, runs in groups.items():
        summaries = [summary for _, summary in runs]
        row: dict[str, Any] = dict(zip(group_by, key))
        row["seeds"] = [summary.get("seed") for summary in summaries]
        row["num_seeds"] = len(summaries)
        for mode in modes:
            finals, bests = zip(*(_mode_scores(summary, mode) for summary in summaries))
            row[f"{mode}_final_mean"], row[f"{mode}_final_stderr"] = _mean_stderr(finals)
            row[f"{mode}_best_mean"], row[f"{mode}_best_stderr"] = _mean_stderr(bests)
        row["behaviour_mean"], _ = _mean_stderr([summary.get("behaviour_normalized_score") for summary in summaries])
        row["pretrain_steps"] = sorted({summary.get("pretrain_steps") for summary in summaries}, key=str)
        row["gradient_steps"] = sorted({summary.get("gradient_steps") for summary in summaries}, key=str)
        rows.append(row)
    return rows


def _average_row(rows: Sequence[Mapping[str, Any]], group_by: Sequence[str], modes: Sequence[str]) -> dict[str, Any]:
    """The mean over groups of the per-group means (the paper's per-domain average); no standard error."""
    average: dict[str, Any] = {name: "" for name in group_by}
    average[group_by[0]] = "average"
    average["seeds"], average["num_seeds"] = [], sum(row["num_seeds"] for row in rows)
    for column in [f"{mode}_{kind}_mean" for mode in modes for kind in ("final", "best")] + ["behaviour_mean"]:
        average[column], _ = _mean_stderr([row[column] for row in rows])
    for mode in modes:
        average[f"{mode}_final_stderr"] = average[f"{mode}_best_stderr"] = None
    average["pretrain_steps"] = average["gradient_steps"] = []
    return average


def _cell(mean: float | None, stderr: float | None) -> str:
    if mean is None:
        return "n/a"
    return f"{mean:.1f}" if stderr is None else f"{mean:.1f} ± {stderr:.1f}"


def to_markdown(rows: Sequence[Mapping[str, Any]], group_by: Sequence[str], modes: Sequence[str]) -> str:
    """The table in Markdown: ``final`` and ``best`` as ``mean ± s.e.`` per mode, plus seeds, steps, behaviour."""
    header = [*group_by, "seeds"]
    for mode in modes:
        label = "" if mode == "primary" else f" ({mode})"
        header += [f"final{label}", f"best{label}"]
    header += ["behaviour", "steps (pretrain + main)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        cells = [str(row[name]) for name in group_by] + [str(row["num_seeds"])]
        for mode in modes:
            cells += [
                _cell(row[f"{mode}_final_mean"], row[f"{mode}_final_stderr"]),
                _cell(row[f"{mode}_best_mean"], row[f"{mode}_best_stderr"]),
            ]
        steps = " / ".join(f"{p} + {g}" for p in row["pretrain_steps"] for g in row["gradient_steps"])
        cells += [_cell(row["behaviour_mean"], None), steps]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def learning_curves(
    runs: Sequence[tuple[Path, Mapping[str, Any]]], mode: str
) -> tuple[list[int], list[float], list[float | None]] | None:
    """Mean and standard error over seeds of ``mode``'s normalized score at every step all runs evaluated."""
    curves = []
    for _, summary in runs:
        name = summary.get("primary_mode") if mode == "primary" else mode
        points = {
            record["step"]: record["modes"][name]["normalized_score"]["mean"]
            for record in summary.get("evaluations", [])
            if name in record.get("modes", {}) and record["modes"][name]["normalized_score"]["mean"] is not None
        }
        curves.append(points)
    steps = sorted(set.intersection(*(set(points) for points in curves))) if curves else []
    if not steps:
        return None
    stats = [_mean_stderr([points[step] for points in curves]) for step in steps]
    return steps, [mean for mean, _ in stats], [stderr for _, stderr in stats]


def plot_groups(
    groups: Mapping[tuple, Sequence[tuple[Path, Mapping[str, Any]]]],
    modes: Sequence[str],
    path: Path,
    group_by: Sequence[str] = DEFAULT_GROUP_BY,
) -> Path:
    """One panel per group: each mode's normalized score against main-phase steps (mean +/- s.e. over seeds), with the
    behaviour policy's score as a dashed line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 3.8), squeeze=False)
    for axis, (key, runs) in zip(axes[0], groups.items()):
        for mode in modes:
            curve = learning_curves(runs, mode)
            if curve is None:
                continue
            steps, means, stderrs = curve
            errors = [0.0 if e is None else e for e in stderrs]
            axis.errorbar(steps, means, yerr=errors, marker="o", capsize=3, label=mode)
        behaviour, _ = _mean_stderr([summary.get("behaviour_normalized_score") for _, summary in runs])
        if behaviour is not None:
            axis.axhline(behaviour, color="gray", linestyle="--", label=f"behaviour policy ({behaviour:.1f})")
        label = ", ".join(f"{name}={value}" for name, value in zip(group_by, key))
        axis.set_title(f"{label} ({len(runs)} seeds)", fontsize=9)
        axis.set_xlabel("main-phase gradient steps")
        axis.set_ylabel("normalized score")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    """The table as CSV, one column per statistic (lists joined with ``;``, missing values empty)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                key: ";".join(map(str, value)) if isinstance(value, list) else ("" if value is None else value)
                for key, value in row.items()
            }
        )
    return buffer.getvalue()


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", help="sweep folders (searched recursively) or summary.json files")
    parser.add_argument(
        "--group-by",
        nargs="+",
        default=list(DEFAULT_GROUP_BY),
        help="summary keys or dotted config keys that define a row (default: task_name dataset)",
    )
    parser.add_argument(
        "--modes",
        nargs="+",
        default=["primary"],
        help="acting modes to report: primary (the run's first eval mode), reranked, mean, diffusion_bc",
    )
    parser.add_argument("--no-average", action="store_true", help="leave out the average row")
    parser.add_argument("--markdown", type=Path, default=None, help="Markdown output (default <folder>/results.md)")
    parser.add_argument("--csv", type=Path, default=None, help="CSV output (default <folder>/results.csv)")
    parser.add_argument("--plot", type=Path, default=None, help="also write learning curves per group to this PNG")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        summaries = find_summaries(args.folders)
        groups = group_runs(summaries, args.group_by)
    except (FileNotFoundError, KeyError) as err:
        print(f"aggregate_sweeps.py: error: {err.args[0] if err.args else err}", file=sys.stderr)
        return 1
    rows = aggregate(groups, args.group_by, args.modes)
    table_rows = list(rows)
    if len(rows) > 1 and not args.no_average:
        table_rows.append(_average_row(rows, args.group_by, args.modes))
    markdown = to_markdown(table_rows, args.group_by, args.modes)
    first = Path(args.folders[0])
    out_dir = first if first.is_dir() else first.parent
    markdown_path = args.markdown or out_dir / "results.md"
    csv_path = args.csv or out_dir / "results.csv"
    markdown_path.write_text(markdown)
    csv_path.write_text(to_csv(rows))
    print(markdown, end="")
    print(f"{len(summaries)} runs in {len(rows)} groups -> {markdown_path}, {csv_path}")
    if args.plot is not None:
        print(f"learning curves -> {plot_groups(groups, args.modes, args.plot, args.group_by)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
