"""Quality benchmark: DTQL against TorchRL's IQL and TD3+BC, and diffusion BC, on several datasets and seeds.

For each dataset x method x seed this trains one run at one stated budget and evaluates it on the same env seeds
as every other method (``seed + 100``, :func:`torchrl_dtql.evaluation.evaluate_policies`), writing one JSON per run
under ``<out>/runs/``. The methods (``quality_methods.py``):

* ``dtql``: DTQL with the dataset's task preset (``examples/config/task/<family>-<kind>-v2.yaml``), evaluated Q-reranked
  (the paper's policy) and with its mean action; its own diffusion model, trained by the behaviour-cloning loss for
  every step of the run, is evaluated sampled (``diffusion_bc`` mode): the **diffusion BC** baseline comes from this
  run, not from a separate one;
* ``dtql-auto``: the same with ``alpha="auto", auto_alpha="multiplier"`` (trust-region weight learnt as a Lagrange
  multiplier);
* ``dtql-qscale``: the same with ``alpha="auto"`` as it comes (``auto_alpha="q_scale"``: alpha = 0.1 x the batch's
  ``|mean Q|``);
* ``iql`` and ``td3bc``: TorchRL's ``IQLLoss`` and ``TD3BCLoss`` as TorchRL's offline recipes configure them.

The budget: every run takes ``--pretrain-steps`` + ``--steps`` gradient steps on as many batches of 256 (DTQL's
first ``--pretrain-steps`` train its critic and diffusion model only, its protocol); evaluations every
``--eval-every`` steps after ``--pretrain-steps``, and at the end.

Resumable: a rerun skips finished runs, continues a stopped or killed one from its checkpoint (every evaluation and
every ``--checkpoint-every`` steps; Ctrl-C or SIGTERM checkpoints first) and refuses results made with other
settings. Each run holds a lock while it trains, so the same command started twice shares the work::

    python benchmarks/quality.py                                   # the full benchmark, into benchmarks/results/quality
    nohup python benchmarks/quality.py > q0.log 2>&1 &             # two at a time on a 2-core machine: start the
    nohup python benchmarks/quality.py > q1.log 2>&1 &             # same command twice (or use --shard 0/2, 1/2)
    python benchmarks/quality.py --list                            # what is done, running, stopped, to do
    python benchmarks/quality.py --table                           # only write table.md and the curves

Outputs: ``<out>/runs/<dataset>/<method>/seed<k>.json`` (one per run: its evaluations, and every
``--train-log-every`` steps DTQL's alpha and trust-region loss), ``<out>/table.md``, ``<out>/curves_<dataset>.png``,
``<out>/trust_region_<dataset>.png``; ``<out>/checkpoints/`` (removed as runs finish; ignored by git through
``<out>/.gitignore``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import socket
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import torchrl_dtql  # noqa: F401
except ImportError:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import torch
import tqdm

from quality_methods import BuildOptions, build_method, dataset_slug, METHOD_MODES, METHODS, MethodRun, REPO_ROOT
from quality_report import write_report
from torchrl_dtql import DTQLLoss
from torchrl_dtql.checkpoint import config_mismatches, load_checkpoint, read_checkpoint, save_checkpoint
from torchrl_dtql.data import make_offline_replay_buffer, OfflineDatasetInfo
from torchrl_dtql.data.embedded import embedded_recipe, is_embedded_id
from torchrl_dtql.evaluation import evaluate_policies, make_eval_env, normalized_returns, score_table
from torchrl_dtql.interrupt import GracefulStop, StopRequested
from torchrl_dtql.io import atomic_write_text

#: The benchmark's datasets: the embedded default and the D4RL-like medium sets made by the dataset maker
#: (``d4rl-like/walker2d/medium-v0`` joins them when its recipe ships: its SAC run is not made yet, docs/data.md).
DEFAULT_DATASETS = (
    "embedded/hopper/medium-v0",
    "d4rl-like/halfcheetah/medium-v0",
    "d4rl-like/hopper/medium-v0",
)
DEFAULT_OUT = REPO_ROOT / "benchmarks" / "results" / "quality"
RESULT_FORMAT = "torchrl_dtql.quality/1"
EVAL_SEED_OFFSET = 100  # every run evaluates in envs seeded seed + 100, as examples/dtql_offline.py
#: Settings that may differ between a run's checkpoint or JSON and the command continuing it: they change how fast
#: it runs, not what it computes (compiled and eager steps agree to float rounding).
RESUME_IGNORED = ("compile", "threads")
#: Training diagnostics a run logs every ``--train-log-every`` steps when its update returns them (DTQL's: the
#: trust-region weight in use, the policy's trust-region loss, its target under ``auto_alpha="multiplier"``, and the
#: twin-Q value of the policy's actions), so that a plot shows how ``alpha="auto"`` moves over a run.
TRAIN_LOG_KEYS = ("alpha", "trust_region", "trust_region_target", "min_q_actor")


class BenchmarkError(Exception):
    """A problem with the command line or the results folder, which the message says how to fix."""


# =====================================================================================================================
# Runs: what to train, where its files go
# =====================================================================================================================


@dataclass(frozen=True)
class RunSpec:
    """One run of the benchmark: a method on a dataset with a seed, and where its files are."""

    dataset: str
    method: str
    seed: int
    out: Path

    @property
    def name(self) -> str:
        """``<dataset slug>/<method>/seed<k>``."""
        return f"{dataset_slug(self.dataset)}/{self.method}/seed{self.seed}"

    @property
    def json_path(self) -> Path:
        return self.out / "runs" / f"{self.name}.json"

    @property
    def checkpoint_path(self) -> Path:
        return self.out / "checkpoints" / f"{self.name}.pt"

    @property
    def lock_path(self) -> Path:
        return self.out / "checkpoints" / f"{self.name}.lock"


def parse_shard(text: str | None) -> tuple[int, int]:
    """``"i/n"`` -> ``(i, n)``: this process runs every n-th run, from the i-th (``None``: all runs).

    Examples:
        >>> parse_shard("1/2"), parse_shard(None)
        ((1, 2), (0, 1))
    """
    if text is None:
        return 0, 1
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        index, count = -1, 0
    if not 0 <= index < count:
        raise BenchmarkError(f"--shard {text!r}: expected i/n with 0 <= i < n, e.g. --shard 0/2 and --shard 1/2.")
    return index, count


def plan_runs(args: argparse.Namespace) -> list[RunSpec]:
    """Every run, seed-major (all datasets and methods of seed 0 first, so that the table fills evenly), then this
    process's shard of them."""
    runs = [RunSpec(dataset, method, seed, args.out) for seed in args.seeds for dataset in args.datasets
            for method in args.methods]  # fmt: skip
    index, count = parse_shard(args.shard)
    return runs[index::count]


