"""The main job over several seeds: does the README's first command end with DTQL above its data and above BC?

Runs ``examples/dtql_offline.py`` as the README's first command does (its default task), once per seed, each in a
fresh process, and puts DTQL's final scores (Q-reranked and mean action), diffusion BC trained in the same run
(same steps: the run's own diffusion model, sampled) and the dataset's behaviour policy side by side, as mean +/-
standard error over seeds, with the wall time of each run::

    python benchmarks/main_job.py                          # seeds 0 1 2, into benchmarks/results/main_job
    python benchmarks/main_job.py --jobs 2                 # two runs at a time (one torch thread each)
    python benchmarks/main_job.py -- loss.alpha=5          # hydra overrides after "--" (a candidate default)
    python benchmarks/main_job.py --table                  # only rewrite table.md from the JSONs

Resumable: a seed whose JSON exists is skipped when its configuration is the one the example composes now with the
same overrides, and refused otherwise (naming the differences); delete it (or use another ``--out``) to rerun.
Outputs: ``<out>/seed<k>.json`` (the run's summary, machine paths removed) and ``<out>/table.md``. The runs' own
folders (checkpoints, logs, exported policy) go to a temporary directory and are deleted.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import ModuleType
from typing import Any

from quality_report import mean_and_stderr
from torchrl_dtql.io import atomic_write_text

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "main_job"
EXAMPLE = REPO_ROOT / "examples" / "dtql_offline.py"
#: Table rows: the run's acting modes, then the dataset's behaviour policy.
ROW_LABELS = {
    "reranked": "DTQL, Q-reranked",
    "mean": "DTQL, mean action",
    "diffusion_bc": "diffusion BC, same steps",
}


def run_seed(seed: int, overrides: Sequence[str], out: Path) -> dict[str, Any]:
    """Runs the main job for one seed in a fresh process; writes and returns its summary (paths made relative)."""
    with tempfile.TemporaryDirectory(prefix="dtql_main_job_") as tmp:
        output_dir = Path(tmp) / f"seed{seed}"
        command = [sys.executable, str(EXAMPLE), f"seed={seed}", f"output_dir={output_dir}", *overrides]
        log_path = out / f"seed{seed}.log"
        with open(log_path, "w") as log:
            completed = subprocess.run(command, cwd=tmp, stdout=log, stderr=subprocess.STDOUT, check=False)
        if completed.returncode != 0:
            raise SystemExit(f"main_job.py: seed {seed} failed (exit {completed.returncode}); see {log_path}")
        text = (output_dir / "summary.json").read_text()
    text = text.replace(str(output_dir), f"<tmp>/seed{seed}").replace(str(REPO_ROOT) + "/", "")
    summary = json.loads(text.replace(str(Path.home()), "~"))
    summary["benchmark_overrides"] = list(overrides)
    summary["load_average_after"] = list(os.getloadavg())
    atomic_write_text(json.dumps(summary, indent=2) + "\n", out / f"seed{seed}.json")
    log_path.unlink()
    return summary


def table(summaries: Sequence[dict[str, Any]]) -> str:
    """The Markdown table: one row per policy, final normalized score mean +/- s.e. over seeds, and per seed."""
    first = summaries[0]
    seeds = [s["seed"] for s in summaries]
    budget = first["budget"]
    command = " ".join(["python examples/dtql_offline.py", *first["benchmark_overrides"]])
    lines = [
        f"Main job (`{command}`): "
        f"task `{first['task_name']}`, dataset `{first['dataset']}` ({first['env']}), "
        f"{budget['pretrain_steps']:,} pretraining + {budget['gradient_steps']:,} main-phase steps, "
        f"{first['eval_episodes']} evaluation episodes per policy, seeds {', '.join(map(str, seeds))}; "
        f"MuJoCo {first['versions'].get('mujoco')} (it changes the regenerated dataset, docs/data.md).",
        "",
        "| policy | final normalized score (mean +/- s.e. over seeds) | per seed |",
        "|---|---|---|",
    ]
    for mode in first["scores"]:
        scores = [s["scores"][mode]["final_normalized_score"] for s in summaries]
        mean, stderr = mean_and_stderr(scores)
        cell = f"{mean:.1f}" if stderr is None else f"{mean:.1f} +/- {stderr:.1f}"
        per_seed = " / ".join(f"{v:.1f}" for v in scores)
        lines.append(f"| {ROW_LABELS.get(mode, mode)} | {cell} | {per_seed} |")
    behaviour = first["behaviour_normalized_score"]
    lines.append(f"| behaviour policy (the dataset's {first['behaviour_episodes']} episodes) | {behaviour:.1f} | |")
    walls = [s["wall_time_s"] for s in summaries]
    rates = [s["steps_per_second"] for s in summaries]
    lines += [
        "",
        f"Wall time per run (dataset load, training, evaluations, export; install not included): "
        f"{' / '.join(f'{w:.0f}' for w in walls)} s; training {' / '.join(f'{r:.1f}' for r in rates)} steps/s, "
        f"{first['num_threads']} torch thread(s).",
    ]
    primary = first["primary_mode"]
    dtql = [s["scores"][primary]["final_normalized_score"] for s in summaries]
    verdicts = [f"{ROW_LABELS.get(primary, primary)} is above the behaviour policy in "
                f"{sum(v > behaviour for v in dtql)} of {len(dtql)} seeds"]
    if "diffusion_bc" in first["scores"]:
        bc = [s["scores"]["diffusion_bc"]["final_normalized_score"] for s in summaries]
        verdicts.append(f"above diffusion BC of the same run in {sum(d > b for d, b in zip(dtql, bc))} of {len(dtql)}")
    lines.append(", ".join(verdicts) + ".")
    return "\n".join(lines) + "\n"


def config_drift(summary: dict[str, Any], overrides: Sequence[str]) -> list[str]:
    """How the configuration of a finished seed differs from the example's default with ``overrides`` now (empty:
    the same run), ignoring where its files went."""
    from torchrl_dtql.checkpoint import config_mismatches

    current = example_utils().compose_example_config([*overrides, f"seed={summary['seed']}"])
    return config_mismatches(summary["config"], current, ignore=["output_dir"])


def example_utils() -> ModuleType:
    """``examples/utils.py`` (the example's helpers; ``examples/`` is not a package)."""
    spec = importlib.util.spec_from_file_location("dtql_example_utils", EXAMPLE.parent / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_summaries(out: Path, seeds: Sequence[int]) -> list[dict[str, Any]]:
    return [json.loads((out / f"seed{seed}.json").read_text()) for seed in seeds if (out / f"seed{seed}.json").is_file()]


def main(argv: Sequence[str] | None = None) -> str:
    argv = list(sys.argv[1:] if argv is None else argv)
    overrides: list[str] = []
    if "--" in argv:
        split = argv.index("--")
        argv, overrides = argv[:split], argv[split + 1:]
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--jobs", type=int, default=1, help="runs at a time")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--table", action="store_true", help="only rewrite table.md from the JSONs")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if not args.table:
        todo = []
        for seed in args.seeds:
            path = args.out / f"seed{seed}.json"
            if path.is_file():
                mismatches = config_drift(json.loads(path.read_text()), overrides)
                if mismatches:
                    raise SystemExit(f"main_job.py: {path} was run with another configuration:\n  "
                                     + "\n  ".join(mismatches) + "\nDelete it or pass --out to another folder.")
                continue
            todo.append(seed)
        with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
            for summary in pool.map(lambda seed: run_seed(seed, overrides, args.out), todo):
                print(f"seed {summary['seed']}: " + ", ".join(
                    f"{mode} {row['final_normalized_score']:.1f}" for mode, row in summary["scores"].items()
                ) + f"; behaviour {summary['behaviour_normalized_score']:.1f}; {summary['wall_time_s']:.0f} s", flush=True)
    summaries = load_summaries(args.out, args.seeds)
    if not summaries:
        raise SystemExit(f"main_job.py: no results in {args.out}")
    text = table(summaries)
    atomic_write_text(text, args.out / "table.md")
    print(text)
    return text


if __name__ == "__main__":
    main()
