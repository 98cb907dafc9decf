"""DTQL action-latency benchmark: one-step, Q-reranked and iterative-diffusion actors, side by side in one process.

Variants, each at batch 1 (one environment) and batch 64 (a vectorised evaluation):

* ``one-step deterministic``: the one-step policy's mean action ``tanh(loc)`` (``make_one_step_actor`` under
  ``ExplorationType.DETERMINISTIC``, TensorDict in and out), eager and ``torch.compile``-d, and the same action from
  the plain-tensor deployment module (``torchrl_dtql.export.make_exportable_policy(loss, num_candidates=0)``);
* ``reranked N``: DTQL's evaluation policy, :class:`torchrl_dtql.QRerankingActor` with N = 16, 64, 1024 candidates
  scored by the target twin Q, eager and ``compile=True``; and ``plain reranked N``, a plain-PyTorch transcription of
  the reference's selection (the network run on N copies of the state), the "before";
* ``diffusion <solver> <k>``: the EDM behaviour model used as an iterative diffusion policy
  (:class:`torchrl_dtql.EDMDiffusionActor`, the Diffusion-QL-style baseline) with k = 5, 10, 50 Euler or Heun
  steps, eager, and compiled for k = 5.

Each row gives the latency, the matmul GFLOP of one call, its FLOP limit (those FLOPs at this machine's fp32 matmul
rate) and the fraction of it reached. The script also prints the paper's claim, one-step against iterative
sampling, as latency ratios, and draws ``docs/images/acting_latency.png``.

Run (about 5-10 minutes on 2 CPU cores, most of it compiling)::

    python benchmarks/bench_acting.py
    python benchmarks/bench_acting.py --quick --no-compile
"""
from __future__ import annotations

import argparse
import copy
import json
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from _common import (
    count_flops,
    default_device,
    Machine,
    markdown_table,
    matmul_rate,
    REPO_ROOT,
    time_interleaved,
    write_results,
)
from reference_step import PlainDTQLReference

from torchrl_dtql import DTQLLoss, make_dtql_modules, QRerankingActor
from torchrl_dtql.export import make_exportable_policy
from torchrl_dtql.modules.fast_mish import replace_mish_
from torchrl_dtql.modules.inductor import make_inductor_backend
from torchrl_dtql.policies import rerank

OBS_DIM, ACT_DIM = 17, 6


def plain_rerank(agent: PlainDTQLReference, state: torch.Tensor, num_candidates: int) -> torch.Tensor:
    """The reference's action selection: N copies of each state, N policy samples, softmax over the target min-Q.

    The candidates and their scores are the reference's (the policy run on N copies of every state); the choice is
    the package's one selection, :func:`torchrl_dtql.policies.rerank`, at the reference's temperature 1.
    """
    batch = state.shape[0]
    states = torch.repeat_interleave(state, repeats=num_candidates, dim=0)
    actions = agent.actor.sample(states)
    q = agent.critic_target.q_min(states, actions).view(batch, num_candidates)
    return rerank(actions.view(batch, num_candidates, -1), q, temperature=1.0)


class Row:
    """One acting variant: a name, its family and settings, and the call to time."""

    def __init__(self, name: str, family: str, call: Callable[[TensorDict], object], **settings) -> None:
        self.name = name
        self.family = family
        self.call = call
        self.settings = settings


