"""DTQL update-step benchmark: the reference step against the project's default and fast paths, in one process.

Variants (all train the same networks from the same weights; the script checks that first):

* ``plain``: a plain-PyTorch transcription of the reference step (``reference_step.py``): three optimizers, three
  backward passes, float64 noise levels, a ``.item()`` per logged value.
* ``loss methods``: :func:`torchrl_dtql.dtql_update_step` with ``fast=False``: the four public loss methods of
  :class:`~torchrl_dtql.DTQLLoss` and three backward passes, the reference's structure.
* ``default``: :func:`torchrl_dtql.dtql_update_step` as it is called by default, with
  :func:`torchrl_dtql.make_dtql_optimizers` defaults (fused Adam): it runs through a cached eager
  :class:`~torchrl_dtql.DTQLUpdater` (fused critic + diffusion backward, one twin-Q forward less, ``ExpMish``).
* ``default, ATen Mish`` and ``default, for-loop Adam``: the same with ``fast_activations=False``, or with
  ``make_dtql_optimizers(loss, fused=False)``, to separate the sources of speed.
* ``compiled``: :func:`torchrl_dtql.make_dtql_update_fn` with ``compile=True`` (``cudagraphs=True`` and capturable
  Adam as well on CUDA).

Reported per variant and batch size: ms per step, steps/s, the matmul GFLOP one step executes, the FLOP limit
(those FLOPs at this machine's measured fp32 matmul rate) and the fraction of it reached, the speed-up over
``plain``, and the peak memory of a step. Then how the cost of a step grows with the batch size and the width.

Run (about 10-20 minutes on 2 CPU cores, most of it compiling)::

    python benchmarks/bench_update.py                       # prints Markdown tables, writes JSON
    python benchmarks/bench_update.py --quick --no-compile  # a one-minute smoke run
"""
from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from tensordict import TensorDict

from _common import (
    default_device,
    count_flops,
    Machine,
    markdown_table,
    matmul_rate,
    peak_step_memory,
    REPO_ROOT,
    tensor_bytes,
    time_interleaved,
    write_results,
)
from reference_step import PlainDTQLReference
from torchrl.objectives import SoftUpdate

from torchrl_dtql import DTQLLoss, dtql_update_step, make_dtql_modules, make_dtql_optimizers, make_dtql_update_fn

OBS_DIM, ACT_DIM = 17, 6  # HalfCheetah / Walker2d
TAU = 0.005


def make_batches(count: int, batch_size: int, device: torch.device, seed: int = 0) -> list[TensorDict]:
    """A few fixed TED batches, cycled during timing so that data sampling is not measured."""
    g = torch.Generator().manual_seed(seed)
    batches = []
    for _ in range(count):
        terminated = torch.rand(batch_size, 1, generator=g) < 0.01
        batches.append(
            TensorDict(
                observation=torch.randn(batch_size, OBS_DIM, generator=g),
                action=torch.rand(batch_size, ACT_DIM, generator=g) * 2 - 1,
                next=TensorDict(
                    observation=torch.randn(batch_size, OBS_DIM, generator=g),
                    reward=torch.randn(batch_size, 1, generator=g),
                    done=terminated.clone(),
                    terminated=terminated,
                    batch_size=[batch_size],
                ),
                batch_size=[batch_size],
            ).to(device)
        )
    return batches


def make_loss(width: int, device: torch.device, seed: int = 0) -> DTQLLoss:
    torch.manual_seed(seed)
    loss = DTQLLoss(**make_dtql_modules(OBS_DIM, ACT_DIM, hidden_dim=width, device=device), alpha=1.0)
    loss.make_value_estimator(gamma=0.99)
    return loss


class Variant:
    """One way of running the update step, with its own copy of the networks and optimizer state.

    ``step(batch, pretrain=False)`` runs one update; ``state_tensors()`` lists the persistent tensors (weights,
    target copies, optimizer moments); ``loss`` holds the weights (and ``agent`` for the plain transcription).
    """

    def __init__(
        self,
        name: str,
        step: Callable[..., object],
        state_tensors: Callable[[], list],
        loss: DTQLLoss,
        agent: PlainDTQLReference | None = None,
    ) -> None:
        self.name = name
        self.step = step
        self.state_tensors = state_tensors
        self.loss = loss
        self.agent = agent


