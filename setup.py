"""Packaging for torchrl-dtql (import name ``torchrl_dtql``).

``pip install torchrl-dtql`` installs everything the package's default paths use: the loss and the networks, the
offline data loaders (Minari, D4RL-format HDF5, the embedded default dataset), the MuJoCo evaluation envs, the hydra
example script and ``python -m torchrl_dtql.trainers``. The extras are only for what is truly optional.

Install the torch build you want (CPU or a CUDA one) *before* this package: ``torch>=2.7`` is then already met and pip
keeps it.
"""
from __future__ import annotations

import re
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent
URL = "https://github.com/torchrl-dtql/torchrl-dtql"


def read_version() -> str:
    """``torchrl_dtql.__version__``, read from the source file without importing the package (or torch)."""
    text = (HERE / "torchrl_dtql" / "__init__.py").read_text(encoding="utf-8")
    match = re.search(r"""^__version__\s*=\s*["']([^"']+)["']""", text, flags=re.MULTILINE)
    if match is None:
        raise RuntimeError("torchrl_dtql/__init__.py does not define __version__ = '...'.")
    return match.group(1)


def read_long_description() -> str:
    """The README, with its relative links made absolute so that they work on a package index page."""
    text = (HERE / "README.md").read_text(encoding="utf-8")
    # ![alt](docs/images/x.png) -> the raw file; [text](docs/x.md) -> the file on GitHub. Absolute links are kept.
    text = re.sub(r"(!\[[^\]]*\]\()(?!https?://|#)([^)\s]+\))", rf"\1{URL}/raw/main/\2", text)
    return re.sub(r"((?<!!)\[[^\]]*\]\()(?!https?://|#|mailto:)([^)\s]+\))", rf"\1{URL}/blob/main/\2", text)


INSTALL_REQUIRES = [
    # The torch build is the user's choice: install it first (see the README), pip keeps any build >= 2.7.
    "torch>=2.7",
    "torchrl>=0.14.1,<0.15",
    "tensordict>=0.14.3,<0.15",  # tensordict 0.15 breaks torchrl 0.14
    "numpy",
    # Offline data: Minari datasets (the embedded default dataset is one) and D4RL-format HDF5 files.
    "minari>=0.5.4,<0.6",
    "h5py>=3.8",
    # Evaluation envs, the embedded dataset's regeneration and the dataset maker.
    "gymnasium[mujoco]>=1.0",
    # The example script (examples/dtql_offline.py) and python -m torchrl_dtql.trainers.
    "hydra-core>=1.3,<1.4",
    "omegaconf>=2.3",
    # Progress bars (dataset recording, training) and the learning-curve plot, both on by default.
    "tqdm",
    "matplotlib>=3.7",
]

EXTRAS = {
    # Downloading Minari datasets from the Hugging Face hub (local datasets need nothing more).
    "hub": ["minari[hf]>=0.5.4,<0.6"],
    # AntMaze / Adroit / Kitchen evaluation environments. gymnasium-robotics 1.4.2's FrankaKitchen-v1 fails to build
    # with mujoco >= 3.12 (an AssertionError in mujoco_utils.get_joint_qpos: its joint-type check no longer matches
    # mujoco's enums); 3.3.7 and 3.11.0 build and step every env the presets use, and gymnasium's MuJoCo v5 envs.
    "robotics": ["gymnasium-robotics>=1.4.2,<1.5", "mujoco>=3.3,<3.12"],
    # Local multirun sweeps: python examples/dtql_offline.py -m hydra/launcher=joblib ...
    "sweeps": ["hydra-joblib-launcher>=1.2"],
    # SLURM sweeps: hydra/launcher=submitit_slurm.
    "slurm": ["hydra-submitit-launcher>=1.2"],
    # TorchRL loggers other than the default CSV one: logger.backend=tensorboard / wandb.
    "tensorboard": ["tensorboard"],
    "wandb": ["wandb"],
}
# The tests run the robotics evaluation too (AntMaze, pen, Kitchen on datasets recorded in the tests), so they install
# the robotics stack: with it the base MuJoCo envs run on mujoco 3.11 instead of 4.0 (both work).
EXTRAS["tests"] = ["pytest>=7", *EXTRAS["robotics"]]
EXTRAS["all"] = sorted({req for reqs in EXTRAS.values() for req in reqs})
# Compatibility aliases: these extras used to hold what is now required, so that old commands such as
# pip install -e ".[offline,mujoco,examples]" keep working. They add nothing.
EXTRAS.update({"offline": [], "mujoco": [], "examples": []})

setup(
    name="torchrl-dtql",
    version=read_version(),
    description="Diffusion Trusted Q-Learning (DTQL) for TorchRL: the loss, its networks, offline data and trainers",
    long_description=read_long_description(),
    long_description_content_type="text/markdown",
    author="torchrl-dtql contributors",
    url=URL,
    project_urls={
        "Documentation": f"{URL}/tree/main/docs",
        "Source": URL,
        "Issues": f"{URL}/issues",
        "Paper": "https://arxiv.org/abs/2405.19690",
    },
    # The core-metadata License field and the License classifier, which every pip shows ("License: MIT"). PEP 639's
    # license_expression="MIT" would replace both, but pip < 25.1 (e.g. the one venv installs on Python 3.11) then
    # shows an empty License; setuptools >= 77 only warns that the classifier is deprecated.
    license="MIT",
    license_files=["LICENSE"],
    keywords=[
        "reinforcement learning", "offline reinforcement learning", "diffusion", "diffusion policy", "torchrl",
        "pytorch", "DTQL", "trust region", "Q-learning", "D4RL", "Minari",
    ],
    python_requires=">=3.10",
    packages=find_packages(include=["torchrl_dtql", "torchrl_dtql.*"]),
    # Files the package reads from its own folder at run time (checked in the wheel by .ci/test_installed.sh).
    package_data={"torchrl_dtql": ["data/assets/*", "data/assets/*/*", "data/assets/*/*/*", "trainers/recipes/*.yaml"]},
    install_requires=INSTALL_REQUIRES,
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "dtql-make-dataset=torchrl_dtql.data.make_dataset:main",
        ]
    },
    classifiers=[
        "Development Status :: 3 - Alpha",
        "Intended Audience :: Science/Research",
        "Intended Audience :: Developers",
        "License :: OSI Approved :: MIT License",
        "Operating System :: OS Independent",
        "Programming Language :: Python :: 3",
        "Programming Language :: Python :: 3 :: Only",
        "Programming Language :: Python :: 3.10",
        "Programming Language :: Python :: 3.11",
        "Programming Language :: Python :: 3.12",
        "Programming Language :: Python :: 3.13",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Software Development :: Libraries :: Python Modules",
    ],
)