def build_rows(loss: DTQLLoss, modules: dict, *, compile: bool, diffusion_steps: list[int], candidates: list[int]):
    """Every acting variant, all reading the same weights."""
    actor = modules["actor_network"]

    def deterministic(policy):
        def call(td):
            with set_exploration_type(ExplorationType.DETERMINISTIC):
                return policy(td)

        return call

    def on_tensors(policy):
        return lambda td: policy(td["observation"])

    rows = [Row("one-step deterministic", "one-step", deterministic(actor), compiled=False)]
    # the deployment module of torchrl_dtql.export: tensors in and out, no TensorDict
    plain_tensors = make_exportable_policy(loss, num_candidates=0)
    rows.append(Row("one-step deterministic (plain tensors)", "one-step", on_tensors(plain_tensors), compiled=False,
                    tensors=True))  # fmt: skip
    if compile:
        compiled_actor = torch.compile(actor, dynamic=False)
        rows.append(Row("one-step deterministic (compiled)", "one-step", deterministic(compiled_actor), compiled=True))

    agent = PlainDTQLReference.from_loss(loss)
    for n in candidates:
        plain = (lambda td, n=n: plain_rerank(agent, td["observation"], n))  # fmt: skip
        rows.append(Row(f"plain reranked N={n}", "plain reranked", plain, candidates=n, compiled=False))
        policy = QRerankingActor.from_loss(loss, n)
        rows.append(Row(f"reranked N={n}", "reranked", policy, candidates=n, compiled=False))
        if compile:
            policy = QRerankingActor.from_loss(loss, n, compile=True)
            rows.append(Row(f"reranked N={n} (compiled)", "reranked", policy, candidates=n, compiled=True))

    for solver in ("euler", "heun"):
        for k in diffusion_steps:
            diffusion = copy.deepcopy(modules["diffusion_network"])
            diffusion.module.num_steps, diffusion.module.solver = k, solver
            name = f"diffusion {solver} {k}"
            rows.append(Row(name, "diffusion", diffusion, steps=k, solver=solver, compiled=False))
            if compile and k == min(diffusion_steps):  # compiled with the same fast Mish as the other variants
                fast = replace_mish_(copy.deepcopy(diffusion))
                compiled = torch.compile(fast, backend=make_inductor_backend(), dynamic=False)
                rows.append(Row(f"{name} (compiled)", "diffusion", compiled, steps=k, solver=solver, compiled=True))
    return rows


def measure(rows: list[Row], batch_size: int, *, rounds: int, rate: float, device: torch.device) -> list[dict]:
    td = TensorDict(observation=torch.randn(batch_size, OBS_DIM, device=device), batch_size=[batch_size])
    calls = {row.name: (lambda row=row: row.call(td.clone())) for row in rows}
    with torch.no_grad():
        for call in calls.values():  # compile (if any) before timing
            call()
        seconds = time_interleaved(calls, rounds=rounds, warmup=3, device=device)
    out = []
    for row in rows:
        # compiled code runs the matmuls of its eager twin; count those
        eager_settings = {**row.settings, "compiled": False}
        twin = next((r for r in rows if r.family == row.family and r.settings == eager_settings), row)
        with torch.no_grad():
            flops = count_flops(lambda: twin.call(td.clone()))
        out.append(
            {
                "variant": row.name,
                "family": row.family,
                **row.settings,
                "batch_size": batch_size,
                "ms": 1e3 * seconds[row.name],
                "gflop": flops / 1e9,
                "flop_limit_ms": 1e3 * flops / rate,
                "fraction_of_limit": flops / rate / seconds[row.name],
            }
        )
    return out


ONE_STEP_ACTORS = {
    "one-step deterministic": "x det",
    "one-step deterministic (plain tensors)": "x det tensors",
    "one-step deterministic (compiled)": "x det compiled",
    "reranked N=1024": "x rerank 1024",
    "reranked N=1024 (compiled)": "x rerank 1024 compiled",
}


def paper_claim(results: list[dict]) -> list[dict]:
    """How many times slower each iterative diffusion actor is than each one-step actor (the paper: ~10x).

    One row per diffusion actor and batch size; one column per one-step actor (its latency divided into the
    diffusion actor's). Compare eager with eager and compiled with compiled; the plain-tensor one-step actor shows
    what is left once the TensorDict machinery is gone.
    """
    rows = []
    for batch_size in sorted({r["batch_size"] for r in results}):
        at = {r["variant"]: r["ms"] for r in results if r["batch_size"] == batch_size}
        for name, ms in at.items():
            if not name.startswith("diffusion"):
                continue
            row = {"diffusion": name, "batch_size": batch_size, "ms": ms}
            row.update({column: ms / at[actor] for actor, column in ONE_STEP_ACTORS.items() if actor in at})
            rows.append(row)
    return rows