def build_variants(names: list[str], width: int, device: torch.device) -> dict[str, Variant]:
    """The requested variants, all starting from the weights of ``make_loss(width)``."""
    variants = {}
    for name in names:
        loss = make_loss(width, device)
        if name == "plain":
            agent = PlainDTQLReference.from_loss(loss, tau=TAU, device=device)

            def plain_step(batch, agent=agent, pretrain=False):
                return agent.update(
                    batch["observation"],
                    batch["action"],
                    batch["next", "reward"],
                    batch["next", "observation"],
                    batch["next", "terminated"],
                    pretrain=pretrain,
                )

            modules = [agent.critic, agent.critic_target, agent.denoiser, agent.actor]
            optims = [agent.critic_optimizer, agent.bc_optimizer, agent.actor_optimizer]
            variants[name] = Variant(name, plain_step, _state_of(modules, optims), loss, agent)
        elif name in ("loss methods", "default"):
            optimizers = make_dtql_optimizers(loss)
            updater = SoftUpdate(loss, tau=TAU)
            fast = name == "default"

            def default_step(batch, loss=loss, optimizers=optimizers, updater=updater, fast=fast, pretrain=False):
                return dtql_update_step(loss, optimizers, batch, pretrain=pretrain, target_updater=updater, fast=fast)

            variants[name] = Variant(name, default_step, _state_of([loss], list(optimizers.present().values())), loss)
        elif name in ("default, ATen Mish", "default, for-loop Adam", "compiled"):
            compiled = name == "compiled"
            optimizers = make_dtql_optimizers(
                loss, fused=name != "default, for-loop Adam", capturable=compiled and device.type == "cuda"
            )
            update = make_dtql_update_fn(
                loss,
                optimizers,
                target_updater=SoftUpdate(loss, tau=TAU),
                compile=compiled,
                cudagraphs=compiled and device.type == "cuda",
                fast_activations=name != "default, ATen Mish",
            )

            def fast_step(batch, update=update, pretrain=False):
                return update(batch, pretrain=pretrain)

            variants[name] = Variant(name, fast_step, _state_of([loss], list(optimizers.present().values())), loss)
        else:
            raise ValueError(f"Unknown variant {name!r}.")
    return variants


def _state_of(modules, optimizers) -> Callable[[], list]:
    def tensors() -> list:
        out = [t for m in modules for t in list(m.parameters()) + list(m.buffers())]
        for optimizer in optimizers:
            for state in optimizer.state.values():
                out += [v for v in state.values() if isinstance(v, torch.Tensor)]
        return out

    return tensors


# ---------------------------------------------------------------------------------------------------- parity
def trained_parameters(variant: Variant) -> dict[str, torch.Tensor]:
    """The actor, diffusion, Q and V weights in one naming, whatever the variant."""
    if variant.agent is not None:
        agent = variant.agent
        out = {f"actor.{k}": v for k, v in agent.actor.net.state_dict().items()}
        out.update({f"trunk.{k}": v for k, v in agent.denoiser.trunk.state_dict().items()})
        q1, q2 = agent.critic.q1.state_dict(), agent.critic.q2.state_dict()
        out.update({f"q.{k}": torch.stack([q1[k], q2[k]]) for k in q1})
        out.update({f"v.{k}": v for k, v in agent.critic.v.state_dict().items()})
        return out
    loss = variant.loss
    parts = {
        "actor": loss.actor_network_params["module", "0", "module", "net"],
        "trunk": loss.diffusion_network_params["module", "denoiser", "trunk"],
        "q": loss.qvalue_network_params["module", "net"],
        "v": loss.value_network_params["module", "net"],
    }
    return {f"{part}.{k}": v for part, params in parts.items() for k, v in params.flatten_keys(".").items()}


def check_parity(
    variants: dict[str, Variant], batches: list[TensorDict], *, pretrain_steps: int = 2, steps: int = 3
) -> dict:
    """Runs the same seeded steps through every variant; returns the largest weight difference to ``plain``."""
    for i, batch in enumerate(batches[: pretrain_steps + steps]):
        for variant in variants.values():
            torch.manual_seed(1000 + i)
            variant.step(batch, pretrain=i < pretrain_steps)
    reference = trained_parameters(variants["plain"]) if "plain" in variants else None
    out = {}
    for name, variant in variants.items():
        if reference is None or name == "plain":
            continue
        params = trained_parameters(variant)
        out[name] = max(float((params[k] - reference[k]).detach().abs().max()) for k in reference)
    return out


# ---------------------------------------------------------------------------------------------------- main parts
def measure(
    variants: dict[str, Variant],
    batches: list[TensorDict],
    *,
    rounds: int,
    calls: int,
    rate: float,
    device: torch.device,
) -> list[dict]:
    """Times the variants side by side on ``batches``; returns one row per variant."""
    cycle = {name: _cycler(variant.step, batches) for name, variant in variants.items()}
    seconds = time_interleaved(cycle, calls=calls, rounds=rounds, warmup=2, device=device)
    rows = []
    for name, variant in variants.items():
        eager = variants["default"] if name == "compiled" and "default" in variants else variant
        flops = count_flops(lambda: eager.step(batches[0]))  # compiled code runs the matmuls of the eager path
        peak = peak_step_memory(lambda: variant.step(batches[0]), device)
        rows.append(
            {
                "variant": name,
                "batch_size": batches[0].batch_size[0],
                "ms_per_step": 1e3 * seconds[name],
                "steps_per_s": 1.0 / seconds[name],
                "gflop_per_step": flops / 1e9,
                "flop_limit_ms": 1e3 * flops / rate,
                "fraction_of_limit": flops / rate / seconds[name],
                "peak_step_mb": peak / 2**20,
                "state_mb": tensor_bytes(variant.state_tensors()) / 2**20,
            }
        )
    if "plain" in seconds:
        for row in rows:
            row["speedup_vs_plain"] = seconds["plain"] / seconds[row["variant"]]
            row["limit_speedup_vs_plain"] = seconds["plain"] / (row["flop_limit_ms"] / 1e3)
    return rows


