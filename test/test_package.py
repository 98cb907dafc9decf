"""The package contract: public names, dependencies and extras, metadata, package data, and CI = the README.

The installed wheel itself is exercised by ``.ci/test_installed.sh`` (a fresh venv, no extras); these tests keep
the source side honest: what ``setup.py`` declares, what the code imports, what the README and ``.ci/run`` say.
"""
from __future__ import annotations

import ast
import fnmatch
import re
import runpy
import sys
from pathlib import Path
from typing import Any

import pytest
import setuptools

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
#: Top-level modules the default paths import -> the requirement (in install_requires) that provides them.
REQUIRED_MODULES = {
    "torch": "torch",
    "torchrl": "torchrl",
    "tensordict": "tensordict",
    "numpy": "numpy",
    "minari": "minari",
    "h5py": "h5py",
    "gymnasium": "gymnasium",
    "mujoco": "gymnasium",  # through gymnasium[mujoco]
    "hydra": "hydra-core",
    "omegaconf": "omegaconf",
    "tqdm": "tqdm",
    "matplotlib": "matplotlib",
    "cloudpickle": "torchrl",  # a dependency of torchrl (and gymnasium)
}
#: Optional top-level modules -> the extra that installs them. Importing one must be lazy and name the extra.
OPTIONAL_MODULES = {
    "huggingface_hub": "hub",
    "gymnasium_robotics": "robotics",
    "hydra_plugins": "sweeps",
    "submitit": "slurm",
    "tensorboard": "tensorboard",
    "wandb": "wandb",
    "pytest": "tests",
}
COMPAT_EXTRAS = ("offline", "mujoco", "examples")


@pytest.fixture(scope="module")
def setup_kwargs() -> dict[str, Any]:
    """The keyword arguments ``setup.py`` hands to ``setuptools.setup`` (run with setup() captured, not executed)."""
    captured: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
        runpy.run_path(str(ROOT / "setup.py"), run_name="__main__")
    assert captured, "setup.py did not call setuptools.setup"
    return captured


def requirement_name(requirement: str) -> str:
    """``"gymnasium[mujoco]>=1.0"`` -> ``"gymnasium"``."""
    return re.split(r"[\[<>=!~;\s]", requirement, maxsplit=1)[0].lower()


def test_public_names() -> None:
    for name in PUBLIC:
        assert hasattr(torchrl_dtql, name), name
        assert name in torchrl_dtql.__all__


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    ci_command = [line for line in ci.splitlines() if "pytest" in line]
    assert len(ci_command) == 1
    assert ci_command[0].strip() in readme
    assert "torch==2.13.0" in ci_command[0].split("pip install -q -e")[0], "torch must be pinned before the package"


def test_ci_tests_the_installed_package_after_the_unit_tests() -> None:
    ci_lines = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines()]
    script = ROOT / ".ci" / "test_installed.sh"
    assert script.is_file() and script.stat().st_mode & 0o111, ".ci/test_installed.sh must exist and be executable"
    pytest_line = next(i for i, line in enumerate(ci_lines) if "pytest" in line)
    calls = [i for i, line in enumerate(ci_lines) if line.startswith(".ci/test_installed.sh")]
    assert calls and calls[0] > pytest_line, ".ci/run must call .ci/test_installed.sh after the unit tests"
    text = script.read_text()
    assert "set -euo pipefail" in text and "HF_HUB_OFFLINE=1" in text
    assert "torch==2.13.0" in text, "the fresh venv must get the pinned torch before the wheel"


def test_readme_main_job_command_installs_no_extras() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Set-up: the two commands", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", section, flags=re.DOTALL)
    assert len(commands) == 2, "the set-up section keeps exactly two commands"
    main_job, tests = commands
    assert "pip install torch==2.13.0 && pip install -e . &&" in main_job
    assert main_job.rstrip().endswith("python examples/dtql_offline.py")
    assert 'pip install -q -e ".[tests]"' in tests


def test_dependency_pins() -> None:
    setup = (ROOT / "setup.py").read_text()
    assert '"torchrl>=0.14.1,<0.15"' in setup
    assert '"tensordict>=0.14.3,<0.15"' in setup
    assert re.search(r'"torch>=2\.7"', setup)


def test_install_requires_covers_the_default_paths(setup_kwargs: dict[str, Any]) -> None:
    required = {requirement_name(r) for r in setup_kwargs["install_requires"]}
    missing = sorted(set(REQUIRED_MODULES.values()) - required)
    assert not missing, f"install_requires lacks {missing}"
    assert any(r.startswith("gymnasium[mujoco]") for r in setup_kwargs["install_requires"])
    torch_reqs = [r for r in setup_kwargs["install_requires"] if requirement_name(r) == "torch"]
    assert torch_reqs == ["torch>=2.7"], "a lower bound only, so that an installed CUDA build is kept"


def test_extras(setup_kwargs: dict[str, Any]) -> None:
    extras = setup_kwargs["extras_require"]
    for extra in set(OPTIONAL_MODULES.values()) | {"all"}:
        assert extras.get(extra), f"extra {extra!r} is missing or empty"
    for extra in COMPAT_EXTRAS:
        assert extras.get(extra) == [], f"compat extra {extra!r} must exist and add nothing"
    required = {requirement_name(r) for r in setup_kwargs["install_requires"]}
    for extra, reqs in extras.items():
        doubled = [r for r in reqs if requirement_name(r) in required and "[" not in r]
        assert not doubled, f"extra {extra!r} repeats required packages {doubled}"
    assert set(extras["all"]) == {r for name, reqs in extras.items() if name != "all" for r in reqs}


