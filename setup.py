"""Packaging for torchrl-dtql (import name ``torchrl_dtql``)."""
from __future__ import annotations

from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).parent

EXTRAS = {
    # Offline datasets: Minari files and D4RL-format HDF5 files (no jax, no hub client).
    "offline": ["minari>=0.5.4,<0.6", "h5py>=3.8"],
    # Remote Minari downloads (needs network access to the Hugging Face hub).
    "hub": ["minari[hf]>=0.5.4,<0.6"],
    # Evaluation environments and the dataset maker.
    "mujoco": ["gymnasium[mujoco]>=1.0"],
    # The example scripts and benchmarks.
    "examples": [
        "hydra-core>=1.3,<1.4",
        "omegaconf>=2.3",
        "tqdm",
        "matplotlib>=3.7",
        "hydra-joblib-launcher>=1.2",
    ],
    "slurm": ["hydra-submitit-launcher>=1.2"],
    # AntMaze / Adroit / Kitchen evaluation environments.
    "robotics": ["gymnasium-robotics>=1.4"],
    "tests": ["pytest>=7"],
}
EXTRAS["all"] = sorted({req for name, reqs in EXTRAS.items() if name not in ("hub", "slurm", "robotics") for req in reqs})

setup(
    name="torchrl-dtql",
    version="0.1.0",
    description="Diffusion Trusted Q-Learning (DTQL) for TorchRL",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="MIT",
    python_requires=">=3.10",
    packages=find_packages(include=["torchrl_dtql", "torchrl_dtql.*"]),
    package_data={"torchrl_dtql": ["data/assets/*", "trainers/config/*.yaml"]},
    include_package_data=True,
    install_requires=[
        "torch>=2.7",
        "torchrl>=0.14.1,<0.15",
        "tensordict>=0.14.3,<0.15",
        "numpy",
    ],
    extras_require=EXTRAS,
    entry_points={
        "console_scripts": [
            "dtql-make-dataset=torchrl_dtql.data.make_dataset:main",
        ]
    },
    classifiers=[
        "License :: OSI Approved :: MIT License",
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