def _cycler(step: Callable, batches: list[TensorDict]) -> Callable[[], object]:
    state = {"i": 0}

    def call():
        state["i"] = (state["i"] + 1) % len(batches)
        return step(batches[state["i"]])

    return call


MAIN_COLUMNS = [
    ("variant", "variant"),
    ("batch_size", "batch"),
    ("ms_per_step", "ms/step"),
    ("steps_per_s", "steps/s"),
    ("speedup_vs_plain", "x plain"),
    ("gflop_per_step", "GFLOP/step"),
    ("flop_limit_ms", "FLOP limit ms"),
    ("fraction_of_limit", "of limit"),
    ("peak_step_mb", "peak step MB"),
]
SWEEP_COLUMNS = [
    ("variant", "variant"),
    ("batch_size", "batch"),
    ("width", "width"),
    ("ms_per_step", "ms/step"),
    ("steps_per_s", "steps/s"),
    ("speedup_vs_plain", "x plain"),
    ("flop_limit_ms", "FLOP limit ms"),
    ("fraction_of_limit", "of limit"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[256, 2048])
    parser.add_argument("--sweep-batch-sizes", type=int, nargs="*", default=[64, 128, 256, 512, 1024, 2048, 4096])
    parser.add_argument("--sweep-widths", type=int, nargs="*", default=[64, 128, 256, 512])
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds per variant (the best one is kept)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--no-compile", action="store_true", help="skip the compiled variant")
    parser.add_argument("--quick", action="store_true", help="a smoke run: 2 rounds, small sweeps")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "benchmarks" / "results" / "update.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.rounds = 2
        args.sweep_batch_sizes = [64, 256]
        args.sweep_widths = [64]
    warnings.filterwarnings("ignore", message=".*No target network updater.*")
    device = default_device()
    rate = matmul_rate(device)
    machine = Machine.describe(device, rate)
    print(f"# DTQL update benchmark on {machine.device_name} ({machine.threads} threads), load {machine.load_average}")
    sizes = list(rate["per_size"])
    print(f"fp32 matmul rate: {rate['flops_per_s'] / 1e9:.0f} GFLOP/s (the best of {sizes}-square GEMMs)\n")

    names = ["plain", "loss methods", "default", "default, ATen Mish", "default, for-loop Adam"]
    names += [] if args.no_compile else ["compiled"]
    results: dict = {"main": [], "parity_max_abs_weight_diff": {}, "sweep_batch": [], "sweep_width": []}
    for batch_size in args.batch_sizes:
        batches = make_batches(4, batch_size, device)
        variants = build_variants(names, 256, device)
        parity = check_parity(variants, make_batches(5, batch_size, device, seed=1))
        results["parity_max_abs_weight_diff"][batch_size] = parity
        calls = max(1, 2560 // batch_size)
        results["main"] += measure(variants, batches, rounds=args.rounds, calls=calls, rate=rate["flops_per_s"],
                                   device=device)  # fmt: skip
    print("## Update steps (width 256, obs 17, act 6)\n")
    print(markdown_table(results["main"], MAIN_COLUMNS))
    print(f"\nparity, max |weight - plain| after 2 pretrain + 3 main steps: {results['parity_max_abs_weight_diff']}\n")

    sweep_names = ["plain", "default"]
    for batch_size in args.sweep_batch_sizes:
        variants = build_variants(sweep_names, 256, device)
        rows = measure(variants, make_batches(2, batch_size, device), rounds=max(2, args.rounds // 2),
                       calls=max(1, 1024 // batch_size), rate=rate["flops_per_s"], device=device)  # fmt: skip
        results["sweep_batch"] += [{**row, "width": 256} for row in rows]
    for width in args.sweep_widths:
        variants = build_variants(sweep_names, width, device)
        rows = measure(variants, make_batches(2, 256, device), rounds=max(2, args.rounds // 2), calls=4,
                       rate=rate["flops_per_s"], device=device)  # fmt: skip
        results["sweep_width"] += [{**row, "width": width} for row in rows]
    print("## Cost against batch size (width 256)\n")
    print(markdown_table(results["sweep_batch"], SWEEP_COLUMNS))
    print("\n## Cost against network width (batch 256)\n")
    print(markdown_table(results["sweep_width"], SWEEP_COLUMNS))
    write_results(args.out, machine, results)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