def static_config(spec: RunSpec, args: argparse.Namespace) -> dict[str, Any]:
    """What a run's result depends on besides the method's hyper-parameters: identity, budget, evaluation."""
    return {
        "method": spec.method,
        "dataset": spec.dataset,
        "seed": spec.seed,
        "pretrain_steps": args.pretrain_steps,
        "steps": args.steps,
        "batch_size": args.batch_size,
        "eval_every": args.eval_every,
        "eval_episodes": args.eval_episodes,
        "eval_max_steps": args.eval_max_steps,
        "eval_envs": args.eval_envs,
        "num_candidates": args.num_candidates,
        "diffusion_num_steps": args.diffusion_steps,
        "hidden_dim": args.hidden_dim,
        "device": args.device,
        "compile": args.compile,
        "threads": args.threads,
    }


def eval_steps(pretrain_steps: int, steps: int, every: int) -> list[int]:
    """The run steps after which a run is evaluated: every ``every`` main-phase steps, and at the end.

    Examples:
        >>> eval_steps(10, 25, 10)
        [20, 30, 35]
    """
    points = list(range(pretrain_steps + every, pretrain_steps + steps, every))
    return points + [pretrain_steps + steps]


# =====================================================================================================================
# Run files: the JSON record, the lock
# =====================================================================================================================


def read_json(path: Path) -> dict[str, Any] | None:
    """A run's JSON, or ``None`` when there is none (a half-written file cannot exist: writes are atomic)."""
    if not path.is_file():
        return None
    return json.loads(path.read_text())