def plot(results: list[dict], path: Path, title: str = "") -> None:
    """Horizontal bars of latency (log scale) per variant, batch 1 and batch 64 side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["variant"] for r in results))
    batch_sizes = sorted({r["batch_size"] for r in results})
    colors = {"one-step": "tab:green", "reranked": "tab:blue", "plain reranked": "tab:gray", "diffusion": "tab:red"}
    size = (5.2 * len(batch_sizes), 0.28 * len(names) + 1.2)
    fig, axes = plt.subplots(1, len(batch_sizes), figsize=size, sharey=True)
    axes = [axes] if len(batch_sizes) == 1 else axes
    for ax, batch_size in zip(axes, batch_sizes):
        by_name = {r["variant"]: r for r in results if r["batch_size"] == batch_size}
        ys = range(len(names))
        ax.barh(list(ys), [by_name[n]["ms"] for n in names], color=[colors[by_name[n]["family"]] for n in names])
        ax.barh(list(ys), [by_name[n]["flop_limit_ms"] for n in names], color="none", edgecolor="black", linewidth=0.6,
                hatch="//", label="matmul FLOP limit")  # fmt: skip
        ax.set_xscale("log")
        ax.set_title(f"batch {batch_size}")
        ax.set_xlabel("ms per call (log)")
        ax.grid(axis="x", which="major", alpha=0.3)
    axes[0].invert_yaxis()  # the axes share y: invert once, first variant on top
    axes[0].set_yticks(list(range(len(names))), names, fontsize=8)
    axes[0].legend(loc="lower right", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _title(machine: dict) -> str:
    load = machine.get("load_average")
    load_text = f", load {load[0]:.1f}" if load else ""
    return f"DTQL action latency: {machine['device_name']}, {machine['threads']} thread(s){load_text}"


COLUMNS = [
    ("variant", "variant"),
    ("batch_size", "batch"),
    ("ms", "ms/call"),
    ("gflop", "GFLOP"),
    ("flop_limit_ms", "FLOP limit ms"),
    ("fraction_of_limit", "of limit"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--candidates", type=int, nargs="+", default=[16, 64, 1024])
    parser.add_argument("--diffusion-steps", type=int, nargs="+", default=[5, 10, 50])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--quick", action="store_true", help="2 rounds, N in {16, 1024}, 5 diffusion steps")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "acting.json")
    parser.add_argument("--plot", type=Path, default=REPO_ROOT / "docs" / "images" / "acting_latency.png")
    parser.add_argument("--plot-only", type=Path, default=None, help="redraw --plot from this results file and exit")
    args = parser.parse_args()
    if args.plot_only is not None:
        saved = json.loads(args.plot_only.read_text())
        plot(saved["latency"], args.plot, _title(saved["machine"]))
        print(f"wrote {args.plot}")
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.rounds, args.candidates, args.diffusion_steps = 2, [16, 1024], [5]
    warnings.filterwarnings("ignore", message=".*No target network updater.*")
    device = default_device()
    rate = matmul_rate(device)
    machine = Machine.describe(device, rate)
    print(f"# DTQL acting benchmark on {machine.device_name} ({machine.threads} threads), load {machine.load_average}")
    print(f"fp32 matmul rate: {rate['flops_per_s'] / 1e9:.0f} GFLOP/s\n")

    torch.manual_seed(0)
    modules = make_dtql_modules(OBS_DIM, ACT_DIM, device=device)
    loss = DTQLLoss(**modules, alpha=1.0)
    rows = build_rows(loss, modules, compile=not args.no_compile, diffusion_steps=args.diffusion_steps,
                      candidates=args.candidates)  # fmt: skip
    results = []
    for batch_size in args.batch_sizes:
        results += measure(rows, batch_size, rounds=args.rounds, rate=rate["flops_per_s"], device=device)
    claims = paper_claim(results)
    print(markdown_table(results, COLUMNS))
    print("\n## Iterative diffusion sampling against the one-step actors (latency ratios)\n")
    claim_columns = [("diffusion", "diffusion actor"), ("batch_size", "batch"), ("ms", "ms/call")]
    claim_columns += [(column, column) for column in ONE_STEP_ACTORS.values()]
    print(markdown_table(claims, claim_columns))
    write_results(args.out, machine, {"latency": results, "paper_claim": claims})
    plot(results, args.plot, _title(asdict(machine)))
    print(f"\nwrote {args.out} and {args.plot}")


if __name__ == "__main__":
    main()
