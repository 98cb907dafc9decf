"""The README's "what the main job prints" block, generated from a real run of the main job, never typed.

``--run`` runs ``examples/dtql_offline.py`` with its defaults (the README's first command), commits its
``summary.json`` to ``docs/results/main_job_summary.json`` (machine paths made relative) and rewrites the README block
between the markers below with the run's own end-of-run report. ``--check`` (what the tests do) formats the
committed summary again and fails when the README block differs, or when the committed run no longer matches the
example's default configuration (then the block is stale: rerun with ``--run``).

Usage::

    python docs/main_job_block.py --run      # about 4-7 minutes on 2 CPU cores
    python docs/main_job_block.py --check
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
SUMMARY = REPO / "docs" / "results" / "main_job_summary.json"
START, END = "<!-- main-job-summary:start -->", "<!-- main-job-summary:end -->"


def example_utils() -> ModuleType:
    """``examples/utils.py``, which formats the end-of-run report."""
    spec = importlib.util.spec_from_file_location("dtql_example_utils", REPO / "examples" / "utils.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def block_text(summary: dict) -> str:
    """The README block: the report exactly as the run printed it, in a text fence."""
    return f"{START}\n```text\n{example_utils().format_summary(summary)}\n```\n{END}"


def readme_block(readme: str) -> str:
    """The block currently in the README (markers included)."""
    match = re.search(re.escape(START) + r".*?" + re.escape(END), readme, flags=re.S)
    if match is None:
        raise SystemExit(f"{README.name} has no {START} ... {END} block.")
    return match.group(0)


def run_main_job() -> dict:
    """Runs the main job with its defaults into a temporary folder; returns its summary, paths made relative."""
    with tempfile.TemporaryDirectory() as tmp:
        output_dir = Path(tmp) / "main_job"
        subprocess.run(
            [sys.executable, str(REPO / "examples" / "dtql_offline.py"), f"output_dir={output_dir}"],
            cwd=tmp,
            check=True,
        )
        text = (output_dir / "summary.json").read_text()
    text = text.replace(str(output_dir), "outputs/default/seed0/<date_time>").replace(str(REPO) + "/", "")
    text = text.replace(str(Path.home()), "~")  # the dataset cache: no machine paths in committed files
    return json.loads(text)


def default_config_drift(summary: dict) -> list[str]:
    """Training settings of the committed run that differ from the example's default configuration now."""
    from torchrl_dtql.checkpoint import config_mismatches

    utils = example_utils()
    current = utils.compose_example_config()
    ignored = list(utils.RESUME_IGNORED_KEYS)
    if summary["config"]["loss"]["alpha"] != "auto":  # settings a fixed-alpha run never reads
        ignored += [key for key in ALPHA_AUTO_KEYS if _absent(summary["config"], key)]
    return config_mismatches(summary["config"], current, ignore=ignored)


#: Keys only ``loss.alpha=auto`` reads, added after runs that could not have them (a fixed-alpha run is unchanged).
ALPHA_AUTO_KEYS = ("loss.trust_region_ratio", "loss.alpha_init", "optim.alpha_lr", "loss.auto_alpha",
                   "loss.alpha_per_q")


def _absent(config: dict, dotted: str) -> bool:
    section, key = dotted.split(".")
    return key not in config.get(section, {})


def check() -> list[str]:
    """Problems with the README block (empty when it is the committed run's report and the run is current)."""
    summary = json.loads(SUMMARY.read_text())
    problems = []
    if readme_block(README.read_text()) != block_text(summary):
        problems.append(f"the README block is not the report of {SUMMARY.relative_to(REPO)}")
    problems += [f"default config changed since the committed run: {line}" for line in default_config_drift(summary)]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument("--run", action="store_true", help="run the main job, commit its summary, rewrite the block")
    mode.add_argument("--check", action="store_true", help="fail if the README block is stale")
    args = parser.parse_args(argv)
    if args.run:
        summary = run_main_job()
        SUMMARY.parent.mkdir(parents=True, exist_ok=True)
        SUMMARY.write_text(json.dumps(summary, indent=2) + "\n")
        readme = README.read_text()
        README.write_text(readme.replace(readme_block(readme), block_text(summary)))
        print(f"wrote {SUMMARY.relative_to(REPO)} and the README block")
        return 0
    problems = check()
    for problem in problems:
        print(f"main_job_block.py: {problem}; regenerate with `python docs/main_job_block.py --run`", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