def check_same_settings(spec: RunSpec, saved: dict[str, Any], config: dict[str, Any]) -> None:
    """Refuses a results folder whose run was made with other settings, naming the differences and the fix."""
    mismatches = config_mismatches(saved, config, ignore=RESUME_IGNORED)
    if mismatches:
        raise BenchmarkError(
            f"{spec.json_path} was made with other settings:\n  " + "\n  ".join(mismatches)
            + "\nRerun with the settings it was made with, or write to another folder (--out)."
        )


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """A lock file held while a run trains, so that two benchmark processes never train the same run.

    A lock left by a process that is gone (killed) is taken over. ``acquire()`` is ``False`` when another live
    process on this machine holds it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.held = False

    def holder(self) -> int | None:
        """The pid holding the lock, if a live process on this host does."""
        try:
            host, pid = self.path.read_text().split()
        except (OSError, ValueError):
            return None
        return int(pid) if host == socket.gethostname() and pid_alive(int(pid)) else None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if self.holder() is not None:
                    return False
                self.path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            with os.fdopen(fd, "w") as file:
                file.write(f"{socket.gethostname()} {os.getpid()}\n")
            self.held = True
            return True
        return False

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def run_status(spec: RunSpec) -> str:
    """``complete``, ``running`` (a live process holds it), ``stopped`` (a checkpoint to continue) or ``todo``."""
    record = read_json(spec.json_path)
    if record is not None and record.get("status") == "complete":
        return "complete"
    if RunLock(spec.lock_path).holder() is not None:
        return "running"
    return "stopped" if spec.checkpoint_path.is_file() else "todo"


# =====================================================================================================================
# Data and envs, shared by the consecutive runs of one dataset
# =====================================================================================================================


class DatasetCache:
    """The replay buffer and evaluation envs of the dataset in use, kept while consecutive runs use it."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.source: str | None = None
        self.replay_buffer = None
        self.eval_env = None

    def get(self, source: str):
        """``(replay_buffer, eval_env)`` of ``source``, loading it (and closing the previous one's envs) if needed."""
        if source != self.source:
            self.close()
            self.replay_buffer = make_offline_replay_buffer(source, self.args.batch_size, sampler="random",
                                                            device=self.args.device)  # fmt: skip
            num_envs = max(1, min(self.args.eval_envs, self.args.eval_episodes))
            self.eval_env = make_eval_env(self.replay_buffer.metadata, num_envs=num_envs)
            self.source = source
        return self.replay_buffer, self.eval_env

    def close(self) -> None:
        if self.eval_env is not None and not self.eval_env.is_closed:
            self.eval_env.close()
        self.source, self.replay_buffer, self.eval_env = None, None, None


def behaviour_score(info: OfflineDatasetInfo) -> dict[str, float | None]:
    """The dataset's mean episode return and its normalized score (the behaviour policy's), when known."""
    if info.episode_returns is None or len(info.episode_returns) == 0:
        return {"return": None, "normalized_score": None}
    raw = float(np.mean(info.episode_returns))
    normalized = normalized_returns(info, np.asarray([raw]))
    return {"return": raw, "normalized_score": None if normalized is None else float(normalized[0])}


def dataset_record(info: OfflineDatasetInfo) -> dict[str, Any]:
    """What a run's JSON says about its dataset."""
    return {
        "id": info.dataset_id,
        "env_id": info.env_id,
        "num_transitions": info.num_transitions,
        "num_episodes": info.num_episodes,
        "behaviour": behaviour_score(info),
    }


# =====================================================================================================================
# Machine and versions
# =====================================================================================================================


def machine_record(device: str) -> dict[str, Any]:
    """What the run was measured on (the steps/s depend on it)."""
    cpu = platform.processor() or "cpu"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "host": socket.gethostname(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": device,
        "gpu": torch.cuda.get_device_name() if device.startswith("cuda") else None,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }


def versions_record() -> dict[str, str]:
    """The versions of the libraries a result depends on."""
    out = {"python": platform.python_version()}
    for name in ("torch", "torchrl", "tensordict", "torchrl_dtql", "gymnasium", "mujoco", "numpy"):
        try:
            out[name] = str(__import__(name).__version__)
        except (ImportError, AttributeError):
            out[name] = "n/a"
    return out


