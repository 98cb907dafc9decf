"""The package contract: public names, pins, and the README's test command being what CI runs."""
from __future__ import annotations

import re
from pathlib import Path

import torchrl_dtql

ROOT = Path(__file__).resolve().parents[1]
PUBLIC = [
    "DTQLLoss",
    "DTQLUpdater",
    "EDMDiffusionActor",
    "QRerankingActor",
    "dtql_update_step",
    "make_dtql_modules",
    "make_dtql_optimizers",
    "make_dtql_update_fn",
    "make_one_step_actor",
]


def test_public_names():
    for name in PUBLIC:
        assert hasattr(torchrl_dtql, name), name
        assert name in torchrl_dtql.__all__


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    ci_command = [line for line in ci.splitlines() if "pytest" in line]
    assert len(ci_command) == 1
    assert ci_command[0].strip() in readme
    assert "torch==2.13.0" in ci_command[0].split("pip install -q -e")[0], "torch must be pinned before the package"


def test_dependency_pins():
    setup = (ROOT / "setup.py").read_text()
    assert '"torchrl>=0.14.1,<0.15"' in setup
    assert '"tensordict>=0.14.3,<0.15"' in setup
    assert re.search(r'"torch>=2\.7"', setup)