def test_metadata(setup_kwargs: dict[str, Any]) -> None:
    assert setup_kwargs["version"] == torchrl_dtql.__version__, "setup.py must read torchrl_dtql.__version__"
    assert re.fullmatch(r"\d+\.\d+\.\d+([abc]|rc|\.dev|\.post)?\d*", torchrl_dtql.__version__)
    assert "version=read_version()" in (ROOT / "setup.py").read_text(), "one source for the version"
    assert setup_kwargs["name"] == "torchrl-dtql"
    assert setup_kwargs["description"] and len(setup_kwargs["description"]) <= 200
    assert setup_kwargs["long_description_content_type"] == "text/markdown"
    assert setup_kwargs["long_description"].startswith("# torchrl-dtql")
    assert "](docs/" not in setup_kwargs["long_description"], "relative links do not work on a package index"
    assert setup_kwargs["license"] == "MIT" and "License :: OSI Approved :: MIT License" in setup_kwargs["classifiers"]
    assert "LICENSE" in setup_kwargs["license_files"]
    assert setup_kwargs["python_requires"] == ">=3.10"
    classifiers = setup_kwargs["classifiers"]
    for prefix in ("Development Status ::", "Intended Audience ::", "License ::", "Programming Language :: Python :: 3.10",
                   "Topic ::"):
        assert any(c.startswith(prefix) for c in classifiers), prefix
    assert setup_kwargs["project_urls"] and setup_kwargs["keywords"]
    assert "dtql-make-dataset=torchrl_dtql.data.make_dataset:main" in setup_kwargs["entry_points"]["console_scripts"]


def test_package_data_covers_every_data_file(setup_kwargs: dict[str, Any]) -> None:
    """Every non-Python file under torchrl_dtql/ is read at run time and must be matched by package_data."""
    patterns = setup_kwargs["package_data"]["torchrl_dtql"]
    package = ROOT / "torchrl_dtql"
    data = [p.relative_to(package).as_posix() for p in package.rglob("*")
            if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts]
    assert "data/assets/hopper_medium_actor.pt" in data
    unshipped = [f for f in data if not any(fnmatch.fnmatch(f, pattern) for pattern in patterns)]
    assert not unshipped, f"not in package_data (so not in the wheel): {unshipped}"


def _imports(path: Path) -> list[tuple[str, ast.AST, list[ast.AST]]]:
    """``(top-level module, import node, its ancestors)`` for every import in a file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found: list[tuple[str, ast.AST, list[ast.AST]]] = []

    def visit(node: ast.AST, parents: list[ast.AST]) -> None:
        if isinstance(node, ast.Import):
            found.extend((alias.name.split(".")[0], node, parents) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.append((node.module.split(".")[0], node, parents))
        for child in ast.iter_child_nodes(node):
            visit(child, [*parents, node])

    visit(tree, [])
    return found


def _local_modules() -> set[str]:
    names = {"torchrl_dtql"}
    for folder in ("examples", "test", "benchmarks", "studies"):
        names |= {p.stem for p in (ROOT / folder).glob("*.py")}
    return names


@pytest.mark.parametrize("folder", ["torchrl_dtql", "examples"])
def test_every_third_party_import_is_a_requirement_or_lazy_and_names_its_extra(folder: str) -> None:
    """A required module may be imported anywhere; an optional one only inside a function, in a ``try`` whose
    handler names ``torchrl-dtql[<extra>]`` (or, in examples/, simply falls back when it is missing)."""
    known = set(sys.stdlib_module_names) | _local_modules() | set(REQUIRED_MODULES) | {"__future__"}
    problems = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for module, node, parents in _imports(path):
            where = f"{path.relative_to(ROOT)}:{node.lineno} imports {module}"
            if module in known:
                continue
            if module not in OPTIONAL_MODULES:
                problems.append(f"{where}: neither a requirement nor a known optional module (update setup.py)")
                continue
            in_function = any(isinstance(p, (ast.FunctionDef, ast.AsyncFunctionDef)) for p in parents)
            guards = [p for p in parents if isinstance(p, ast.Try)
                      and any(isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                              or h.type is None for h in p.handlers)]
            if not in_function or not guards:
                problems.append(f"{where}: an optional module must be imported lazily, guarded by except ImportError")
                continue
            if folder == "torchrl_dtql":
                handler_text = "".join(ast.unparse(h) for g in guards for h in g.handlers)
                if f"torchrl-dtql[{OPTIONAL_MODULES[module]}]" not in handler_text:
                    problems.append(f'{where}: its ImportError message must say pip install '
                                    f'"torchrl-dtql[{OPTIONAL_MODULES[module]}]"')
    assert not problems, "\n".join(problems)


def test_the_robotics_extra_pins_a_stack_that_builds_every_preset_env(setup_kwargs: dict[str, Any]) -> None:
    """FrankaKitchen-v1 (gymnasium-robotics 1.4.2) fails to build with mujoco >= 3.12; the tests install the pins."""
    extras = setup_kwargs["extras_require"]
    robotics = {requirement_name(r): r for r in extras["robotics"]}
    assert robotics["mujoco"] == "mujoco>=3.3,<3.12" and robotics["gymnasium-robotics"].startswith(
        "gymnasium-robotics>=1.4.2")  # fmt: skip
    assert set(extras["robotics"]) <= set(extras["tests"]), "CI (the tests extra) runs the robotics evaluation"