# =====================================================================================================================
# One run
# =====================================================================================================================


@dataclass
class Progress:
    """A run's evaluations and times, saved in its checkpoints (``extra``) and its JSON."""

    history: list
    train_time_s: float = 0.0
    eval_time_s: float = 0.0
    wall_time_s: float = 0.0
    timed_steps: int = 0
    resumed_at: list | None = None
    train_log: list | None = None  # [{"step": ..., <TRAIN_LOG_KEYS present>: float}], see :func:`train_log_entry`

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    @property
    def steps_per_second(self) -> float | None:
        return self.timed_steps / self.train_time_s if self.train_time_s > 0 else None


class BenchmarkRun:
    """Trains, evaluates, checkpoints and records one :class:`RunSpec`.

    ``execute(stop)`` returns ``"complete"``, or ``"stopped"`` when ``stop`` was requested or ``--stop-at-step``
    was reached (a checkpoint and a JSON with ``status: stopped`` are then on disk).
    """

    def __init__(self, spec: RunSpec, args: argparse.Namespace, data: DatasetCache, label: str) -> None:
        self.spec, self.args, self.label = spec, args, label
        self.config = static_config(spec, args)
        self.replay_buffer, self.eval_env = data.get(spec.dataset)
        self.info: OfflineDatasetInfo = self.replay_buffer.metadata
        self.total_steps = args.pretrain_steps + args.steps
        self.eval_points = set(eval_steps(args.pretrain_steps, args.steps, args.eval_every))
        self.modes = list(METHOD_MODES[spec.method])

    # ------------------------------------------------------------------ set-up
    def build(self) -> MethodRun:
        """Seeds everything from the run's seed, then builds the method (same seed: same initial weights)."""
        seed = self.spec.seed
        torch.manual_seed(seed)
        np.random.seed(seed)
        self.replay_buffer.set_rng(torch.Generator(device=self.replay_buffer.storage.device).manual_seed(seed))
        options = BuildOptions(pretrain_steps=self.args.pretrain_steps, steps=self.args.steps,
                               hidden_dim=self.args.hidden_dim, num_candidates=self.args.num_candidates,
                               diffusion_num_steps=self.args.diffusion_steps, compile=self.args.compile,
                               device=self.args.device)  # fmt: skip
        return build_method(self.spec.method, self.info, self.spec.dataset, options)

    def full_config(self, method: MethodRun) -> dict[str, Any]:
        return {**self.config, "settings": json.loads(json.dumps(method.settings, default=str))}

    def resume(self, method: MethodRun) -> tuple[int, Progress]:
        """``(step, progress)`` from the run's checkpoint, or ``(0, fresh)``; refuses a checkpoint of other settings."""
        path = self.spec.checkpoint_path
        if not path.is_file():
            return 0, Progress(history=[])
        saved = read_checkpoint(path).get("config") or {}
        check_same_settings(self.spec, saved, self.full_config(method))
        payload = load_checkpoint(path, loss=method.loss, optimizers=method.optimizers, schedulers=method.schedulers,
                                  replay_buffer=self.replay_buffer)  # fmt: skip
        progress = Progress(**payload["extra"]["progress"])
        progress.resumed_at = [*(progress.resumed_at or []), payload["step"]]
        return payload["step"], progress

    # ------------------------------------------------------------------ records
    def save(self, method: MethodRun, step: int, progress: Progress) -> None:
        save_checkpoint(self.spec.checkpoint_path, loss=method.loss, optimizers=method.optimizers,
                        schedulers=method.schedulers, step=step, config=self.full_config(method),
                        replay_buffer=self.replay_buffer, extra={"progress": progress.to_dict()})  # fmt: skip

    def write_json(self, method: MethodRun, step: int, progress: Progress, status: str) -> None:
        record = {
            "format": RESULT_FORMAT,
            "status": status,
            "method": self.spec.method,
            "dataset": self.spec.dataset,
            "seed": self.spec.seed,
            "eval_seed": self.spec.seed + EVAL_SEED_OFFSET,
            "modes": self.modes,
            "primary_mode": self.modes[0],
            "steps_done": step,
            "total_steps": self.total_steps,
            "config": self.config,
            "settings": self.full_config(method)["settings"],
            "dataset_info": dataset_record(self.info),
            "evaluations": progress.history,
            "scores": score_table(progress.history, self.modes),
            "steps_per_second": progress.steps_per_second,
            "train_time_s": progress.train_time_s,
            "eval_time_s": progress.eval_time_s,
            "wall_time_s": progress.wall_time_s,
            "resumed_at": progress.resumed_at,
            "train_log": progress.train_log,
            "machine": machine_record(self.args.device),
            "versions": versions_record(),
            "command": shlex.join([sys.executable, *sys.argv]),
        }
        # key order kept (not sorted): a run's modes keep their table order
        atomic_write_text(json.dumps(record, indent=2) + "\n", self.spec.json_path)

    # ------------------------------------------------------------------ evaluation
    def evaluate(self, method: MethodRun, step: int, progress: Progress) -> dict[str, Any]:
        modes = evaluate_policies(self.eval_env, method.policies, episodes=self.args.eval_episodes,
                                  max_steps=self.args.eval_max_steps, seed=self.spec.seed + EVAL_SEED_OFFSET,
                                  info=self.info, device=self.args.device)  # fmt: skip
        record = {"step": step, "main_step": step - self.args.pretrain_steps, "modes": modes,
                  "train_time_s": progress.train_time_s, "steps_per_second": progress.steps_per_second}  # fmt: skip
        if isinstance(method.loss, DTQLLoss):  # the trust-region weight in use (learnt with alpha="auto")
            record["alpha"] = float(method.loss.alpha)
        progress.history.append(record)
        return record

    # ------------------------------------------------------------------ the loop
    def execute(self, stop: GracefulStop) -> str:
        method = self.build()
        start, progress = self.resume(method)
        segment_start = time.perf_counter()
        wall_before = progress.wall_time_s
        bar = tqdm.tqdm(total=self.total_steps, initial=start, desc=self.label, unit="step", dynamic_ncols=True,
                        mininterval=2.0)  # fmt: skip
        try:
            for step in range(start, self.total_steps):
                tick = time.perf_counter()
                out = method.update(self.replay_buffer.sample(), step)
                progress.train_time_s += time.perf_counter() - tick
                progress.timed_steps += 1
                bar.update(1)
                done = step + 1
                if done % self.args.train_log_every == 0 and (entry := train_log_entry(out, done)) is not None:
                    progress.train_log = [*(progress.train_log or []), entry]
                if done in self.eval_points:
                    tick = time.perf_counter()
                    record = self.evaluate(method, done, progress)
                    progress.eval_time_s += time.perf_counter() - tick
                    bar.set_postfix(score=format_record(record, self.modes[0]))
                stopping = stop.requested or done == self.args.stop_at_step
                if done in self.eval_points or done % self.args.checkpoint_every == 0 or stopping:
                    progress.wall_time_s = wall_before + time.perf_counter() - segment_start
                    status = "complete" if done == self.total_steps else ("stopped" if stopping else "running")
                    if status != "complete":
                        self.save(method, done, progress)
                    self.write_json(method, done, progress, status)
                    if stopping and status != "complete":
                        return "stopped"
        finally:
            bar.close()
        if not self.args.keep_checkpoints:
            self.spec.checkpoint_path.unlink(missing_ok=True)
        return "complete"


def train_log_entry(out: Any, step: int) -> dict[str, float] | None:
    """``{"step": step, key: float}`` for the :data:`TRAIN_LOG_KEYS` in an update's output (``None`` if none is).

    Examples:
        >>> from tensordict import TensorDict
        >>> train_log_entry(TensorDict({"alpha": torch.tensor(2.5), "loss_actor": torch.tensor(1.0)}), 100)
        {'step': 100, 'alpha': 2.5}
        >>> train_log_entry({"loss_qvalue": torch.tensor(0.3)}, 100) is None
        True
    """
    values = {key: float(out[key].mean()) for key in TRAIN_LOG_KEYS if key in out.keys()}
    return {"step": step, **values} if values else None


def format_record(record: dict[str, Any], mode: str) -> str:
    """One evaluation's headline score (raw return when the dataset has no reference scores)."""
    result = record["modes"][mode]
    score = result["normalized_score"]["mean"]
    return f"{score:.1f}" if score is not None else f"R={result['return']['mean']:.0f}"


# =====================================================================================================================
# The command line
# =====================================================================================================================


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 1)[1])  # fmt: skip
    parser.add_argument("--datasets", nargs="+", default=list(DEFAULT_DATASETS),
                        help="dataset ids, <namespace>/<family>/<kind>-v<N> (they name DTQL's preset)")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS,
                        help="methods to train (diffusion BC is evaluated in the dtql runs)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--pretrain-steps", type=int, default=10_000,
                        help="first steps of every run; DTQL trains only its critic and diffusion model in them")
    parser.add_argument("--steps", type=int, default=30_000, help="main-phase gradient steps of every run")
    parser.add_argument("--batch-size", type=int, default=256, help="every recipe's and preset's batch size")
    parser.add_argument("--eval-every", type=int, default=5_000, help="main-phase steps between evaluations")
    parser.add_argument("--eval-episodes", type=int, default=10, help="episodes per evaluation and acting mode")
    parser.add_argument("--eval-max-steps", type=int, default=1000, help="env steps per episode at most")
    parser.add_argument("--eval-envs", type=int, default=10, help="evaluation envs stepped together")
    parser.add_argument("--num-candidates", type=int, default=64,
                        help="DTQL's reranking candidates per state (the paper: 1024; 64 scored the same on halfcheetah "
                             "in a 13th of the evaluation time, studies/results/reranking_candidates_halfcheetah.md)")
    parser.add_argument("--diffusion-steps", type=int, default=10, help="sampling steps of diffusion BC")
    parser.add_argument("--checkpoint-every", type=int, default=5_000, help="steps between checkpoints")
    parser.add_argument("--train-log-every", type=int, default=250,
                        help="steps between entries of a run's training log (DTQL's alpha and trust-region loss)")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads per process")
    parser.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True,
                        help="compile DTQL's update (make_dtql_update_fn(compile=True)); IQL and TD3+BC run eager, "
                             "as their recipes' default")
    parser.add_argument("--device", default=None, help="default: cuda when present, else cpu")
    parser.add_argument("--hidden-dim", type=int, default=None,
                        help="every hidden layer this wide (default: each method's own sizes; small for tests)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="results folder")
    parser.add_argument("--shard", default=None, help="i/n: run every n-th run from the i-th (two processes: 0/2, 1/2)")
    parser.add_argument("--stop-at-step", type=int, default=None,
                        help="checkpoint and stop each run at this step, as if killed (tests)")
    parser.add_argument("--keep-checkpoints", action="store_true", help="keep a finished run's checkpoint")
    parser.add_argument("--list", action="store_true", help="print every run's status and exit")
    parser.add_argument("--table", action="store_true", help="only write table.md and the curves from the JSONs")
    args = parser.parse_args(argv)
    args.out = args.out.expanduser().absolute()
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    positive = {"--steps": args.steps, "--eval-every": args.eval_every, "--eval-episodes": args.eval_episodes,
                "--checkpoint-every": args.checkpoint_every, "--batch-size": args.batch_size,
                "--train-log-every": args.train_log_every}  # fmt: skip
    for flag, value in positive.items():
        if value < 1:
            parser.error(f"{flag} must be >= 1, got {value}.")
    if args.pretrain_steps < 0:
        parser.error(f"--pretrain-steps must be >= 0, got {args.pretrain_steps}.")
    return args


def check_datasets(datasets: Sequence[str]) -> None:
    """Refuses, before any training, an embedded or D4RL-like id that the package does not ship (a Minari id is
    checked when its run loads it: it may need a download)."""
    for dataset in datasets:
        if is_embedded_id(dataset):
            try:
                embedded_recipe(dataset)
            except KeyError as err:
                raise BenchmarkError(f"--datasets {dataset}: {err.args[0]} Leave it out or pick one of those.") from None


def prepare_out(out: Path) -> None:
    """The results folder, with a ``.gitignore`` that keeps checkpoints and locks out of commits."""
    out.mkdir(parents=True, exist_ok=True)
    ignore = out / ".gitignore"
    if not ignore.exists():
        text = "# written by benchmarks/quality.py: checkpoints and locks of runs in progress\ncheckpoints/\n"
        atomic_write_text(text, ignore)


def resume_hint() -> str:
    return shlex.join(["python", *sys.argv])


def list_runs(runs: Sequence[RunSpec]) -> dict[str, str]:
    """``{run name: status}``, printed."""
    statuses = {spec.name: run_status(spec) for spec in runs}
    for spec in runs:
        status, record = statuses[spec.name], read_json(spec.json_path)
        where = f"  ({record['steps_done']:,} of {record['total_steps']:,} steps recorded)" if (
            status in ("running", "stopped") and record is not None) else ""  # fmt: skip
        print(f"{status:>9}  {spec.name}{where}")
    counts = {status: list(statuses.values()).count(status) for status in dict.fromkeys(statuses.values())}
    print(", ".join(f"{count} {status}" for status, count in counts.items()))
    return statuses


def pending_runs(runs: Sequence[RunSpec], args: argparse.Namespace) -> Iterator[tuple[int, RunSpec, str | None]]:
    """``(index, spec, reason to skip or None)`` for each run, checking a finished run's settings first."""
    for index, spec in enumerate(runs):
        record = read_json(spec.json_path)
        if record is not None:
            check_same_settings(spec, record["config"], static_config(spec, args))
            if record.get("status") == "complete":
                yield index, spec, "complete"
                continue
        yield index, spec, None


def run_benchmark(args: argparse.Namespace) -> dict[str, str]:
    """Trains every pending run of this process; returns ``{run name: outcome}`` (``complete``, ``skipped: ...``,
    ``stopped``)."""
    runs = plan_runs(args)
    outcomes: dict[str, str] = {}
    data = DatasetCache(args)
    with GracefulStop() as stop:
        try:
            for index, spec, skip in pending_runs(runs, args):
                if skip is not None:
                    outcomes[spec.name] = f"skipped: {skip}"
                    continue
                lock = RunLock(spec.lock_path)
                if not lock.acquire():
                    outcomes[spec.name] = f"skipped: held by pid {lock.holder()}"
                    continue
                try:
                    label = f"[{index + 1}/{len(runs)}] {spec.name}"
                    with stop.immediately():  # loading (or regenerating) its dataset: nothing to checkpoint yet
                        run = BenchmarkRun(spec, args, data, label)
                    outcomes[spec.name] = run.execute(stop)
                except StopRequested:
                    data.close()  # a dataset interrupted while loading is not kept
                    outcomes[spec.name] = "stopped before training"
                finally:
                    lock.release()
                if stop.requested:
                    saved = "checkpoint written" if outcomes[spec.name] == "stopped" else "no run had started"
                    print(f"\nStopped ({stop.signal_name}); {saved}. Continue with:\n  {resume_hint()}",
                          file=sys.stderr)  # fmt: skip
                    break
        finally:
            data.close()
    if stop.requested:
        sys.exit(stop.exit_code)
    return outcomes


def main(argv: Sequence[str] | None = None) -> dict[str, str]:
    args = parse_args(argv)
    if args.list:
        return list_runs(plan_runs(args))
    torch.set_num_threads(args.threads)
    outcomes: dict[str, str] = {}
    if not args.table:
        prepare_out(args.out)
        try:
            check_datasets(args.datasets)
            outcomes = run_benchmark(args)
        except BenchmarkError as err:
            sys.exit(f"quality.py: error: {err}")
        for name, outcome in outcomes.items():
            print(f"{outcome:>9}  {name}")
    # the README shows the committed benchmark's summary: only the default results folder rewrites it
    readme = REPO_ROOT / "README.md" if args.out.resolve() == DEFAULT_OUT.resolve() else None
    written = write_report(args.out, readme=readme)
    print("wrote " + ", ".join(str(path) for path in written))
    return outcomes


if __name__ == "__main__":
    main()
